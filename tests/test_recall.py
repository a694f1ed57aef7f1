"""Recall theory of bucketed top-k (costmodel.recall): closed forms vs independent routes.

Independent routes used here (never the code under test):
* brute-force enumeration of all C(n, k) top-k position sets (exact model) and of all b^k
  with-replacement placements (binomial model), in exact rational arithmetic;
* the spec's / paper's rank-wise formulas, written out with scipy.stats;
* closed forms evaluated in high precision with mpmath;
* degenerate cases with known answers and published/spec numbers;
* Monte Carlo of each model's own sampling scheme (tests/test_recall_sim.py).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from costmodel.recall import (
    bins_for_recall_xla,
    bucket_size_counts,
    bucket_sizes,
    buckets_for_recall,
    expected_recall,
    expected_recall_kb1,
    expected_recall_multinomial_kb1,
    expected_recall_xla,
    k_per_bucket_for_recall,
    recall_distribution,
    recall_lower_bound_kb1,
    xla_reduction_output_size,
)

# --------------------------------------------------------------------------- oracles


def bucket_of(n: int, b: int) -> np.ndarray:
    """Interleaved bucket id of every position (bucket j = {j, j+b, ...})."""
    return np.arange(n) % b


def enumerate_exact(n: int, k: int, b: int, kb: int) -> dict[int, Fraction]:
    """P[K = r] by enumerating all C(n, k) top-k position sets (exact rationals)."""
    bid = bucket_of(n, b)
    counts: dict[int, int] = {}
    total = 0
    for subset in itertools.combinations(range(n), k):
        x = np.bincount(bid[list(subset)], minlength=b)
        r = int(np.minimum(x, kb).sum())
        counts[r] = counts.get(r, 0) + 1
        total += 1
    return {r: Fraction(c, total) for r, c in counts.items()}


def enumerate_binomial(k: int, b: int, kb: int) -> dict[int, Fraction]:
    """P[K = r] under with-replacement placement: all b^k assignments of the k elements."""
    counts: dict[int, int] = {}
    for assign in itertools.product(range(b), repeat=k):
        x = np.bincount(np.array(assign, dtype=np.int64), minlength=b)
        r = int(np.minimum(x, kb).sum())
        counts[r] = counts.get(r, 0) + 1
    total = b**k
    return {r: Fraction(c, total) for r, c in counts.items()}


def moments(dist: dict[int, Fraction], k: int) -> tuple[Fraction, Fraction]:
    mean = sum(Fraction(r, k) * p for r, p in dist.items())
    var = sum(Fraction(r, k) ** 2 * p for r, p in dist.items()) - mean**2
    return mean, var


def paper_binomial(k: int, b: int, kb: int) -> float:
    """arXiv 2412.04358 Sec. 3: (k_b + sum_{i=k_b}^{k-1} BinomCDF(k_b - 1; i, 1/b)) / k."""
    i = np.arange(kb, k)
    return (min(kb, k) + float(stats.binom.cdf(kb - 1, i, 1.0 / b).sum())) / k


def spec_rankwise_exact(n: int, k: int, b: int, kb: int) -> float:
    """Spec rank-wise form for equal buckets: (1/k) sum_i P[Hyp(n-1, s-1, i) <= k_b - 1]."""
    assert n % b == 0
    if n == 1:
        return 1.0  # scipy's hypergeom is undefined for an empty population
    s = n // b
    i = np.arange(k)
    return float(stats.hypergeom.cdf(kb - 1, n - 1, s - 1, i).sum()) / k


@st.composite
def configs(draw, max_n: int = 40, equal: bool = False, nontrivial: bool = False):
    """(n, k, b, k_b) with b k_b >= k.

    ``nontrivial``: also k_b < min(k, largest bucket), so recall < 1 and a bucket can
    overflow (otherwise every model gives 1 and comparisons are vacuous; those cases are
    covered by ``test_recall_one_cases``).
    """
    lo_n = 3 if nontrivial else 1
    n = draw(st.integers(lo_n, max(lo_n, max_n)))
    if equal:
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        if nontrivial:
            divisors = [d for d in divisors if 2 <= d < n] or [1]
        b = draw(st.sampled_from(divisors))
    else:
        b = draw(st.integers(2, n - 1) if nontrivial else st.integers(1, n))
    smax = -(-n // b)
    if nontrivial and b >= 2:
        kb = draw(st.integers(1, smax - 1))
        k = draw(st.integers(kb + 1, min(n, b * kb)))
        return n, k, b, kb
    # Small k_b first: with k_b uniform on 1..n most draws have k_b >= the largest bucket.
    kb = draw(st.one_of(st.integers(1, min(n, 3)), st.integers(1, n)))
    k = draw(st.integers(1, min(n, b * kb)))
    return n, k, b, kb


# --------------------------------------------------------------------------- published numbers


@pytest.mark.parametrize(
    ("cfg", "binomial", "exact"),
    [
        # Closed-form values computed outside this code (and checked there by 20k+ simulation
        # repetitions); the first column is the paper's with-replacement model.
        ((64, 16, 8, 2), 0.7470, 0.7817),
        ((32, 8, 8, 1), 0.6564, 0.7045),
        ((50, 10, 50, 1), 0.9146, 1.0),
    ],
)
def test_spec_numbers(cfg, binomial, exact):
    n, k, b, kb = cfg
    kw = {"num_buckets": b, "k_per_bucket": kb}
    assert expected_recall(n, k, **kw, model="binomial") == pytest.approx(binomial, abs=5e-5)
    assert expected_recall(n, k, **kw, model="exact") == pytest.approx(exact, abs=5e-5)


def test_poisson_c1_published():
    # Spec: Poisson limit at k_b = 1, c = b k_b / k = 1 is 1 - 1/e = 0.632.
    got = expected_recall(2**20, 1024, num_buckets=1024, model="poisson")
    assert got == pytest.approx(1 - math.exp(-1), abs=1e-12)


# --------------------------------------------------------------------------- brute force


@given(configs(max_n=12, nontrivial=True))
def test_exact_vs_enumeration(cfg):
    n, k, b, kb = cfg
    dist = enumerate_exact(n, k, b, kb)
    mean, var = moments(dist, k)
    got = expected_recall(n, k, num_buckets=b, k_per_bucket=kb)
    assert got == pytest.approx(float(mean), abs=1e-12)
    d = recall_distribution(n, k, num_buckets=b, k_per_bucket=kb, full=True)
    assert d.mean == pytest.approx(float(mean), abs=1e-12)
    assert d.var == pytest.approx(float(var), abs=1e-12)
    want = np.zeros(k + 1)
    for r, p in dist.items():
        want[r] = float(p)
    np.testing.assert_allclose(d.pmf, want, atol=1e-12)


@pytest.mark.parametrize(("n", "k", "b", "kb"), [(12, 6, 5, 2), (12, 5, 7, 1), (11, 4, 3, 2)])
def test_exact_vs_enumeration_n12(n, k, b, kb):
    # The largest sizes (C(12, 6) = 924 sets), uneven buckets included.
    dist = enumerate_exact(n, k, b, kb)
    mean, var = moments(dist, k)
    d = recall_distribution(n, k, num_buckets=b, k_per_bucket=kb, full=True)
    assert d.mean == pytest.approx(float(mean), abs=1e-12)
    assert d.var == pytest.approx(float(var), abs=1e-12)


@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 3))
def test_binomial_vs_enumeration(b, k, kb):
    if b * kb < k:
        return
    dist = enumerate_binomial(k, b, kb)
    mean, var = moments(dist, k)
    n = max(b, k)  # the binomial model ignores n
    assert expected_recall(n, k, num_buckets=b, k_per_bucket=kb, model="binomial") == (
        pytest.approx(float(mean), abs=1e-12)
    )
    d = recall_distribution(n, k, num_buckets=b, k_per_bucket=kb, model="binomial", full=True)
    assert d.var == pytest.approx(float(var), abs=1e-12)
    want = np.zeros(k + 1)
    for r, p in dist.items():
        want[r] = float(p)
    np.testing.assert_allclose(d.pmf, want, atol=1e-12)


# --------------------------------------------------------------------------- other routes


@given(configs(max_n=200, nontrivial=True))
def test_binomial_matches_paper_formula(cfg):
    n, k, b, kb = cfg
    got = expected_recall(n, k, num_buckets=b, k_per_bucket=kb, model="binomial")
    assert got == pytest.approx(paper_binomial(k, b, kb), abs=1e-12)


@given(configs(max_n=300, equal=True, nontrivial=True))
def test_exact_matches_spec_rankwise(cfg):
    n, k, b, kb = cfg
    got = expected_recall(n, k, num_buckets=b, k_per_bucket=kb)
    assert got == pytest.approx(spec_rankwise_exact(n, k, b, kb), abs=1e-11)


@given(configs(max_n=300))
def test_kb1_closed_forms(cfg):
    n, k, b, _ = cfg
    if b < k:
        return
    # Direct: (1/k) sum_j (1 - C(n - s_j, k) / C(n, k)) with exact integers.
    sizes = [n // b + (1 if j < n % b else 0) for j in range(b)]
    direct = sum(1 - Fraction(math.comb(n - s, k), math.comb(n, k)) for s in sizes) / k
    assert expected_recall_kb1(n, k, num_buckets=b) == pytest.approx(float(direct), abs=1e-12)
    assert expected_recall(n, k, num_buckets=b) == pytest.approx(float(direct), abs=1e-12)
    multi = Fraction(b, k) * (1 - Fraction(b - 1, b) ** k)
    got = expected_recall_multinomial_kb1(k, num_buckets=b)
    assert got == pytest.approx(float(multi), abs=1e-12)
    assert expected_recall(n, k, num_buckets=b, model="binomial") == pytest.approx(
        float(multi), abs=1e-12
    )


def test_poisson_direct():
    # E[min(Pois(lam), c)] / lam with lam = 1/2, c = 2, by hand: sum_{x<c} P[X > x] / lam.
    lam = 0.5
    p0, p1 = math.exp(-lam), lam * math.exp(-lam)
    want = ((1 - p0) + (1 - p0 - p1)) / lam
    got = expected_recall(1000, 50, num_buckets=100, k_per_bucket=2, model="poisson")
    assert got == pytest.approx(want, abs=1e-14)


# --------------------------------------------------------------------------- large n


def test_large_n_kb1_vs_mpmath():
    n, k = 2**24, 2**14
    mpmath.mp.dps = 40
    for b in (2**14, 3 * 2**13 + 7, 2**16 + 1):
        total = mpmath.mpf(0)
        for s, cnt in bucket_size_counts(n, b):
            ratio = mpmath.binomial(n - s, k) / mpmath.binomial(n, k)
            total += cnt * (1 - ratio)
        want = float(total / k)
        assert expected_recall(n, k, num_buckets=b) == pytest.approx(want, abs=1e-12)
        assert expected_recall_kb1(n, k, num_buckets=b) == pytest.approx(want, abs=1e-12)


def test_large_n_kb2_vs_mpmath():
    # E[min(X, 2)] = P[X >= 1] + P[X >= 2] = 2 - 2 P0 - P1 with X ~ Hyp(n, k, s).
    n, k, b = 2**24, 2**14, 2**13 + 3
    mpmath.mp.dps = 40
    total = mpmath.mpf(0)
    cnk = mpmath.binomial(n, k)
    for s, cnt in bucket_size_counts(n, b):
        p0 = mpmath.binomial(n - s, k) / cnk
        p1 = s * mpmath.binomial(n - s, k - 1) / cnk
        total += cnt * (2 - 2 * p0 - p1)
    want = float(total / k)
    got = expected_recall(n, k, num_buckets=b, k_per_bucket=2)
    assert got == pytest.approx(want, abs=1e-12)


def test_large_k_binomial_vs_mpmath():
    # (b/k) E[min(Bin(k, 1/b), 2)] = (b/k) (2 - 2 P0 - P1), in 40-digit arithmetic.
    k = 2**14
    mpmath.mp.dps = 40
    for b in (2**13, 2**14, 3 * 2**12 + 1):
        p = mpmath.mpf(1) / b
        p0 = (1 - p) ** k
        p1 = k * p * (1 - p) ** (k - 1)
        want = float(mpmath.mpf(b) / k * (2 - 2 * p0 - p1))
        got = expected_recall(2**24, k, num_buckets=b, k_per_bucket=2, model="binomial")
        assert got == pytest.approx(want, abs=1e-12)


def test_large_n_all_models_finite_and_ordered():
    n, k = 2**24, 2**14
    bs = np.array([2**14, 2**15, 2**16, 2**20])
    kbs = np.array([[1], [2], [4]])
    ex = expected_recall(n, k, num_buckets=bs, k_per_bucket=kbs)
    bi = expected_recall(n, k, num_buckets=bs, k_per_bucket=kbs, model="binomial")
    po = expected_recall(n, k, num_buckets=bs, k_per_bucket=kbs, model="poisson")
    for arr in (ex, bi, po):
        assert arr.shape == (3, 4)
        assert np.all(np.isfinite(arr)) and np.all((arr > 0) & (arr <= 1))
    assert np.all(ex >= bi - 1e-13) and np.all(bi >= po - 1e-13)


# --------------------------------------------------------------------------- degenerate = 1


@given(configs(max_n=200))
def test_recall_one_cases(cfg):
    n, k, b, kb = cfg
    smax = -(-n // b)
    got = expected_recall(n, k, num_buckets=b, k_per_bucket=kb)
    if kb >= min(k, smax):
        assert got == 1.0
    else:
        assert got < 1.0
    assert expected_recall(n, k, num_buckets=n, k_per_bucket=kb) == 1.0
    assert expected_recall(n, k, num_buckets=1, k_per_bucket=k) == 1.0
    # With replacement any bucket may receive all k, so recall 1 needs k_b >= k there.
    assert expected_recall(n, k, num_buckets=b, k_per_bucket=max(kb, k), model="binomial") == (
        pytest.approx(1.0, abs=1e-15)
    )


# --------------------------------------------------------------------------- orderings


@given(st.integers(1, 120), st.data())
def test_monotone_in_b_every_b(n, data):
    # Stronger than b | b': the concavity argument of docs/recall.md gives all b.
    kb = data.draw(st.integers(1, 4))
    k = data.draw(st.integers(1, n))
    lo = -(-k // kb)
    if lo > n:
        return
    bs = np.arange(lo, n + 1)
    for model in ("exact", "binomial", "poisson"):
        r = expected_recall(n, k, num_buckets=bs, k_per_bucket=kb, model=model)
        assert np.all(np.diff(r) >= -1e-13), (model, r)


@given(configs(max_n=150, nontrivial=True))
def test_monotone_in_kb(cfg):
    n, k, b, kb = cfg
    kbs = np.arange(max(kb, -(-k // b)), kb + 6)
    for model in ("exact", "binomial", "poisson"):
        r = expected_recall(n, k, num_buckets=b, k_per_bucket=kbs, model=model)
        assert np.all(np.diff(r) >= -1e-13)


@given(configs(max_n=300, equal=True, nontrivial=True))
def test_exact_ge_binomial_ge_poisson_equal_buckets(cfg):
    n, k, b, kb = cfg
    kw = {"num_buckets": b, "k_per_bucket": kb}
    ex = expected_recall(n, k, **kw)
    bi = expected_recall(n, k, **kw, model="binomial")
    po = expected_recall(n, k, **kw, model="poisson")
    assert ex >= bi - 1e-13
    assert bi >= po - 1e-13


@given(configs(max_n=300))
def test_kb1_bound(cfg):
    n, k, b, _ = cfg
    if b < k:
        return
    bound = recall_lower_bound_kb1(k, num_buckets=b)
    assert bound == pytest.approx(float(1 - Fraction(k - 1, 2 * b)), abs=1e-15)
    assert expected_recall(n, k, num_buckets=b) >= bound - 1e-13
    assert expected_recall(n, k, num_buckets=b, model="binomial") >= bound - 1e-13


def test_poisson_limit_approached():
    # lambda = k/b fixed; n = 4^m, b = 2^m, so the bucket size s = 2^m -> infinity and the
    # top-k fraction k/n = lambda / 2^m -> 0: Hyp(n, k, s) -> Pois(lambda), exact -> poisson.
    for kb, lam in ((1, 1), (2, 2), (4, 2)):
        errs = []
        for m in (5, 7, 9, 11):
            n, b = 4**m, 2**m
            k = lam * b
            po = expected_recall(n, k, num_buckets=b, k_per_bucket=kb, model="poisson")
            ex = expected_recall(n, k, num_buckets=b, k_per_bucket=kb)
            errs.append(abs(ex - po))
        assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:], strict=False)), errs
        assert errs[-1] < 0.05 * errs[0] and errs[-1] < 2e-3, errs


def test_binomial_is_n_to_infinity_limit():
    # Equal buckets of size s = n/b with b, k fixed: exact -> binomial as n grows.
    k, b, kb = 20, 10, 2
    want = expected_recall(10**6, k, num_buckets=b, k_per_bucket=kb, model="binomial")
    errs = [
        abs(expected_recall(n, k, num_buckets=b, k_per_bucket=kb) - want)
        for n in (40, 400, 4000, 40000)
    ]
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:], strict=False))
    assert errs[-1] < 1e-3


# --------------------------------------------------------------------------- XLA rule


def test_xla_rule_hand_values():
    # M = ceil((1 - K) / ln r): K = 1024, r = 0.95 -> 1023 / 0.0512933 = 19944.3 -> 19945.
    assert bins_for_recall_xla(1024, 0.95) == 19945
    assert bins_for_recall_xla(96, 0.9) == math.ceil(95 / -math.log(0.9)) == 902
    assert bins_for_recall_xla(1, 0.5) == 1
    assert expected_recall_xla(2, num_bins=4) == 0.75
    assert expected_recall_xla(3, num_bins=2) == 0.25
    # XLA's arithmetic by hand: n = 65536, K = 1024, r = 0.95: m = trunc(19944.3) = 19944,
    # log2_floor(65536 // 19944 = 3) = 1, output ceil(512 / 2) * 128 = 32768.
    assert xla_reduction_output_size(65536, 1024, 0.95) == 32768
    # r = 0.99: m = trunc(1023 / 0.01005) > n -> m = n -> log2_floor(1) = 0 -> n.
    assert xla_reduction_output_size(65536, 1024, 0.99) == 65536
    # n <= 128 -> n; k = 1 -> 128.
    assert xla_reduction_output_size(100, 10, 0.9) == 100
    assert xla_reduction_output_size(4096, 1, 0.9) == 128


@given(st.integers(1, 2000), st.floats(0.5, 0.999))
def test_xla_rule_is_smallest_for_exponential_form(k, target):
    m = bins_for_recall_xla(k, target)
    assert math.exp((1 - k) / m) >= target * (1 - 1e-12)
    if m > 1:
        assert math.exp((1 - k) / (m - 1)) < target * (1 + 1e-12)


@given(configs(max_n=300))
def test_xla_formula_is_lower_bound(cfg):
    n, k, b, _ = cfg
    if b < k:
        return
    xla = expected_recall_xla(k, num_bins=b)
    assert xla <= expected_recall(n, k, num_buckets=b, model="binomial") + 1e-13
    assert xla <= expected_recall(n, k, num_buckets=b) + 1e-13


# --------------------------------------------------------------------------- inversion


@given(st.integers(1, 80), st.data())
def test_buckets_for_recall_vs_linear_scan(n, data):
    k = data.draw(st.integers(1, n))
    kb = data.draw(st.integers(1, 3))
    target = data.draw(st.floats(0.05, 1.0))
    model = data.draw(st.sampled_from(["exact", "binomial", "poisson"]))
    lo = -(-k // kb)
    if lo > n:
        return
    vals = [
        (b, expected_recall(n, k, num_buckets=b, k_per_bucket=kb, model=model))
        for b in range(lo, n + 1)
    ]
    meeting = [b for b, v in vals if v >= target]
    if not meeting:
        with pytest.raises(ValueError, match="not reachable"):
            buckets_for_recall(n, k, target, k_per_bucket=kb, model=model)
        return
    assert buckets_for_recall(n, k, target, k_per_bucket=kb, model=model) == meeting[0]


@given(configs(max_n=80), st.floats(0.05, 1.0), st.sampled_from(["exact", "binomial"]))
def test_k_per_bucket_for_recall_vs_linear_scan(cfg, target, model):
    n, k, b, _ = cfg
    lo = -(-k // b)
    vals = [
        (kb, expected_recall(n, k, num_buckets=b, k_per_bucket=kb, model=model))
        for kb in range(lo, k + 1)
    ]
    want = next(kb for kb, v in vals if v >= target)
    assert k_per_bucket_for_recall(n, k, target, num_buckets=b, model=model) == want


def test_buckets_for_recall_large():
    n, k = 65536, 1024
    b = buckets_for_recall(n, k, 0.95)
    assert expected_recall(n, k, num_buckets=b) >= 0.95 > expected_recall(n, k, num_buckets=b - 1)
    bb = buckets_for_recall(n, k, 0.95, model="binomial")
    assert bb > b  # the binomial model asks for more buckets (it is low)


# --------------------------------------------------------------------------- distribution


@pytest.mark.parametrize(
    ("n", "k", "b", "kb"),
    [(64, 16, 8, 2), (61, 16, 7, 3), (200, 24, 24, 1), (150, 30, 9, 5), (97, 20, 97, 1)],
)
@pytest.mark.parametrize("model", ["exact", "binomial"])
def test_variance_formula_vs_dp(n, k, b, kb, model):
    d = recall_distribution(n, k, num_buckets=b, k_per_bucket=kb, model=model, full=True)
    r = np.arange(k + 1) / k
    assert d.pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert d.mean == pytest.approx(float(r @ d.pmf), abs=1e-12)
    assert d.var == pytest.approx(float((r - d.mean) ** 2 @ d.pmf), abs=1e-12)


def test_variance_large_is_finite():
    d = recall_distribution(2**24, 2**14, num_buckets=2**14, k_per_bucket=2)
    assert d.pmf is None
    assert 0 < d.var < 1e-3 and d.mean == expected_recall(
        2**24, 2**14, num_buckets=2**14, k_per_bucket=2
    )


def test_variance_large_kb1_vs_mpmath():
    # k_b = 1: K = number of non-empty buckets. With P0_j = C(n - s_j, k) / C(n, k) and
    # P00_ij = C(n - s_i - s_j, k) / C(n, k): E K = sum_j (1 - P0_j),
    # E K(K-1) = sum_{i != j} (1 - P0_i - P0_j + P00_ij); 40-digit arithmetic.
    n, k = 2**24, 2**14
    mpmath.mp.dps = 40
    cnk = mpmath.binomial(n, k)
    for b in (2**14, 3 * 2**13 + 7):
        cls = bucket_size_counts(n, b)
        p0 = {s: mpmath.binomial(n - s, k) / cnk for s, _ in cls}
        mean = sum(c * (1 - p0[s]) for s, c in cls)
        fact2 = mpmath.mpf(0)
        for si, ci in cls:
            for sj, cj in cls:
                pairs = ci * (ci - 1) if si == sj else ci * cj
                p00 = mpmath.binomial(n - si - sj, k) / cnk
                fact2 += pairs * (1 - p0[si] - p0[sj] + p00)
        var = float((fact2 + mean - mean**2) / k**2)
        d = recall_distribution(n, k, num_buckets=b, full=False)
        assert d.mean == pytest.approx(float(mean / k), abs=1e-12)
        assert d.var == pytest.approx(var, rel=1e-9)


# --------------------------------------------------------------------------- API


def test_vectorised_shapes_and_scalars():
    r = expected_recall(np.array([64, 128]), 16, num_buckets=np.array([[8], [16]]), k_per_bucket=2)
    assert r.shape == (2, 2)
    assert r[0, 0] == expected_recall(64, 16, num_buckets=8, k_per_bucket=2)
    assert isinstance(expected_recall(64, 16, num_buckets=16), float)
    with pytest.raises(ValueError, match="broadcast"):
        expected_recall(np.array([64, 128, 256]), 16, num_buckets=np.array([8, 16]))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n": 10, "k": 11, "num_buckets": 11}, ValueError, "k: expected"),
        ({"n": 10, "k": 5, "num_buckets": 11}, ValueError, "num_buckets"),
        ({"n": 10, "k": 5, "num_buckets": 2}, ValueError, "num_buckets \\* k_per_bucket"),
        ({"n": 10, "k": 5, "num_buckets": 5, "k_per_bucket": 0}, ValueError, "k_per_bucket"),
        ({"n": 10.0, "k": 5, "num_buckets": 5}, TypeError, "n: expected"),
        ({"n": 10, "k": True, "num_buckets": 5}, TypeError, "k: expected"),
        ({"n": 10, "k": 5, "num_buckets": 5, "model": "gauss"}, ValueError, "model"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    n, k = kwargs.pop("n"), kwargs.pop("k")
    with pytest.raises(exc, match=match):
        expected_recall(n, k, **kwargs)


def test_bad_targets():
    with pytest.raises(ValueError, match="target"):
        buckets_for_recall(100, 10, 1.5)
    with pytest.raises(ValueError, match="target"):
        bins_for_recall_xla(10, 1.0)
    with pytest.raises(ValueError, match="model"):
        recall_distribution(10, 2, num_buckets=2, model="poisson")


def test_bucket_sizes_deprecated_alias():
    # the old name of bucket_size_counts still works for one release, with a warning
    with pytest.warns(DeprecationWarning, match="bucket_size_counts"):
        assert bucket_sizes(10, 4) == bucket_size_counts(10, 4) == [(3, 2), (2, 2)]
