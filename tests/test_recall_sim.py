"""Recall theory vs simulation of each model's own sampling scheme, and simulate_recall.

The tiny samplers below are independent oracles (they do not use costmodel.recall):
* exact model: true top-k positions = the first k of a random permutation, fixed buckets;
* binomial model: k elements placed into b buckets independently (with replacement);
* Poisson model: independent Poisson(k/b) counts per bucket.
Every statistical check uses a fixed seed and a 4-standard-error bound.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from costmodel.recall import (
    expected_recall,
    expected_recall_xla,
    recall_distribution,
    simulate_recall,
)
from reference import set_num_threads
from reference._config import get_num_threads
from reference.selection import bucketed_topk, bucketed_topk_row, topk_row

# --------------------------------------------------------------------------- samplers


def sample_exact(n, k, b, kb, trials, rng, interleaved=True):
    """Recall per trial: uniform k-subset of positions, fixed unpadded buckets."""
    if interleaved:
        bid = np.arange(n) % b
    else:
        sizes = np.where(np.arange(b) < n % b, n // b + 1, n // b)
        bid = np.repeat(np.arange(b), sizes)
    out = np.empty(trials)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, trials, chunk):
        m = min(chunk, trials - start)
        pos = np.argsort(rng.random((m, n)), axis=1)[:, :k]
        bucket = bid[pos]
        counts = np.zeros((m, b), dtype=np.int64)
        np.add.at(counts, (np.repeat(np.arange(m), k), bucket.ravel()), 1)
        out[start : start + m] = np.minimum(counts, kb).sum(axis=1) / k
    return out


def sample_binomial(k, b, kb, trials, rng):
    """Recall per trial: each of the k elements in a uniform bucket, with replacement."""
    counts = rng.multinomial(k, np.full(b, 1.0 / b), size=trials)
    return np.minimum(counts, kb).sum(axis=1) / k


def sample_poisson(k, b, kb, trials, rng):
    """E[min(Pois(lam), kb)] / lam estimator, lam = k/b: mean over b independent buckets."""
    lam = k / b
    counts = rng.poisson(lam, size=(trials, b))
    return np.minimum(counts, kb).mean(axis=1) / lam


def within(sample: np.ndarray, value: float, z: float = 4.0) -> bool:
    se = sample.std(ddof=1) / np.sqrt(sample.size)
    return abs(sample.mean() - value) <= z * se + 1e-12


CONFIGS = [
    (64, 16, 8, 2),
    (32, 8, 8, 1),
    (61, 16, 7, 3),  # uneven
    (100, 12, 13, 1),  # uneven
    (300, 40, 20, 2),
    (1500, 96, 96, 1),  # SparQ's k = 96 non-local of S ~ 1500
    (1500, 96, 192, 1),
    (1500, 96, 96, 2),
]


# ------------------------------------------------------------------ each model vs its sampler


@pytest.mark.parametrize("cfg", CONFIGS)
def test_exact_vs_permutation_sampler(cfg):
    n, k, b, kb = cfg
    rng = np.random.default_rng(1000 + n + k + b + kb)
    s = sample_exact(n, k, b, kb, 4000, rng)
    assert within(s, expected_recall(n, k, num_buckets=b, k_per_bucket=kb))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_binomial_vs_replacement_sampler(cfg):
    n, k, b, kb = cfg
    rng = np.random.default_rng(2000 + n + k + b + kb)
    s = sample_binomial(k, b, kb, 20000, rng)
    assert within(s, expected_recall(n, k, num_buckets=b, k_per_bucket=kb, model="binomial"))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_poisson_vs_poisson_sampler(cfg):
    n, k, b, kb = cfg
    rng = np.random.default_rng(3000 + n + k + b + kb)
    s = sample_poisson(k, b, kb, 5000, rng)
    assert within(s, expected_recall(n, k, num_buckets=b, k_per_bucket=kb, model="poisson"))


@pytest.mark.parametrize(("k", "m"), [(16, 32), (96, 192), (1024, 8192)])
def test_xla_vs_lone_element_sampler(k, m):
    # TPU-KNN / XLA model: fraction of the K elements alone in their bin, K balls into M bins
    # with replacement; its mean is (1 - 1/M)^(K - 1).
    rng = np.random.default_rng(5000 + k)
    counts = rng.multinomial(k, np.full(m, 1.0 / m), size=4000)
    s = (counts == 1).sum(axis=1) / k
    assert within(s, expected_recall_xla(k, num_bins=m))


@pytest.mark.parametrize("cfg", [(64, 16, 8, 2), (61, 16, 7, 3), (1500, 96, 96, 1)])
def test_variance_vs_sampler(cfg):
    # Sample variance within 4 of its standard errors, sqrt((m4 - s^4) / T).
    n, k, b, kb = cfg
    rng = np.random.default_rng(4000 + n)
    for model, s in (
        ("exact", sample_exact(n, k, b, kb, 20000, rng)),
        ("binomial", sample_binomial(k, b, kb, 20000, rng)),
    ):
        d = recall_distribution(n, k, num_buckets=b, k_per_bucket=kb, model=model)
        c = s - s.mean()
        v = (c**2).mean()
        se_v = np.sqrt(((c**4).mean() - v**2) / s.size)
        assert abs(v - d.var) <= 4 * se_v, (model, v, d.var, se_v)


# --------------------------------------------------------------------------- per-instance identity


@given(
    st.integers(1, 64),
    st.data(),
    st.booleans(),
    st.integers(0, 2**31),
)
def test_per_instance_identity(n, data, interleaved, seed):
    # recall(reference bucketed top-k) == (1/k) sum_j min(X_j, k_b) on distinct random data.
    b = data.draw(st.integers(1, n))
    kb = data.draw(st.integers(1, n))
    k = data.draw(st.integers(1, min(n, b * kb)))
    rng = np.random.default_rng(seed)
    x = rng.permutation(n).astype(np.float64)  # distinct values
    _, idx = bucketed_topk(x, k, num_buckets=b, k_per_bucket=kb, interleaved=interleaved)
    true = np.argsort(-x)[:k]
    if interleaved:
        bid = np.arange(n) % b
    else:
        bid = np.repeat(np.arange(b), np.where(np.arange(b) < n % b, n // b + 1, n // b))
    xj = np.bincount(bid[true], minlength=b)
    assert len(set(idx.tolist()) & set(true.tolist())) == np.minimum(xj, kb).sum()


# --------------------------------------------------------------------------- simulate_recall


def test_simulate_deterministic_and_thread_independent():
    kw = {"num_buckets": 24, "k_per_bucket": 2, "trials": 300, "seed": 7}
    a = simulate_recall(500, 40, **kw)
    b = simulate_recall(500, 40, **kw)
    np.testing.assert_array_equal(a.recalls, b.recalls)
    old = get_num_threads()
    try:
        set_num_threads(1)
        c = simulate_recall(500, 40, **kw)
    finally:
        set_num_threads(old)
    np.testing.assert_array_equal(a.recalls, c.recalls)
    d = simulate_recall(500, 40, **{**kw, "seed": 8})
    assert not np.array_equal(a.recalls, d.recalls)
    assert a.recalls.shape == (300,)
    assert a.stderr == pytest.approx(a.recalls.std(ddof=1) / np.sqrt(300))


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("cfg", [(64, 16, 8, 2), (61, 16, 7, 3), (1500, 96, 192, 1)])
def test_simulate_vs_exact(cfg, interleaved):
    n, k, b, kb = cfg
    r = simulate_recall(
        n, k, num_buckets=b, k_per_bucket=kb, interleaved=interleaved, trials=4000, seed=11
    )
    want = expected_recall(n, k, num_buckets=b, k_per_bucket=kb)
    assert abs(r.mean - want) <= 4 * r.stderr


def test_simulate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="trials"):
        simulate_recall(10, 2, num_buckets=2, trials=1, seed=0)
    with pytest.raises(ValueError, match="correlation"):
        simulate_recall(10, 2, num_buckets=2, trials=10, seed=0, correlation=1.0)
    with pytest.raises(ValueError, match="seed"):
        simulate_recall(10, 2, num_buckets=2, trials=10, seed=-1)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [(65536, 1024, 1024, 1), (65536, 1024, 512, 4)])
def test_simulate_vs_exact_paper_size(cfg):
    n, k, b, kb = cfg
    r = simulate_recall(n, k, num_buckets=b, k_per_bucket=kb, trials=1000, seed=3)
    want = expected_recall(n, k, num_buckets=b, k_per_bucket=kb)
    assert abs(r.mean - want) <= 4 * r.stderr


@pytest.mark.slow
def test_simulated_count_distribution_matches_pmf():
    # Chi-square goodness of fit of the per-trial recovered counts to the DP pmf.
    from scipy import stats

    n, k, b, kb = 200, 24, 24, 1
    r = simulate_recall(n, k, num_buckets=b, k_per_bucket=kb, trials=20000, seed=5)
    pmf = recall_distribution(n, k, num_buckets=b, k_per_bucket=kb, full=True).pmf
    obs = np.bincount(np.rint(r.recalls * k).astype(np.int64), minlength=k + 1)
    exp = pmf * r.recalls.size
    keep = exp >= 5
    o = np.append(obs[keep], obs[~keep].sum())
    e = np.append(exp[keep], exp[~keep].sum())
    chi2 = ((o - e) ** 2 / e).sum()
    assert stats.chi2.sf(chi2, o.size - 1) > 1e-4


@pytest.mark.slow
def test_ar1_contiguous_collapses_interleaved_holds():
    # Correlated inputs break A2 (random order): contiguous buckets lose recall.
    n, k, b = 16384, 256, 256
    iid = expected_recall(n, k, num_buckets=b)
    kw = {"num_buckets": b, "trials": 400, "seed": 9, "correlation": 0.99}
    cont = simulate_recall(n, k, interleaved=False, **kw)
    inter = simulate_recall(n, k, interleaved=True, **kw)
    assert cont.mean < iid - 0.3
    assert inter.mean > iid - 0.02


# --------------------------------------------------------------------------- row_topk


@numba.njit
def _exact_row(x, k, out):
    topk_row(x, k, out)


@numba.njit
def _first_k_row(x, k, out):
    for i in range(k):
        out[i] = i


@numba.njit
def _repeat_row(x, k, out):
    for i in range(k):
        out[i] = 0


@numba.njit
def _bucketed_row_2(x, k, out):
    bucketed_topk_row(x, k, 24, 2, True, out)


def _exact_py(x, k):
    return np.argsort(-x, kind="stable")[:k]


def _first_k_py(x, k):
    return np.arange(k)


@pytest.mark.parametrize("row_topk", [_exact_row, _exact_py], ids=["jitted", "python"])
@pytest.mark.parametrize("correlation", [None, 0.9])
def test_row_topk_exact_gives_recall_one(row_topk, correlation):
    r = simulate_recall(300, 17, trials=50, seed=1, correlation=correlation, row_topk=row_topk)
    np.testing.assert_array_equal(r.recalls, np.ones(50))
    assert r.mean == 1.0 and r.stderr == 0.0


@pytest.mark.parametrize("row_topk", [_first_k_row, _first_k_py], ids=["jitted", "python"])
@pytest.mark.parametrize(("n", "k"), [(200, 20), (1000, 7)])
def test_row_topk_first_k_gives_k_over_n(row_topk, n, k):
    # On i.i.d. data the true top-k is a uniform k-subset, so k fixed positions hold a
    # hypergeometric number of them: mean recall k/n.
    r = simulate_recall(n, k, trials=4000, seed=2, row_topk=row_topk)
    assert abs(r.mean - k / n) <= 4 * r.stderr


def test_row_topk_jitted_and_python_agree_and_thread_independent():
    kw = {"trials": 200, "seed": 4, "correlation": 0.5}
    a = simulate_recall(150, 10, row_topk=_first_k_row, **kw)
    b = simulate_recall(150, 10, row_topk=_first_k_py, **kw)
    np.testing.assert_array_equal(a.recalls, b.recalls)
    old = get_num_threads()
    try:
        set_num_threads(1)
        c = simulate_recall(150, 10, row_topk=_first_k_row, **kw)
    finally:
        set_num_threads(old)
    np.testing.assert_array_equal(a.recalls, c.recalls)


def test_row_topk_builtin_bucketed_as_plugin_matches_default():
    # Same seeds, same data: the built-in bucketed top-k passed as a plug-in gives the
    # default's numbers exactly.
    want = simulate_recall(500, 40, num_buckets=24, k_per_bucket=2, trials=300, seed=7)
    got = simulate_recall(500, 40, trials=300, seed=7, row_topk=_bucketed_row_2)
    np.testing.assert_array_equal(got.recalls, want.recalls)


def test_row_topk_rejects_bad_indices_and_options():
    with pytest.raises(ValueError, match="repeated index in trial 0"):
        simulate_recall(50, 5, trials=10, seed=0, row_topk=_repeat_row)
    with pytest.raises(ValueError, match=r"outside \[0, n\)"):
        simulate_recall(50, 5, trials=10, seed=0, row_topk=lambda x, k: np.arange(k) + 46)
    with pytest.raises(ValueError, match=r"outside \[0, n\)"):
        simulate_recall(50, 5, trials=10, seed=0, row_topk=lambda x, k: np.arange(k) - 1)
    with pytest.raises(ValueError, match="repeated index"):
        simulate_recall(50, 5, trials=10, seed=0, row_topk=lambda x, k: np.zeros(k, int))
    with pytest.raises(ValueError, match="shape"):
        simulate_recall(50, 5, trials=10, seed=0, row_topk=lambda x, k: np.arange(k - 1))
    with pytest.raises(TypeError, match="integer"):
        simulate_recall(50, 5, trials=10, seed=0, row_topk=lambda x, k: np.zeros(k))
    with pytest.raises(TypeError, match="row_topk"):
        simulate_recall(50, 5, trials=10, seed=0, row_topk=3)
    with pytest.raises(TypeError, match="not allowed with row_topk"):
        simulate_recall(50, 5, num_buckets=5, trials=10, seed=0, row_topk=_exact_py)
    with pytest.raises(TypeError, match="not allowed with row_topk"):
        simulate_recall(50, 5, interleaved=False, trials=10, seed=0, row_topk=_exact_py)
    with pytest.raises(TypeError, match="num_buckets"):
        simulate_recall(50, 5, trials=10, seed=0)
    with pytest.raises(ValueError, match="k: expected"):
        simulate_recall(50, 51, trials=10, seed=0, row_topk=_exact_py)


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    ("b", "kb"),
    [(10, 2**36), (1, 2**40), (3, 2**63 - 1), (3, 2**63), (3, np.uint64(2**64 - 1)), (7, 10**30)],
)
def test_simulate_huge_k_per_bucket(b, kb):
    # k_b at or above the bucket size keeps whole buckets: the bucketed top-k is the exact
    # top-k and every trial recovers all k (known answer). Was a SystemError / a recall of
    # -7.9e16 / a Numba TypingError from int64 overflow in the kernel.
    r = simulate_recall(1000, 10, num_buckets=b, k_per_bucket=kb, trials=20, seed=0)
    np.testing.assert_array_equal(r.recalls, np.ones(20))


def test_simulate_k_per_bucket_at_least_k_is_exact():
    # k_b in [k, bucket size) is reduced to k before the kernel: the bucketed top-k then
    # returns the exact top-k, whose recall is exactly 1 (each bucket keeps its top k, which
    # holds every true top-k element of that bucket).
    r = simulate_recall(5000, 40, num_buckets=4, k_per_bucket=41, trials=30, seed=2)
    np.testing.assert_array_equal(r.recalls, np.ones(30))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n": 2**40, "k": 10, "num_buckets": 10}, ValueError, r"n: expected n <= 2\*\*22"),
        ({"n": 2**22 + 1, "k": 10, "num_buckets": 10}, ValueError, r"n: expected n <= 2\*\*22"),
        ({"n": 2**64, "k": 10, "num_buckets": 10}, ValueError, "n: expected an int <="),
        ({"num_buckets": 2**63}, ValueError, "num_buckets: expected an int <="),
        ({"num_buckets": np.uint64(2**64 - 1)}, ValueError, "num_buckets: expected an int <="),
        ({"num_buckets": 1001}, ValueError, "num_buckets: expected 1 <= num_buckets <= n"),
        ({"trials": 10**9}, ValueError, r"trials: expected trials <= 2\*\*22"),
        ({"trials": 2**22}, ValueError, r"trials: expected trials \* \(n \+ k log2"),
        ({"trials": 2**63}, ValueError, "trials: expected an int <="),
        ({"trials": 100.0}, TypeError, "trials: expected an int"),
        ({"seed": -(2**70)}, ValueError, "seed: expected seed >= 0"),
        ({"correlation": 10**400}, ValueError, "correlation: expected"),
        ({"correlation": float("nan")}, ValueError, "correlation: expected"),
        ({"correlation": float("inf")}, ValueError, "correlation: expected"),
        ({"correlation": "0.5"}, TypeError, "correlation: expected"),
        ({"k_per_bucket": 0}, ValueError, "k_per_bucket: expected"),
        ({"k_per_bucket": -(2**70)}, ValueError, "k_per_bucket: expected"),
        ({"k_per_bucket": 2.0}, TypeError, "k_per_bucket: expected an int"),
        ({"interleaved": 1}, TypeError, "interleaved"),
    ],
)
def test_simulate_bad_or_huge_arguments_named(kwargs, exc, match):
    args = {"n": 1000, "k": 10, "num_buckets": 10, "trials": 10, "seed": 0, **kwargs}
    n, k = args.pop("n"), args.pop("k")
    with pytest.raises(exc, match=match):
        simulate_recall(n, k, **args)


def test_simulate_work_bound_documented_uses_pass():
    # Every run of the docs' tables (`sparq recall --table`: 2000 trials at n = 65536, 20000
    # otherwise, 1000 for the AR(1) rows) stays below the work bound and is not refused; the
    # row (1500, 96, 192, 2) was refused while the per-bucket term was 400. Validation alone
    # is instant.
    from costmodel.recall import _check_simulation
    from sparq_cli.recall import TABLE_CONFIGS, _trials_for

    runs = [(n, k, b, kb, _trials_for(n)) for n, k, b, kb in TABLE_CONFIGS]
    runs.append((65536, 1024, 1024, 1, 1000))
    assert (1500, 96, 192, 2, 20000) in runs
    for n, k, b, kb, trials in runs:
        _check_simulation(
            n,
            k,
            num_buckets=b,
            k_per_bucket=kb,
            interleaved=True,
            trials=trials,
            seed=0,
            correlation=None,
            row_topk=None,
        )
