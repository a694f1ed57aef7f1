"""Recall theory of bucketed top-k (costmodel.recall): closed forms vs independent routes.

Independent routes used here (never the code under test):
* brute-force enumeration of all C(n, k) top-k position sets (exact model) and of all b^k
  with-replacement placements (binomial model), in exact rational arithmetic;
* the rank-wise formulas (the paper's and the exact model's), written out with scipy.stats;
* closed forms evaluated in high precision with mpmath;
* degenerate cases with known answers and published numbers;
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


def rankwise_exact(n: int, k: int, b: int, kb: int) -> float:
    """Rank-wise form for equal buckets: (1/k) sum_i P[Hyp(n-1, s-1, i) <= k_b - 1]."""
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
def test_reference_numbers(cfg, binomial, exact):
    n, k, b, kb = cfg
    kw = {"num_buckets": b, "k_per_bucket": kb}
    assert expected_recall(n, k, **kw, model="binomial") == pytest.approx(binomial, abs=5e-5)
    assert expected_recall(n, k, **kw, model="exact") == pytest.approx(exact, abs=5e-5)


def test_poisson_c1_published():
    # Poisson limit at k_b = 1, c = b k_b / k = 1 is 1 - 1/e = 0.632 (by hand).
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
def test_exact_matches_rankwise(cfg):
    n, k, b, kb = cfg
    got = expected_recall(n, k, num_buckets=b, k_per_bucket=kb)
    assert got == pytest.approx(rankwise_exact(n, k, b, kb), abs=1e-11)


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
        with pytest.raises(ValueError, match=rf"not reachable.*{model!r} \(supremum of E"):
            buckets_for_recall(n, k, target, k_per_bucket=kb, model=model)
        return
    assert buckets_for_recall(n, k, target, k_per_bucket=kb, model=model) == meeting[0]


@given(
    configs(max_n=80),
    st.one_of(st.floats(0.05, 1.0), st.just(1.0)),
    st.sampled_from(["exact", "binomial", "poisson"]),
)
def test_k_per_bucket_for_recall_vs_linear_scan(cfg, target, model):
    n, k, b, _ = cfg
    lo = -(-k // b)
    if model == "poisson" and target >= 1.0:
        # E[min(Pois(lambda), k_b)] < lambda for every k_b: the supremum 1 is not attained.
        with pytest.raises(ValueError, match=r"not reachable under model 'poisson'.*supremum"):
            k_per_bucket_for_recall(n, k, target, num_buckets=b, model=model)
        return
    # Linear scan upwards from lo, past k under "poisson" (its recall is < 1 at k_b = k).
    kb = lo
    while expected_recall(n, k, num_buckets=b, k_per_bucket=kb, model=model) < target:
        kb += 1
    assert model == "poisson" or kb <= k
    assert k_per_bucket_for_recall(n, k, target, num_buckets=b, model=model) == kb


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


# --------------------------------------------------------------------------- robustness

# Huge, negative, non-integer and wrong-type inputs, and the documented work limits
# (docs/recall.md, "Limits"). Expected values come from closed forms in mpmath, scipy's own
# distributions, or degenerate cases with a known answer.


def _mp_hyp_excess(N: int, K: int, n: int, c: int) -> float:
    """E[(X - c)^+], X ~ Hyp(N, K, n), over the whole support in 50-digit arithmetic."""
    mpmath.mp.dps = 50
    lo, hi = max(0, n - (N - K)), min(n, K)
    p = mpmath.binomial(K, lo) * mpmath.binomial(N - K, n - lo) / mpmath.binomial(N, n)
    total = mpmath.mpf(0)
    for x in range(lo, hi + 1):
        if x > c:
            total += (x - c) * p
        p *= mpmath.mpf((n - x) * (K - x)) / ((x + 1) * (N - K - n + x + 1))
    return total


def test_exact_model_wide_support_window_vs_full_mpmath_sum():
    # Support 2**17 + 1 points (> 2**16): summed over a window of mode +- 12 std only. The
    # oracle sums every point in 50 digits. Equal buckets: E[R] = 1 - (b/k) E[(X - k_b)^+].
    n, k, b = 2**22, 2**17, 8
    s = n // b
    for kb in (k // b, k // b + 40, k // b + 250):  # mean 16384, std ~118
        want = 1 - mpmath.mpf(b) / k * _mp_hyp_excess(n, k, s, kb)
        got = expected_recall(n, k, num_buckets=b, k_per_bucket=kb)
        assert got == pytest.approx(float(want), abs=1e-14)


def test_binomial_k_1e9_vs_mean_absolute_deviation():
    # Bin(2m, 1/2): E|X - m| = m C(2m, m) / 4^m (mean absolute deviation), so with b = 2,
    # k_b = m: E[R] = 1 - (2/k) E[(X - m)^+] = 1 - C(2m, m) / (2 4^m).
    mpmath.mp.dps = 40
    for m in (5 * 10**8, 5 * 10**10):
        want = 1 - mpmath.binomial(2 * m, m) / (2 * mpmath.mpf(4) ** m)
        got = expected_recall(2**62, 2 * m, num_buckets=2, k_per_bucket=m, model="binomial")
        assert got == pytest.approx(float(want), abs=1e-15)
        # Hyp(n, 2m, n/2) -> Bin(2m, 1/2) as n -> infinity; at n = 2**62 the finite
        # population factor is 1 - 2e-10, far below the tolerance.
        ex = expected_recall(2**62, 2 * m, num_buckets=2, k_per_bucket=m)
        assert ex == pytest.approx(float(want), abs=1e-13)


def test_poisson_huge_lambda_vs_scipy_tail_identity():
    # Pois(lam): E[(X - c)^+] = lam P[X >= c] - c P[X >= c + 1] (x P(x) = lam P(x - 1)).
    k, b = 10**11, 1000
    lam = k / b
    for c in (int(lam), int(lam) + 5000, int(lam) + 30000):  # b * k_b >= k: c >= lam
        excess = lam * stats.poisson.sf(c - 1, lam) - c * stats.poisson.sf(c, lam)
        got = expected_recall(10**12, k, num_buckets=b, k_per_bucket=c, model="poisson")
        assert got == pytest.approx(1 - excess / lam, abs=1e-13)


@pytest.mark.parametrize("kb", [10**9, 2**63 - 1, 2**63, 2**70, np.uint64(2**64 - 1)])
@pytest.mark.parametrize("model", ["exact", "binomial", "poisson"])
def test_huge_k_per_bucket_is_exactly_one(kb, model):
    # k_b at or above every possible per-bucket count (<= k; Poisson: beyond any mass that
    # float64 sees): nothing is lost, E[R] = 1. Was an out-of-memory arange(k_b).
    assert expected_recall(100, 10, num_buckets=1, k_per_bucket=kb, model=model) == 1.0
    assert expected_recall(10**12, 10**11, num_buckets=10**3, k_per_bucket=kb, model=model) == 1.0
    d = recall_distribution(100, 10, num_buckets=3, k_per_bucket=kb, model="exact")
    assert (d.mean, d.var) == (1.0, 0.0)
    assert d.pmf is not None and d.pmf[10] == pytest.approx(1.0, abs=1e-12)


def test_huge_k_per_bucket_array_clamped():
    kb = np.array([2**64 - 1, 2], dtype=np.uint64)
    got = expected_recall(64, 16, num_buckets=8, k_per_bucket=kb)
    assert got[0] == 1.0
    assert got[1] == pytest.approx(0.7817, abs=5e-5)  # reference number (test_reference_numbers)
    obj = np.array([2**80, 2], dtype=object)
    assert expected_recall(64, 16, num_buckets=8, k_per_bucket=obj)[0] == 1.0


def _mp_log_p_empty(n: int, k: int, s: int):
    mpmath.mp.dps = 50
    lg = mpmath.loggamma
    return lg(n - s + 1) - lg(n - s - k + 1) - lg(n + 1) + lg(n - k + 1)


@pytest.mark.parametrize(
    ("n", "k", "b"),
    [
        (10**12, 10**11, 10**11),  # s = 10: the product over min(k, s) factors
        (10**12, 10**11, 10**11 + 7),  # uneven, sizes 9 and 10
        (10**18, 10**9, 10**9),  # k = s = 1e9: Euler-Maclaurin
        (2**62, 2**30, 2**31),  # Euler-Maclaurin, uneven sizes
        (2**60, 2**21 + 1, 2**30 + 3),  # Euler-Maclaurin, uneven sizes
        (10**12, 10**9, 10**9),  # s = 1000
    ],
)
def test_kb1_huge_k_vs_mpmath(n, k, b):
    # E[R] = (1/k) sum_j (1 - C(n - s_j, k)/C(n, k)), the ratio from log-gamma in 50 digits.
    # Was an arange(k) of up to 6.9 EiB.
    want = mpmath.mpf(0)
    for s, cnt in bucket_size_counts(n, b):
        want += cnt * (1 - mpmath.exp(_mp_log_p_empty(n, k, s)))
    want /= k
    assert expected_recall_kb1(n, k, num_buckets=b) == pytest.approx(float(want), rel=1e-13)


def test_huge_k_bounded_memory():
    # Rows 3-5 of the robustness brief: answers in bounded memory (tracemalloc sees numpy).
    import tracemalloc

    tracemalloc.start()
    try:
        assert expected_recall(100, 10, num_buckets=1, k_per_bucket=10**9, model="poisson") == 1
        expected_recall(10**12, 10**9, num_buckets=10**9, model="exact")
        expected_recall(10**12, 10**9, num_buckets=2, k_per_bucket=5 * 10**8, model="binomial")
        expected_recall_kb1(10**12, 10**11, num_buckets=10**11)
        buckets_for_recall(10**12, 10**9, 0.99)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300 * 2**20


def test_window_limit_refused_with_named_arguments():
    # std ~ 3.2e5 > ~1.7e5: the Poisson pmf would span 7.6e6 > 2**22 points.
    with pytest.raises(ValueError, match=r"k, num_buckets: expected a per-bucket count.*2\*\*22"):
        expected_recall(10**12, 10**11, num_buckets=1, k_per_bucket=10**11 + 5, model="poisson")
    with pytest.raises(ValueError, match=r"arguments: expected a broadcast size <= 2\*\*20"):
        expected_recall(np.arange(2000)[:, None] + 10, 1, num_buckets=np.ones(2000, np.int64))
    with pytest.raises(ValueError, match=r"arguments: expected at most 2\*\*27 = \d+ pmf points"):
        kbs = np.arange(4 * 10**8, 4 * 10**8 + 400)  # 400 pmfs of ~4.7e5 points
        expected_recall(2**62, 10**10, num_buckets=25, k_per_bucket=kbs, model="binomial")


def test_recall_distribution_limits():
    # Row 7: the full DP at the paper's size would take minutes; refused up front.
    with pytest.raises(ValueError, match=r"full: expected a pmf DP estimated at <= 10 s"):
        recall_distribution(65536, 1024, num_buckets=1024, full=True)
    # the automatic choice still computes the mean and variance, without the pmf
    d = recall_distribution(65536, 1024, num_buckets=1024)
    assert d.pmf is None and d.mean == expected_recall(65536, 1024, num_buckets=1024)
    with pytest.raises(ValueError, match=r"k, num_buckets: expected the variance's pair sum"):
        recall_distribution(10**12, 10**8, num_buckets=3, k_per_bucket=10**8 // 3 + 1)
    with pytest.raises(TypeError, match="full: expected a bool or None"):
        recall_distribution(10, 2, num_buckets=2, full=np.array([True, False]))


def test_recall_distribution_huge_population_pmf():
    # scipy's hypergeom hangs at a population of 2**40; the DP uses exact ratios. With
    # n -> infinity the exact model tends to the binomial one (population factor ~1e-11).
    n, k, b, kb = 2**40, 10, 4, 3
    d = recall_distribution(n, k, num_buckets=b, k_per_bucket=kb, full=True)
    e = enumerate_binomial(k, b, kb)
    want = np.array([float(e.get(r, 0)) for r in range(k + 1)])
    np.testing.assert_allclose(d.pmf, want, atol=1e-9)
    assert d.pmf.sum() == pytest.approx(1.0, abs=1e-12)


def test_k_per_bucket_for_recall_poisson_above_k():
    # Pois(1) (k = b = 1), by hand: E[min(X, c)] = sum_{x<c} P[X > x] = 0.632, 0.896, 0.977
    # for c = 1, 2, 3: the Poisson model needs k_b = 3 > k for 0.9 (was a RuntimeError).
    assert k_per_bucket_for_recall(1, 1, 0.9, num_buckets=1, model="poisson") == 3
    assert k_per_bucket_for_recall(1, 1, 0.6, num_buckets=1, model="poisson") == 1
    # target 1: E[R] < 1 for every k_b (the supremum 1 is not attained), so it is refused,
    # naming the model and the supremum (was: the first k_b whose recall rounded to 1.0).
    with pytest.raises(ValueError, match=r"model 'poisson' \(supremum of E\[R\].*: 1, not"):
        k_per_bucket_for_recall(1, 1, 1.0, num_buckets=1, model="poisson")


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: expected_recall(2**70, 10, num_buckets=2), ValueError, r"n: expected an int <="),
        (lambda: expected_recall(2**63, 10, num_buckets=2), ValueError, r"n: expected an int <="),
        (lambda: expected_recall(100, 10, num_buckets=2**63), ValueError, "num_buckets"),
        (
            lambda: expected_recall(100, 10, num_buckets=np.uint64(2**64 - 1)),
            ValueError,
            "num_buckets",
        ),
        (lambda: expected_recall(100, 10, num_buckets=-(2**70)), ValueError, "num_buckets"),
        (
            lambda: expected_recall(100, 10, num_buckets=2, k_per_bucket=-(2**70)),
            ValueError,
            "k_per_bucket",
        ),
        (lambda: expected_recall(100, 10.0, num_buckets=2), TypeError, "k: expected"),
        (lambda: expected_recall(100, 10, num_buckets=None), TypeError, "num_buckets"),
        (
            lambda: expected_recall(100, 10, num_buckets=2, k_per_bucket=math.nan),
            TypeError,
            "k_per_bucket",
        ),
        (lambda: expected_recall(100, 10, num_buckets="2"), TypeError, "num_buckets"),
        (lambda: expected_recall(100, 10, num_buckets=2, model=np.array([1])), ValueError, "model"),
        (lambda: expected_recall(100, 10, num_buckets=2, model=None), ValueError, "model"),
        (lambda: bucket_size_counts(10, 10**9), ValueError, "num_buckets: expected"),
        (lambda: bucket_size_counts(0, 1), ValueError, "n: expected n >= 1"),
        (lambda: expected_recall_kb1(2**64, 2, num_buckets=2), ValueError, "n: expected"),
        (lambda: expected_recall_multinomial_kb1(2**80, num_buckets=2**81), ValueError, "k:"),
        (lambda: recall_lower_bound_kb1(1.5, num_buckets=2), TypeError, "k: expected"),
        (lambda: expected_recall_xla(2**80, num_bins=3), ValueError, "k: expected"),
        (lambda: bins_for_recall_xla(10, math.nan), ValueError, "target"),
        (lambda: bins_for_recall_xla(10, 10**400), ValueError, "target"),
        (lambda: bins_for_recall_xla(10, "0.5"), TypeError, "target"),
        (lambda: xla_reduction_output_size(0, 1, 0.9), ValueError, "n: expected n >= 1"),
        (lambda: xla_reduction_output_size(100, 1, 0.9, rank=0), ValueError, "rank"),
        (lambda: buckets_for_recall(100, 10, 0.9, k_per_bucket=0), ValueError, "k_per_bucket"),
        (lambda: buckets_for_recall(100, 10, math.inf), ValueError, "target"),
        (lambda: buckets_for_recall(100, 10, -math.inf), ValueError, "target"),
        (lambda: k_per_bucket_for_recall(100, 10, math.nan, num_buckets=5), ValueError, "target"),
        (lambda: recall_distribution(100, 10, num_buckets=5, model=["exact"]), ValueError, "model"),
    ],
)
def test_bad_inputs_named(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bucket_sizes_alias_rejects_more_buckets_than_elements():
    # Row 6: b > n would be empty buckets; refused before any allocation.
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="num_buckets"):
        bucket_sizes(10, 10**9)


def test_xla_output_size_target_below_float32():
    # 1e-50 rounds to float32 0; log(0) = -inf, so XLA's m = 0 clamps to the tiling (128):
    # n = 100000: r = floor(log2(100000 // 128 = 781)) = 9 <= ceil(log2(781)) = 10,
    # ceil(ceil(100000 / 128) / 2^9) * 128 = ceil(782 / 512) * 128 = 256 (by hand).
    assert xla_reduction_output_size(100000, 10, 1e-50) == 256
    assert xla_reduction_output_size(100000, 10, 1e-30) == xla_reduction_output_size(
        100000, 10, 1e-37
    )
