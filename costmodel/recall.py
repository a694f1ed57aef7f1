"""Recall theory of bucketed approximate top-k.

Bucketed top-k (Key et al., "Approximate Top-k for Increased Parallelism", arXiv 2412.04358;
public code graphcore-research/pytorch-approx-topk) splits the ``n`` positions into ``b``
buckets (``num_buckets``), keeps the exact top-``k_b`` (``k_per_bucket``) of every bucket,
and then the exact top-``k`` of the ``b * k_b`` candidates. Bucket ``j`` holds ``s_j``
positions; without padding the first ``n % b`` buckets hold ``n // b + 1`` positions and the
others ``n // b`` (see ``docs/topk.md``), so only two distinct sizes ever occur.

Per-instance identity (distinct values): with ``X_j`` the number of true top-k positions in
bucket ``j``, the number of true top-k recovered is ``K = sum_j min(X_j, k_b)`` and the recall is
``R = K / k`` (every surviving true top-k element beats every other candidate, so the final
top-k never drops one).

Assumptions shared by every formula here, repeated in each docstring:

* **A1 distinct values**: no ties among the values, so "the true top-k" is a set.
* **A2 random order**: the set of true top-k positions is a uniformly random k-subset of
  ``{0, ..., n-1}``. This holds for i.i.d. data (any continuous law) and for any data
  after a random permutation; it does *not* hold for correlated data in their natural order
  (see :func:`simulate_recall` with ``correlation``: contiguous buckets collapse there).

Models of ``E[R]`` (:func:`expected_recall`):

``"exact"``
    ``X_j ~ Hypergeometric(population n, successes k, draws s_j)`` for the actual bucket sizes.
    Exact under A1 + A2.
``"binomial"``
    The paper's model (arXiv 2412.04358, its expected-recall formula; public code
    ``notebooks/theoretical_models.py``): each of the
    higher-ranked elements lands in a given bucket independently with probability ``1/b``
    (placement with replacement). Equivalently ``(X_1..X_b) ~ Multinomial(k, 1/b, ...)``.
    The ``n -> infinity`` limit of the exact model for equal buckets; a lower bound on it.
``"poisson"``
    The further limit ``k, b -> infinity`` with ``lambda = k / b`` fixed:
    ``E[R] = E[min(Pois(lambda), k_b)] / lambda``.

Chain of inequalities for equal buckets, ``exact >= binomial >= poisson``: Hoeffding (1963,
Thm. 4, sampling without vs with replacement; binomial vs Poisson is classical) orders
``Hypergeometric <= Binomial <= Poisson`` (same mean) in the convex order, and
``x -> min(x, k_b)`` is concave.

Monotonicity in ``b`` (used by :func:`buckets_for_recall`), proved in ``docs/recall.md``: with
``phi(s) = E[min(Hyp(n, k, s), k_b)]`` one has ``phi(s+1) - phi(s) = (k/n) P[Hyp(n-1, k-1, s) <=
k_b - 1]``, non-increasing in ``s``, so ``phi`` is concave with ``phi(0) = 0``. Because the sizes
are ``q`` and ``q + 1``, ``sum_j phi(s_j) = b * phi~(n / b)`` with ``phi~`` the piecewise-linear
interpolation of ``phi``, so ``E[R](b) = (n/k) * phi~(t) / t`` at ``t = n / b``; a concave
function through the origin has non-increasing chord slope ``phi~(t)/t``, so ``E[R]`` is
non-decreasing in ``b`` for *every* ``b`` (uneven buckets included), not only for ``b | b'``.
The same argument (``d/dp E[min(Bin(k, p), c)] = k P[Bin(k-1, p) <= c-1]``) gives monotonicity
for the binomial and Poisson models. Monotonicity in ``k_b`` is immediate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numba import prange
from numba.extending import is_jitted
from scipy import stats

from reference import check_int, njit_parallel, njit_serial
from reference.selection import bucketed_topk_row, topk_row

__all__ = [
    "MODELS",
    "RecallDistribution",
    "SimulationResult",
    "bins_for_recall_xla",
    "bucket_size_counts",
    "bucket_sizes",
    "buckets_for_recall",
    "expected_recall",
    "expected_recall_kb1",
    "expected_recall_multinomial_kb1",
    "expected_recall_xla",
    "k_per_bucket_for_recall",
    "recall_distribution",
    "recall_lower_bound_kb1",
    "simulate_recall",
    "xla_reduction_output_size",
]

Model = Literal["exact", "binomial", "poisson"]

#: The models :func:`expected_recall` understands.
MODELS: tuple[str, ...] = ("exact", "binomial", "poisson")

# Distribution points with probability below this are dropped from the pairwise sums of
# :func:`recall_distribution` (the dropped mass is bounded by support size * this).
_PMF_FLOOR = 1e-30


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value: object) -> int:
    return check_int(name, value)


def _as_int_array(name: str, value: object) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an int or an integer array, got dtype {arr.dtype}")
    return arr.astype(np.int64, casting="safe") if arr.dtype.kind == "i" else _u2i(name, arr)


def _u2i(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: values above int64 range, got max {int(arr.max())}")
    return arr.astype(np.int64)


def _check_model(model: object) -> str:
    if model not in MODELS:
        raise ValueError(f"model: expected one of {MODELS}, got {model!r}")
    return str(model)


def _check_params(n: int, k: int, b: int, kb: int) -> None:
    if n < 1:
        raise ValueError(f"n: expected n >= 1, got {n}")
    if not 1 <= k <= n:
        raise ValueError(f"k: expected 1 <= k <= n = {n}, got {k}")
    if not 1 <= b <= n:
        raise ValueError(f"num_buckets: expected 1 <= num_buckets <= n = {n}, got {b}")
    if kb < 1:
        raise ValueError(f"k_per_bucket: expected k_per_bucket >= 1, got {kb}")
    if b * kb < k:
        raise ValueError(
            f"num_buckets * k_per_bucket: expected >= k = {k}, got {b} * {kb} = {b * kb}"
        )


def _check_target(target: object) -> float:
    if isinstance(target, bool) or not isinstance(target, (int, float, np.floating, np.integer)):
        raise TypeError(f"target: expected a float in (0, 1], got {target!r}")
    t = float(target)
    if not 0.0 < t <= 1.0:
        raise ValueError(f"target: expected 0 < target <= 1, got {t}")
    return t


# --------------------------------------------------------------------------- buckets


def bucket_size_counts(n: int, num_buckets: int) -> list[tuple[int, int]]:
    """Distinct bucket sizes of an unpadded partition and how many buckets have each.

    Parameters
    ----------
    n : int
        Number of elements, ``n >= 1``.
    num_buckets : int
        Number of buckets ``b``, ``1 <= b <= n``.

    Returns
    -------
    list of (size, count)
        ``[(n // b + 1, n % b), (n // b, b - n % b)]`` without entries of count 0, largest
        size first (the first ``n % b`` buckets are the larger ones; ``docs/topk.md``).
    """
    n = _check_int("n", n)
    b = _check_int("num_buckets", num_buckets)
    if n < 1 or not 1 <= b <= n:
        raise ValueError(f"num_buckets: expected 1 <= num_buckets <= n = {n}, got {b}")
    base, rem = divmod(n, b)
    out = []
    if rem:
        out.append((base + 1, rem))
    out.append((base, b - rem))
    return out


def bucket_sizes(n: int, num_buckets: int) -> list[tuple[int, int]]:
    """Deprecated name of :func:`bucket_size_counts`, kept for one release.

    Not :func:`reference.selection.bucket_sizes`, which returns the size of every bucket.
    """
    warnings.warn(
        "costmodel.recall.bucket_sizes is deprecated; use bucket_size_counts",
        DeprecationWarning,
        stacklevel=2,
    )
    return bucket_size_counts(n, num_buckets)


# --------------------------------------------------------------------------- distributions


def _from_log_ratios(xs: np.ndarray, log_ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # pmf(x_{i+1}) / pmf(x_i) = exp(log_ratio[i]). Built by a cumulative sum of the log ratios
    # (each factor exact in float64 up to rounding) and normalised to total mass 1, so no
    # log-gamma of huge arguments is ever differenced: at n = 2**24 scipy's betaln-based
    # hypergeometric logpmf is off by ~1e-9 in E[R]; this is accurate to ~1e-14.
    logp = np.concatenate(([0.0], np.cumsum(log_ratio)))
    p = np.exp(logp - logp.max())
    p /= p.sum()
    return xs, p


def _hyp_pmf(pop: int, succ: int, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """Support and pmf of Hypergeometric(population, successes, draws)."""
    lo = max(0, draws - (pop - succ))
    hi = min(draws, succ)
    xs = np.arange(lo, hi + 1, dtype=np.int64)
    if lo == hi:
        return xs, np.ones(1)
    x = xs[:-1].astype(np.float64)
    # P(x+1)/P(x) = (draws - x)(succ - x) / ((x + 1)(pop - succ - draws + x + 1))
    lr = (
        np.log(draws - x)
        + np.log(succ - x)
        - np.log(x + 1.0)
        - np.log(float(pop - succ - draws) + x + 1.0)
    )
    return _from_log_ratios(xs, lr)


def _binom_pmf(trials: int, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Support and pmf of Binomial(trials, p)."""
    xs = np.arange(0, trials + 1, dtype=np.int64)
    if p >= 1.0:
        return xs[-1:], np.ones(1)
    if trials == 0 or p <= 0.0:
        return xs[:1], np.ones(1)
    x = xs[:-1].astype(np.float64)
    # P(x+1)/P(x) = (trials - x) / (x + 1) * p / (1 - p)
    lr = np.log(trials - x) - np.log(x + 1.0) + (math.log(p) - math.log1p(-p))
    return _from_log_ratios(xs, lr)


def _poisson_pmf(lam: float, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Support (truncated far in the tail: dropped mass < 1e-100) and pmf of Poisson(lam)."""
    hi = int(max(c, lam + 60.0 * math.sqrt(lam) + 250.0))
    xs = np.arange(0, hi + 1, dtype=np.int64)
    # P(x+1)/P(x) = lam / (x + 1)
    lr = math.log(lam) - np.log(xs[:-1] + 1.0)
    return _from_log_ratios(xs, lr)


def _min_and_excess(xs: np.ndarray, p: np.ndarray, c: int) -> tuple[float, float]:
    """(E[min(X, c)], E[(X - c)^+]) as sums of non-negative terms."""
    return float(np.dot(np.minimum(xs, c), p)), float(np.dot(np.maximum(xs - c, 0), p))


def _combine(kept: float, lost: float, total: float) -> float:
    # kept + lost = total (sum_j E[X_j] = k). Take the smaller of the two, each a sum of
    # non-negative terms, so the result is accurate to ~eps absolutely and is exactly 1.0
    # when no bucket can overflow.
    if lost <= kept:
        return 1.0 - lost / total
    return kept / total


def _expected_recall_one(n: int, k: int, b: int, kb: int, model: str) -> float:
    if model == "exact":
        kept = lost = 0.0
        for s, cnt in bucket_size_counts(n, b):
            m, e = _min_and_excess(*_hyp_pmf(n, k, s), kb)
            kept += cnt * m
            lost += cnt * e
        return _combine(kept, lost, float(k))
    if model == "binomial":
        m, e = _min_and_excess(*_binom_pmf(k, 1.0 / b), kb)
        return _combine(b * m, b * e, float(k))
    lam = k / b
    m, e = _min_and_excess(*_poisson_pmf(lam, kb), kb)
    return _combine(m, e, lam)


def expected_recall(
    n: int | np.ndarray,
    k: int | np.ndarray,
    *,
    num_buckets: int | np.ndarray,
    k_per_bucket: int | np.ndarray = 1,
    model: Model = "exact",
) -> float | np.ndarray:
    """Expected recall of bucketed top-k under a sampling model.

    Assumptions: A1 distinct values; A2 the true top-k positions are a uniformly random
    k-subset (random order). Under A1 the recall of one instance is
    ``R = (1/k) sum_j min(X_j, k_b)`` (``docs/recall.md``, "per-instance identity"), so
    ``E[R] = (1/k) sum_j E[min(X_j, k_b)]``.

    * ``"exact"``: ``X_j ~ Hypergeometric(n, k, s_j)`` with the actual sizes ``s_j`` (first
      ``n % b`` buckets of size ``n // b + 1``, the rest ``n // b``); grouped by the two sizes.
      Exact under A1 + A2; for equal buckets it is Theorem 1 of Samaga et al.
      (arXiv 2506.04165), ``1 - (b/k) E[(X - k_b)^+]``. Equals the rank-wise form
      ``(1/k) sum_{i<k} P[H_i <= k_b - 1]``, ``H_i ~ Hyp(n-1, s-1, i)``, for equal buckets.
    * ``"binomial"``: arXiv 2412.04358, its expected-recall formula (``docs/recall.md``)
      ``E[R] = (k_b + sum_{i=k_b}^{k-1} BinomCDF(k_b - 1; i, 1/b)) / k``, computed in the
      equivalent bucket form ``(b/k) E[min(Bin(k, 1/b), k_b)]``. Assumes placement *with
      replacement* (each higher-ranked element in a given bucket w.p. ``1/b`` independently),
      i.e. ``n -> infinity``; ignores ``n`` (validated only). A lower bound on ``"exact"``
      for equal buckets.
    * ``"poisson"``: ``k, b -> infinity``, ``lambda = k/b``:
      ``E[R] = E[min(Pois(lambda), k_b)] / lambda``; depends only on ``k_b`` and
      ``b k_b / k``. A lower bound on ``"binomial"``.

    Numerics: each pmf is built from its exact successive ratio ``P(x+1)/P(x)`` by a cumulative
    sum of logs and renormalised (no ``scipy.stats``, no differenced log-gamma); ``E[R]`` is
    taken as ``1 - (expected lost)/k`` or ``(expected kept)/k``, whichever sum is smaller (both
    are sums of non-negative terms, no cancellation). Checked against 40-digit mpmath at
    ``n = 2**24, k = 2**14`` (``tests/test_recall.py``).

    Parameters
    ----------
    n, k, num_buckets, k_per_bucket : int or integer array
        Broadcast against each other with :func:`numpy.broadcast_arrays` (the documented
        vectorisation); incompatible shapes raise ``ValueError``. Need ``1 <= k <= n``,
        ``1 <= num_buckets <= n``, ``k_per_bucket >= 1``, ``num_buckets * k_per_bucket >= k``.
    model : {"exact", "binomial", "poisson"}

    Returns
    -------
    float or ndarray of float64
        A float when every argument is a scalar, else an array of the broadcast shape.
    """
    model = _check_model(model)
    args = {
        "n": _as_int_array("n", n),
        "k": _as_int_array("k", k),
        "num_buckets": _as_int_array("num_buckets", num_buckets),
        "k_per_bucket": _as_int_array("k_per_bucket", k_per_bucket),
    }
    try:
        bn, bk, bb, bkb = np.broadcast_arrays(*args.values())
    except ValueError as exc:
        shapes = ", ".join(f"{key} {v.shape}" for key, v in args.items())
        raise ValueError(f"arguments: shapes do not broadcast: {shapes}") from exc
    out = np.empty(bn.shape, dtype=np.float64)
    cache: dict[tuple[int, int, int, int], float] = {}
    for idx in np.ndindex(bn.shape):
        key = (int(bn[idx]), int(bk[idx]), int(bb[idx]), int(bkb[idx]))
        if key not in cache:
            _check_params(*key)
            cache[key] = _expected_recall_one(*key, model)
        out[idx] = cache[key]
    if out.ndim == 0:
        return float(out)
    return out


# --------------------------------------------------------------------------- k_b = 1 forms


def expected_recall_kb1(n: int, k: int, *, num_buckets: int) -> float:
    """Exact expected recall for ``k_b = 1``, closed form.

    ``E[R] = (1/k) sum_j (1 - C(n - s_j, k) / C(n, k))`` (a bucket yields a true top-k element
    iff it holds at least one). For equal buckets ``s = n/b`` this is the spec's
    ``(b/k)(1 - C(n-s, k)/C(n, k))``; here generalised to the two uneven sizes.
    Assumptions: A1 distinct values, A2 random order (uniform k-subset).
    ``C(n-s,k)/C(n,k) = prod_{i<k} (1 - s/(n-i))`` is summed in log space with ``log1p``.

    Parameters
    ----------
    n, k, num_buckets : int
        ``1 <= k <= n``, ``k <= num_buckets <= n``.

    Returns
    -------
    float
    """
    n, k, b = _check_int("n", n), _check_int("k", k), _check_int("num_buckets", num_buckets)
    _check_params(n, k, b, 1)
    i = np.arange(k, dtype=np.float64)
    total = 0.0
    for s, cnt in bucket_size_counts(n, b):
        if n - s < k:
            p_empty = 0.0
        else:
            p_empty = math.exp(float(np.sum(np.log1p(-s / (n - i)))))
        total += cnt * (1.0 - p_empty)
    return total / k


def expected_recall_multinomial_kb1(k: int, *, num_buckets: int) -> float:
    """Expected recall for ``k_b = 1`` under the with-replacement (multinomial) model.

    ``E[R] = (b/k)(1 - (1 - 1/b)^k)``: the expected number of non-empty buckets when ``k``
    balls fall independently and uniformly into ``b`` buckets, over ``k``. Equals
    ``expected_recall(..., model="binomial")`` at ``k_b = 1`` (arXiv 2412.04358,
    expected-recall model).
    Assumptions: A1 distinct values, A2 random order, plus placement with replacement
    (``n -> infinity``).

    Parameters
    ----------
    k, num_buckets : int
        ``1 <= k <= num_buckets``.

    Returns
    -------
    float
    """
    k, b = _check_int("k", k), _check_int("num_buckets", num_buckets)
    if k < 1 or b < k:
        raise ValueError(f"num_buckets: expected num_buckets >= k = {k} >= 1, got {b}")
    return (b / k) * -math.expm1(k * math.log1p(-1.0 / b)) if b > 1 else 1.0 / k


def recall_lower_bound_kb1(k: int, *, num_buckets: int) -> float:
    """The bound ``E[R] >= 1 - (k - 1) / (2 b)`` for ``k_b = 1``.

    Proof: the recovered count is ``k - sum_j (X_j - 1)^+ >= k - sum_j C(X_j, 2)``, and
    ``E[sum_j C(X_j, 2)] = C(k, 2) * P[two given top-k positions share a bucket]``. That
    probability is ``1/b`` with replacement and ``sum_j s_j(s_j - 1) / (n(n-1)) <= 1/b`` for the
    exact model (equal *and* uneven unpadded buckets; see ``docs/recall.md``). Assumptions:
    A1 distinct values, A2 random order. Holds for the exact and binomial models.

    Parameters
    ----------
    k, num_buckets : int
        ``k >= 1``, ``num_buckets >= 1``.

    Returns
    -------
    float
        May be negative (vacuous) when ``b < (k - 1) / 2``.
    """
    k, b = _check_int("k", k), _check_int("num_buckets", num_buckets)
    if k < 1 or b < 1:
        raise ValueError(f"k, num_buckets: expected both >= 1, got k={k}, num_buckets={b}")
    return 1.0 - (k - 1) / (2.0 * b)


# --------------------------------------------------------------------------- XLA / TPU-KNN


def expected_recall_xla(k: int, *, num_bins: int) -> float:
    """The TPU-KNN / XLA recall model ``(1 - 1/M)^(K - 1)`` for ``M`` bins and ``k_b = 1``.

    Chern et al., "TPU-KNN" (arXiv 2206.14286, its bin-count analysis), as used by XLA's
    ``ApproxTopKReductionOutputSize``: the probability that a given true top-K element shares
    its bin with none of the other ``K - 1`` (placement with replacement). Every such element
    is recovered, so it is a lower bound on the binomial-model recall with ``k_b = 1``.
    Assumptions: A1 distinct values, A2 random order, placement with replacement.

    Parameters
    ----------
    k : int
        ``K >= 1``.
    num_bins : int
        ``M >= 1``.

    Returns
    -------
    float
    """
    k, m = _check_int("k", k), _check_int("num_bins", num_bins)
    if k < 1 or m < 1:
        raise ValueError(f"k, num_bins: expected both >= 1, got k={k}, num_bins={m}")
    if k == 1:
        return 1.0
    return math.exp((k - 1) * math.log1p(-1.0 / m)) if m > 1 else 0.0


def bins_for_recall_xla(k: int, target: float) -> int:
    """Number of bins of the TPU-KNN / XLA sizing rule, ``M = ceil((1 - K) / ln(target))``.

    From ``(1 - 1/M)^(K-1) ~= exp((1 - K)/M) >= target`` (arXiv 2206.14286; XLA
    ``ApproxTopKReductionOutputSize``, whose comment derives ``M = (1 - K)/LOG(recall)``). This
    returns the smallest integer ``M`` meeting the *exponential* form, ``max(1, ceil(...))``.
    XLA itself truncates instead of rounding up and then clamps and rounds to power-of-two
    windows: see :func:`xla_reduction_output_size`. Because ``(1-1/M)^(K-1) < exp((1-K)/M)``,
    :func:`expected_recall_xla` at this ``M`` can be slightly below ``target``; both are far
    below the exact recall, which is why XLA's bin counts are conservative.
    Assumptions: A1, A2, placement with replacement, ``k_b = 1``.

    Parameters
    ----------
    k : int
        ``K >= 1``.
    target : float
        ``0 < target < 1`` (``target = 1`` needs ``M = n``: no finite rule without ``n``).

    Returns
    -------
    int
    """
    k = _check_int("k", k)
    if k < 1:
        raise ValueError(f"k: expected k >= 1, got {k}")
    t = _check_target(target)
    if t >= 1.0:
        raise ValueError("target: expected target < 1 (target = 1 needs one bin per element)")
    return max(1, math.ceil((1.0 - k) / math.log(t)))


def xla_reduction_output_size(n: int, k: int, target: float, *, rank: int = 2) -> int:
    """Number of bins XLA's ``approx_max_k`` actually uses on TPU (``aggregate_to_topk=False``).

    A re-statement of the arithmetic of XLA's ``ApproxTopKReductionOutputSize``
    (``xla/.../approx_topk_shape.cc``): tiling ``T = 1024`` for rank-1 operands, 128 otherwise;
    ``n <= T`` -> ``n``; ``k = 1`` -> ``T``; ``target = 1`` -> ``n``; otherwise
    ``m = clamp(trunc((1 - k)/ln(target)), T, n)``, ``r = floor(log2(n // m))`` (``r = 0`` ->
    ``n``), ``r = min(r, ceil(log2(n // T)))``, output ``ceil(ceil(n / T) / 2^r) * T``.
    ``target`` is rounded to float32 first, as XLA's argument is a C++ ``float``.

    Parameters
    ----------
    n, k : int
        Input size and ``K``; ``1 <= k <= n``.
    target : float
        ``0 < target <= 1``.
    rank : int
        Rank of the operand (only ``rank == 1`` changes the tiling).

    Returns
    -------
    int
        The number of bins (reduction output size); each bin then has ``2^r`` elements.
    """
    n, k, rank = _check_int("n", n), _check_int("k", k), _check_int("rank", rank)
    if not 1 <= k <= n:
        raise ValueError(f"k: expected 1 <= k <= n = {n}, got {k}")
    t = float(np.float32(_check_target(target)))
    tiling = 1024 if rank == 1 else 128

    def log2_ceil(v: int) -> int:
        return 0 if v == 0 else (v - 1).bit_length()

    def log2_floor(v: int) -> int:
        return 0 if v == 0 else v.bit_length() - 1

    if n <= tiling:
        return n
    if k == 1:
        return tiling
    if t == 1.0:
        return n
    m = min(max(int((1.0 - k) / math.log(t)), tiling), n)
    r = log2_floor(n // m)
    if r == 0:
        return n
    r = min(r, log2_ceil(n // tiling))
    chunks = -(-n // tiling)
    return -(-chunks // (1 << r)) * tiling


# --------------------------------------------------------------------------- inversion


def buckets_for_recall(
    n: int, k: int, target: float, *, k_per_bucket: int = 1, model: Model = "exact"
) -> int:
    """Smallest number of buckets ``b`` with ``E[R] >= target``.

    Semantics: the smallest ``b`` in ``[ceil(k / k_b), n]`` whose expected recall under
    ``model`` (see :func:`expected_recall`; assumptions A1 distinct values, A2 random order)
    is at least ``target``. ``E[R]`` is non-decreasing in ``b`` for every ``b`` (uneven
    buckets included; proof in the module docstring and ``docs/recall.md``), so a bisection is
    exact; the answer is verified (``E[R](b) >= target > E[R](b - 1)``) before returning.

    Parameters
    ----------
    n, k : int
        ``1 <= k <= n``.
    target : float
        ``0 < target <= 1``.
    k_per_bucket : int
        ``k_b >= 1``.
    model : {"exact", "binomial", "poisson"}

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If even ``b = n`` misses the target (possible for the binomial and Poisson models,
        which never reach 1 unless ``k_b >= k``).
    """
    n, k = _check_int("n", n), _check_int("k", k)
    kb = _check_int("k_per_bucket", k_per_bucket)
    model = _check_model(model)
    t = _check_target(target)
    lo = -(-k // kb)
    _check_params(n, k, min(max(lo, 1), n), kb)

    def f(b: int) -> float:
        return _expected_recall_one(n, k, b, kb, model)

    if f(n) < t:
        raise ValueError(
            f"target: {t} is not reachable with num_buckets <= n = {n} under model {model!r} "
            f"(E[R] at num_buckets = n is {f(n):.6g})"
        )
    return _bisect(f, lo, n, t, "num_buckets")


def k_per_bucket_for_recall(
    n: int, k: int, target: float, *, num_buckets: int, model: Model = "exact"
) -> int:
    """Smallest ``k_per_bucket`` with ``E[R] >= target`` for a fixed number of buckets.

    Semantics: the smallest ``k_b`` in ``[ceil(k / b), k]`` whose expected recall under
    ``model`` (assumptions A1 distinct values, A2 random order) is at least ``target``;
    ``E[R]`` is non-decreasing in ``k_b`` (``min(x, k_b)`` is), so a bisection is exact, and
    the answer is verified. Under ``"exact"`` recall is 1 at ``k_b = min(k, ceil(n/b))``;
    under the other models at ``k_b = k``.

    Parameters
    ----------
    n, k : int
        ``1 <= k <= n``.
    target : float
        ``0 < target <= 1``.
    num_buckets : int
        ``1 <= b <= n``.
    model : {"exact", "binomial", "poisson"}

    Returns
    -------
    int
    """
    n, k = _check_int("n", n), _check_int("k", k)
    b = _check_int("num_buckets", num_buckets)
    model = _check_model(model)
    t = _check_target(target)
    lo = -(-k // b) if b >= 1 else 1
    _check_params(n, k, b, max(lo, 1))

    def f(kb: int) -> float:
        return _expected_recall_one(n, k, b, kb, model)

    return _bisect(f, lo, k, t, "k_per_bucket")


def _bisect(f, lo: int, hi: int, t: float, name: str) -> int:
    # Smallest v in [lo, hi] with f(v) >= t, f non-decreasing, f(hi) >= t.
    if f(lo) >= t:
        return lo
    a, z = lo, hi  # f(a) < t <= f(z)
    while z - a > 1:
        mid = (a + z) // 2
        if f(mid) >= t:
            z = mid
        else:
            a = mid
    if not (f(z) >= t > f(z - 1)):  # pragma: no cover - guarded by the monotonicity proof
        raise RuntimeError(f"{name}: bisection verification failed at {z}")
    return z


# --------------------------------------------------------------------------- distribution


@dataclass(frozen=True)
class RecallDistribution:
    """Distribution of the recall ``R = K / k`` of one bucketed top-k instance.

    Attributes
    ----------
    mean : float
        ``E[R]``.
    var : float
        ``Var[R] = Var[K] / k^2``.
    pmf : ndarray of float64, shape (k + 1,), or None
        ``pmf[r] = P[K = r]``, the number of true top-k recovered, when computed.
    model : str
    """

    mean: float
    var: float
    pmf: np.ndarray | None = field(repr=False)
    model: str

    @property
    def std(self) -> float:
        """Standard deviation of ``R``."""
        return math.sqrt(max(self.var, 0.0))


def recall_distribution(
    n: int,
    k: int,
    *,
    num_buckets: int,
    k_per_bucket: int = 1,
    model: Literal["exact", "binomial"] = "exact",
    full: bool | None = None,
) -> RecallDistribution:
    """Mean, exact variance and (for small cases) the full distribution of the recall.

    Assumptions: A1 distinct values, A2 random order; ``"exact"``: fixed buckets of the actual
    sizes, ``(X_1..X_b)`` multivariate hypergeometric; ``"binomial"``: placement with
    replacement, ``(X_1..X_b) ~ Multinomial(k; 1/b, ...)`` (arXiv 2412.04358 model).
    The Poisson limit has no joint law consistent with ``sum_j X_j = k`` and is not offered.

    Variance: ``K = sum_j f(X_j)`` with ``f(x) = min(x, k_b)`` (equivalently
    ``K = k - sum_j h(X_j)``, ``h(x) = (x - k_b)^+``; the form with the smaller mean is used so
    near-1 recalls do not cancel). ``Var K = sum_j Var f(X_j) + sum_{i != j} Cov(f(X_i),
    f(X_j))``. The pair term uses the conditional law ``X_j | X_i = x ~ Hyp(n - s_i, k - x,
    s_j)`` (exact) or ``Bin(k - x, 1/(b - 1))`` (binomial); by exchangeability only one pair per
    size-class pair is evaluated. Points with probability below 1e-30 are dropped from the
    double sum.

    Full distribution: a dynamic programme over buckets on the state (top-k positions placed
    so far ``m``, recovered so far ``r``), with ``X_j | m ~ Hyp(n - S_{<j}, k - m, s_j)``
    (exact) or ``Bin(k - m, 1/(b - j))`` (binomial). Cost ``O(b * min(s, k) * k^2)``.

    Parameters
    ----------
    n, k, num_buckets, k_per_bucket : int
        As :func:`expected_recall` (scalars only).
    model : {"exact", "binomial"}
    full : bool or None
        Compute ``pmf``. ``None``: only when the DP costs at most ~3e8 operations.

    Returns
    -------
    RecallDistribution
    """
    n, k = _check_int("n", n), _check_int("k", k)
    b, kb = _check_int("num_buckets", num_buckets), _check_int("k_per_bucket", k_per_bucket)
    if model not in ("exact", "binomial"):
        raise ValueError(f"model: expected 'exact' or 'binomial', got {model!r}")
    _check_params(n, k, b, kb)
    classes = bucket_size_counts(n, b) if model == "exact" else [(n // b, b)]

    def marginal(s: int) -> tuple[np.ndarray, np.ndarray]:
        return _hyp_pmf(n, k, s) if model == "exact" else _binom_pmf(k, 1.0 / b)

    def conditional(s_i: int, x: int, s_j: int) -> tuple[np.ndarray, np.ndarray]:
        if model == "exact":
            return _hyp_pmf(n - s_i, k - x, s_j)
        return _binom_pmf(k - x, 1.0 / (b - 1))

    marg = {s: marginal(s) for s, _ in classes}
    kept = sum(cnt * _min_and_excess(*marg[s], kb)[0] for s, cnt in classes)
    lost = sum(cnt * _min_and_excess(*marg[s], kb)[1] for s, cnt in classes)
    mean = _combine(kept, lost, float(k))
    use_lost = lost <= kept

    def g(x: np.ndarray) -> np.ndarray:
        return np.maximum(x - kb, 0) if use_lost else np.minimum(x, kb)

    e1 = {s: float(np.dot(g(xs), p)) for s, (xs, p) in marg.items()}
    var_k = 0.0
    for s, cnt in classes:
        xs, p = marg[s]
        var_k += cnt * (float(np.dot(g(xs) ** 2.0, p)) - e1[s] ** 2)
    for s_i, c_i in classes:
        xs, p = marg[s_i]
        gx = g(xs).astype(np.float64)
        keep = (p > _PMF_FLOOR) & (gx != 0)
        for s_j, c_j in classes:
            pairs = c_i * (c_i - 1) if s_i == s_j else c_i * c_j
            if pairs == 0:
                continue
            cross = 0.0
            for x, px, gxv in zip(xs[keep], p[keep], gx[keep], strict=True):
                ys, py = conditional(s_i, int(x), s_j)
                cross += px * gxv * float(np.dot(g(ys), py))
            var_k += pairs * (cross - e1[s_i] * e1[s_j])

    pmf = None
    smax = classes[0][0]
    if full or (full is None and b * (min(smax, k) + 1) * (k + 1) ** 2 <= 3e8):
        pmf = _distribution_dp(n, k, b, kb, model)
    return RecallDistribution(mean=mean, var=float(var_k) / k**2, pmf=pmf, model=model)


def _distribution_dp(n: int, k: int, b: int, kb: int, model: str) -> np.ndarray:
    base, rem = divmod(n, b)
    state = np.zeros((k + 1, k + 1))  # state[m, r]: m top-k placed, r recovered
    state[0, 0] = 1.0
    placed_pop = 0
    m = np.arange(k + 1)
    for j in range(b):
        s = base + 1 if j < rem else base
        xmax = min(s, k) if model == "exact" else k
        xs = np.arange(xmax + 1)
        if model == "exact":
            pop = n - placed_pop
            with np.errstate(all="ignore"):
                w = stats.hypergeom.pmf(xs[None, :], pop, (k - m)[:, None], s)
        else:
            p = 1.0 / (b - j)
            with np.errstate(all="ignore"):
                w = stats.binom.pmf(xs[None, :], (k - m)[:, None], p)
        w = np.nan_to_num(w, nan=0.0)
        new = np.zeros_like(state)
        for x in range(xmax + 1):
            dr = min(x, kb)
            new[x:, dr:] += state[: k + 1 - x, : k + 1 - dr] * w[: k + 1 - x, x, None]
        state = new
        placed_pop += s
    pmf = state[k].copy()
    return pmf


# --------------------------------------------------------------------------- simulation

# The simulation compiles with the project's one Numba configuration (``reference``'s public
# njit_serial / njit_parallel: fast-math limited to reassociation and contraction, disk cache
# unless SPARQ_NUMBA_CACHE=0), so the simulated data do not depend on where they compile.
_njit_serial = njit_serial
_njit_parallel = njit_parallel


@dataclass(frozen=True)
class SimulationResult:
    """Monte Carlo estimate of the recall of an approximate top-k (by default the reference
    bucketed top-k, :func:`reference.bucketed_topk`); see :func:`simulate_recall`.

    Attributes
    ----------
    mean : float
        Mean recall over the trials.
    stderr : float
        Standard error of the mean, ``std(recalls, ddof=1) / sqrt(trials)``.
    recalls : ndarray of float64, shape (trials,)
        Recall of each trial.
    """

    mean: float
    stderr: float
    recalls: np.ndarray = field(repr=False)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)

#: counts[t] codes of a trial whose row top-k returned invalid indices
_BAD_RANGE, _BAD_REPEAT = -1, -2


@_njit_serial
def _splitmix64(state):
    # SplitMix64 (Steele, Lea, Flood 2014): one 64-bit output per call; state is uint64[1].
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@_njit_serial
def _uniform_open(state):
    # Uniform on (0, 1): 53 random bits, offset by half a step so log() is finite.
    return (float(_splitmix64(state) >> _S11) + 0.5) * (1.0 / 9007199254740992.0)


@_njit_serial
def _fill_data(x, seed, rho, use_ar):
    # Standard normals by Box-Muller; then, if use_ar, the stationary AR(1)
    # x_0 = e_0, x_i = rho x_{i-1} + sqrt(1 - rho^2) e_i (marginally N(0, 1)).
    n = x.shape[0]
    state = np.empty(1, dtype=np.uint64)
    state[0] = seed
    i = 0
    while i < n:
        r = math.sqrt(-2.0 * math.log(_uniform_open(state)))
        th = 2.0 * math.pi * _uniform_open(state)
        x[i] = r * math.cos(th)
        if i + 1 < n:
            x[i + 1] = r * math.sin(th)
        i += 2
    if use_ar:
        sd = math.sqrt(1.0 - rho * rho)
        for i in range(1, n):
            x[i] = rho * x[i - 1] + sd * x[i]


@_njit_parallel
def _simulate_kernel(n, k, b, kb, interleaved, rho, use_ar, seeds, counts):
    # Built-in bucketed top-k. One trial per prange iteration; each trial draws from its own
    # seed, so the result does not depend on the thread count or schedule.
    for t in prange(seeds.shape[0]):
        x = np.empty(n, dtype=np.float64)
        _fill_data(x, seeds[t], rho, use_ar)
        exact = np.empty(k, dtype=np.int64)
        approx = np.empty(k, dtype=np.int64)
        topk_row(x, k, exact)
        bucketed_topk_row(x, k, b, kb, interleaved, approx)
        mark = np.zeros(n, dtype=np.bool_)
        for i in range(k):
            mark[exact[i]] = True
        c = 0
        for i in range(k):
            if mark[approx[i]]:
                c += 1
        counts[t] = c


@_njit_serial
def _count_hits(n, exact, approx):
    # |exact ∩ approx|, or _BAD_RANGE / _BAD_REPEAT when approx holds an index outside
    # [0, n) or the same index twice (checked before any indexing).
    k = exact.shape[0]
    mark = np.zeros(n, dtype=np.uint8)  # bit 0: in exact; bit 1: seen in approx
    for i in range(k):
        mark[exact[i]] = 1
    c = 0
    for i in range(k):
        j = approx[i]
        if j < 0 or j >= n:
            return _BAD_RANGE
        if mark[j] & 2:
            return _BAD_REPEAT
        c += mark[j] & 1
        mark[j] |= 2
    return c


# Not cached on disk: Numba specialises it on each row_topk (a Dispatcher-typed argument),
# and such specialisations never hit the disk cache.
@njit_parallel(cache=False)
def _simulate_kernel_jitted(n, k, rho, use_ar, seeds, row_topk, counts):
    # A jitted row_topk(x, k, out), called from every thread (as _simulate_kernel).
    for t in prange(seeds.shape[0]):
        x = np.empty(n, dtype=np.float64)
        _fill_data(x, seeds[t], rho, use_ar)
        exact = np.empty(k, dtype=np.int64)
        topk_row(x, k, exact)
        approx = np.full(k, -1, dtype=np.int64)  # an entry left unwritten is out of range
        row_topk(x, k, approx)
        counts[t] = _count_hits(n, exact, approx)


def _simulate_python(n, k, rho, use_ar, seeds, row_topk, counts) -> None:
    # A plain Python row_topk(x, k) -> indices, one trial after another.
    x = np.empty(n, dtype=np.float64)
    exact = np.empty(k, dtype=np.int64)
    for t in range(seeds.shape[0]):
        _fill_data(x, seeds[t], rho, use_ar)
        topk_row(x, k, exact)
        got = np.asarray(row_topk(x, k))
        if got.dtype == np.bool_ or got.dtype.kind not in "iu":
            raise TypeError(
                f"row_topk: expected integer indices, got dtype {got.dtype} (trial {t})"
            )
        if got.shape != (k,):
            raise ValueError(f"row_topk: expected shape ({k},), got {got.shape} (trial {t})")
        counts[t] = _count_hits(n, exact, got.astype(np.int64))  # uint64 >= 2**63 wraps < 0
        if counts[t] < 0:
            return


def simulate_recall(
    n: int,
    k: int,
    *,
    num_buckets: int | None = None,
    k_per_bucket: int = 1,
    interleaved: bool = True,
    trials: int,
    seed: int,
    correlation: float | None = None,
    row_topk: Callable[..., object] | None = None,
) -> SimulationResult:
    """Monte Carlo recall of an approximate row top-k, by default the actual
    :func:`reference.selection.bucketed_topk_row`.

    Each trial draws ``x`` of length ``n`` (i.i.d. standard normal, or a stationary AR(1)
    ``x_i = rho x_{i-1} + sqrt(1 - rho^2) e_i`` when ``correlation = rho``), runs the exact
    top-k (:func:`reference.selection.topk_row`) and the approximate top-k on it, and
    records ``|exact ∩ approx| / k``. With i.i.d. data the top-k positions are a uniform
    k-subset (assumption A2 of :func:`expected_recall`), so the mean of the built-in bucketed
    top-k estimates the ``"exact"`` model; with ``correlation`` A2 fails and contiguous
    buckets (``interleaved=False``) lose recall (the public AR(1) experiment of
    arXiv 2412.04358; see ``docs/recall.md``).

    Numba-parallel over trials (except a plain Python ``row_topk``, run serially). Trial
    ``t`` uses SplitMix64 seeded with the ``t``-th word of
    ``numpy.random.SeedSequence(seed).generate_state(trials, uint64)`` and Box-Muller normals,
    so the data, and the result of a deterministic ``row_topk``, depend only on the arguments
    (not on the thread count or on which ``row_topk`` is simulated).

    Parameters
    ----------
    n, k : int
        Row length and number of indices kept, ``1 <= k <= n``.
    num_buckets, k_per_bucket : int
        As :func:`expected_recall`, for the built-in bucketed top-k only: ``num_buckets`` is
        required with ``row_topk=None`` and must be left out otherwise (``k_per_bucket`` then
        stays 1).
    interleaved : bool
        Bucket layout of the built-in bucketed top-k (must stay True with a ``row_topk``).
    trials : int
        ``>= 2``.
    seed : int
        ``>= 0``.
    correlation : float or None
        AR(1) coefficient ``rho`` with ``-1 < rho < 1``; None for i.i.d. data.
    row_topk : callable or None
        The approximate top-k of one row. None: the built-in
        ``bucketed_topk_row(x, k, num_buckets, k_per_bucket, interleaved, out)``.
        A Numba-jitted function (``numba.njit``) ``row_topk(x, k, out)`` with ``x`` a float64
        array of shape ``(n,)`` (it may overwrite it), ``k`` an int and ``out`` an int64
        array of shape ``(k,)`` (pre-filled with -1) that receives the ``k`` selected
        indices; it is called from several threads at once, so it must only write to ``x``
        and ``out``. Any other callable is called from Python, one trial after another, as
        ``row_topk(x, k)`` and returns the ``k`` indices (an integer array-like of shape
        ``(k,)``). The order of the indices does not matter; an index outside ``[0, n)`` or
        repeated is an error.

    Returns
    -------
    SimulationResult
        ``mean``, ``stderr`` (``std(ddof=1)/sqrt(trials)``) and ``recalls`` of shape
        ``(trials,)``.

    Raises
    ------
    ValueError
        Bad parameters, or ``row_topk`` returned an index outside ``[0, n)``, a repeated
        index, or (Python ``row_topk``) a result not of shape ``(k,)``.
    TypeError
        Arguments of the wrong type, bucket options given with ``row_topk``, or a Python
        ``row_topk`` returning non-integer indices.

    Examples
    --------
    The recall of a top-k that keeps the first ``k`` positions is ``k / n`` on average:

    >>> import numba
    >>> @numba.njit
    ... def first_k(x, k, out):
    ...     for i in range(k):
    ...         out[i] = i
    >>> r = simulate_recall(1000, 50, trials=100, seed=0, row_topk=first_k)
    """
    n, k = _check_int("n", n), _check_int("k", k)
    kb = _check_int("k_per_bucket", k_per_bucket)
    if not isinstance(interleaved, (bool, np.bool_)):
        raise TypeError(f"interleaved: expected a bool, got {interleaved!r}")
    if row_topk is None:
        if num_buckets is None:
            raise TypeError("num_buckets: required with the built-in bucketed top-k")
        b = _check_int("num_buckets", num_buckets)
        _check_params(n, k, b, kb)
    else:
        if not callable(row_topk):
            raise TypeError(f"row_topk: expected a callable or None, got {row_topk!r}")
        if num_buckets is not None or kb != 1 or not interleaved:
            raise TypeError(
                "num_buckets, k_per_bucket, interleaved: options of the built-in bucketed "
                "top-k, not allowed with row_topk"
            )
        _check_params(n, k, n, 1)
    trials, seed = _check_int("trials", trials), _check_int("seed", seed)
    if trials < 2:
        raise ValueError(f"trials: expected trials >= 2, got {trials}")
    if seed < 0:
        raise ValueError(f"seed: expected seed >= 0, got {seed}")
    if correlation is None:
        rho, use_ar = 0.0, False
    else:
        if isinstance(correlation, bool) or not isinstance(
            correlation, (int, float, np.floating, np.integer)
        ):
            raise TypeError(f"correlation: expected a float or None, got {correlation!r}")
        rho, use_ar = float(correlation), True
        if not -1.0 < rho < 1.0:
            raise ValueError(f"correlation: expected -1 < correlation < 1, got {rho}")
    seeds = np.random.SeedSequence(seed).generate_state(trials, dtype=np.uint64)
    counts = np.empty(trials, dtype=np.int64)
    if row_topk is None:
        _simulate_kernel(n, k, b, kb, bool(interleaved), rho, use_ar, seeds, counts)
    else:
        if is_jitted(row_topk):
            _simulate_kernel_jitted(n, k, rho, use_ar, seeds, row_topk, counts)
        else:
            _simulate_python(n, k, rho, use_ar, seeds, row_topk, counts)
        bad = np.flatnonzero(counts < 0)
        if bad.size:
            t = int(bad[0])
            what = "an index outside [0, n)" if counts[t] == _BAD_RANGE else "a repeated index"
            raise ValueError(f"row_topk: returned {what} in trial {t} (n = {n}, k = {k})")
    recalls = counts / k
    return SimulationResult(
        mean=float(recalls.mean()),
        stderr=float(recalls.std(ddof=1) / math.sqrt(trials)),
        recalls=recalls,
    )
