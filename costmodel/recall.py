"""Recall theory of bucketed approximate top-k.

The note ``docs/recall.md`` states every result used here as a proposition with its domain and
proof, and pins the sources; this docstring only summarises it.

Bucketed top-k (Key et al., "Approximate Top-k for Increased Parallelism", arXiv 2412.04358;
public code graphcore-research/pytorch-approx-topk) splits the ``n`` positions into ``b``
buckets (``num_buckets``), keeps the exact top-``k_b`` (``k_per_bucket``) of every bucket,
and then the exact top-``k`` of the ``min(n, b * k_b)`` candidates. Bucket ``j`` holds ``s_j``
positions; without padding the first ``n % b`` buckets hold ``n // b + 1`` positions and the
others ``n // b`` (see ``docs/topk.md``), so only two distinct sizes ever occur.

Domain (every function): integers ``1 <= k <= n``, ``1 <= b <= n``, ``k_b >= 1`` and
``b * k_b >= k``. Any ``k_b >= 1`` is accepted; every ``k_b`` at or above the largest possible
per-bucket count (``min(k, ceil(n / b))`` exact, ``k`` binomial) is the same model.

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
    The paper's model (arXiv 2412.04358; public code ``notebooks/theoretical_models.py``,
    ``recall.model``): each of the higher-ranked elements lands in a given bucket
    independently with probability ``1/b`` (placement with replacement). Equivalently
    ``(X_1..X_b) ~ Multinomial(k, 1/b, ...)``. The ``n -> infinity`` limit of the exact model
    for equal buckets, and a lower bound on it for equal buckets (for uneven buckets the
    ordering is open; ``docs/recall.md``).
``"poisson"``
    The further limit ``k, b -> infinity`` with ``lambda = k / b`` fixed:
    ``E[R] = E[min(Pois(lambda), k_b)] / lambda``. Below 1 for every finite ``k_b``.

Orderings and rates (proved in ``docs/recall.md``): ``binomial >= poisson`` always and
``exact >= binomial`` for equal buckets, by the convex order (Hoeffding 1963, JASA 58, 13-30,
Theorem 4, for sampling without vs with replacement; binomial vs Poisson proved in the note)
and the concavity of ``x -> min(x, k_b)``; ``binomial - poisson <= 1 / (2 b)`` and
``exact - binomial <= (1 - 1/b)(k - 1) / (2 (n - 1))``.

Monotonicity in ``b`` (used by :func:`buckets_for_recall`), proved in ``docs/recall.md``: with
``phi(s) = E[min(Hyp(n, k, s), k_b)]`` one has ``phi(s+1) - phi(s) = (k/n) P[Hyp(n-1, k-1, s) <=
k_b - 1]``, non-increasing in ``s``, so ``phi`` is concave with ``phi(0) = 0``. Because the sizes
are ``q`` and ``q + 1``, ``sum_j phi(s_j) = b * phi~(n / b)`` with ``phi~`` the piecewise-linear
interpolation of ``phi``, so ``E[R](b) = (n/k) * phi~(u) / u`` at ``u = n / b``; a concave
function through the origin has non-increasing chord slope ``phi~(u)/u``, so ``E[R]`` is
non-decreasing in ``b`` for *every* ``b`` (uneven buckets included), not only for ``b | b'``.
The same argument (``d/dp E[min(Bin(k, p), k_b)] = k P[Bin(k-1, p) <= k_b - 1]``) gives
monotonicity for the binomial and Poisson models. Monotonicity in ``k_b`` is immediate.
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

# ------------------------------------------------------------------ limits (docs/recall.md)

#: Every integer argument except ``k_per_bucket`` must fit in int64.
_INT64_MAX = 2**63 - 1

#: A per-bucket count pmf is summed over ``mode +- (_WIN_SD * std + _WIN_PAD)`` only (widened
#: until the neglected tails, bounded rigorously by log-concavity, are below _TAIL_TOL) ...
_WIN_SD, _WIN_PAD, _TAIL_TOL = 12.0, 40, 1e-20
#: ... and that window may hold at most this many points (memory and time ~ 100 B, ~0.1 us
#: per point): a per-bucket count with std above ~1.7e5 is refused.
_PMF_MAX_POINTS = 2**22
#: A bounded support of at most this many points is always summed whole.
_FULL_SUPPORT = 2**16

#: expected_recall: at most this many broadcast elements, and at most _TOTAL_MAX_POINTS pmf
#: points over all distinct argument tuples (each tuple also counts _KEY_COST points).
_MAX_BROADCAST = 2**20
_TOTAL_MAX_POINTS = 2**27
_KEY_COST = 2**9

#: recall_distribution: the pmf DP (estimated time in ns, see _dp_cost: at most 10 s) and
#: the variance's pair sum (X_i support points x (conditional window + _KEY_COST)) are
#: refused above these; full=None computes the pmf only when _dp_ops <= _DP_AUTO_OPS too.
_DP_MAX_COST = 1e10
_DP_AUTO_OPS = 300_000_000
_PAIR_MAX_COST = 2**29

#: simulate_recall: row length, number of trials and total work (trials * per-trial cost,
#: see _sim_trial_cost).
_SIM_MAX_N = 2**22
_SIM_MAX_TRIALS = 2**22
_SIM_MAX_WORK = 2**30
_SIM_BUCKET_COST, _SIM_TRIAL_COST = 100, 512


class _LimitError(ValueError):
    """A documented work/memory limit refused the arguments (docs/recall.md, "Limits")."""


class _UnreachableError(ValueError):
    """An inversion's target exceeds what the model can reach (named with its supremum):
    :func:`buckets_for_recall` when even one bucket per element misses it,
    :func:`k_per_bucket_for_recall` for ``target = 1`` under ``"poisson"``."""


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value: object, *, hi: int | None = _INT64_MAX) -> int:
    """An int (bool, float, ... refused); at most ``hi`` (default: the int64 range)."""
    return check_int(name, value, hi=hi, hi_name="2**63 - 1" if hi == _INT64_MAX else "")


def _as_int_array(name: str, value: object, *, clamp_high: bool = False) -> np.ndarray:
    """``value`` as an int64 array. Values above int64 are refused, or (``clamp_high``, for
    k_per_bucket, where every value >= k means the same) clamped to 2**63 - 1."""
    arr = np.asarray(value)
    if arr.dtype == object:  # Python ints beyond int64 (or junk): checked one by one
        flat = [check_int(name, v) for v in arr.reshape(-1)]
        for v in flat:
            if v < -_INT64_MAX - 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v}")
            if v > _INT64_MAX and not clamp_high:
                raise ValueError(f"{name}: expected an int <= 2**63 - 1 = {_INT64_MAX}, got {v}")
        return np.array([min(v, _INT64_MAX) for v in flat], dtype=np.int64).reshape(arr.shape)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an int or an integer array, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > _INT64_MAX:
        if not clamp_high:
            raise ValueError(
                f"{name}: expected an int <= 2**63 - 1 = {_INT64_MAX}, got {int(arr.max())}"
            )
        arr = np.minimum(arr, np.uint64(_INT64_MAX))
    return arr.astype(np.int64)


def _check_model(model: object, allowed: tuple[str, ...] = MODELS) -> str:
    if not isinstance(model, str) or model not in allowed:
        raise ValueError(f"model: expected one of {allowed}, got {model!r}")
    return model


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


def _as_float(name: str, value: object, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.floating, np.integer)
    ):
        raise TypeError(f"{name}: expected {what}, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float range: out of every range used here
        raise ValueError(f"{name}: expected {what}, got {value!r}") from None


def _check_target(target: object) -> float:
    t = _as_float("target", target, "a float in (0, 1]")
    if not 0.0 < t <= 1.0:  # also NaN
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
    if n < 1:
        raise ValueError(f"n: expected n >= 1, got {n}")
    if not 1 <= b <= n:  # b > n would mean empty buckets (never in these models)
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


def _too_many_points(law: str, sd: float, points: int) -> _LimitError:
    return _LimitError(
        f"k, num_buckets: expected a per-bucket count whose pmf spans at most"
        f" 2**22 = {_PMF_MAX_POINTS} points (mode +- {_WIN_SD:g} std + {_WIN_PAD}), got {points}"
        f" points ({law}, std {sd:.4g}, about sqrt(k / num_buckets)); see docs/recall.md,"
        f" Limits"
    )


def _window_pmf(
    lo: int, hi: int | None, mode: int, sd: float, log_ratio, law: str
) -> tuple[np.ndarray, np.ndarray]:
    """Support window and pmf of a log-concave law on ``lo..hi`` (``hi`` None: unbounded).

    ``log_ratio(xs)`` is ``log(P(x+1)/P(x))`` for an int64 array ``xs``. A support of at most
    ``_FULL_SUPPORT`` = 2**16 points is summed whole (the pmf as it always was); otherwise only
    the points within ``mode +- (_WIN_SD * sd + _WIN_PAD)`` (``sd`` the law's standard
    deviation), at most ``_PMF_MAX_POINTS`` of them, else ``_LimitError``. Log-concavity
    makes the ratios non-increasing, so past a window edge with ratio ``r < 1`` the
    neglected tail is at most
    ``P(edge) r / (1 - r)`` (and its first moment ``P(edge) (edge r/(1-r) + r/(1-r)^2)``);
    the window is doubled until both, relative, are below ``_TAIL_TOL`` = 1e-20."""
    half = math.ceil(_WIN_SD * sd) + _WIN_PAD
    if hi is not None and hi - lo + 1 <= _FULL_SUPPORT:
        half = hi - lo  # small support: summed whole (also the far tails' tiny masses)
    while True:
        a = max(lo, mode - half)
        z = mode + half if hi is None else min(hi, mode + half)
        if z - a + 1 > _PMF_MAX_POINTS:
            raise _too_many_points(law, sd, z - a + 1)
        xs = np.arange(a, z + 1, dtype=np.int64)
        if a == z:
            return xs, np.ones(1)
        xs, p = _from_log_ratios(xs, log_ratio(xs[:-1]))
        mass = moment = 0.0
        ok = True
        if hi is None or z < hi:
            r = math.exp(float(log_ratio(xs[-1:])[0]))  # P(z+1) / P(z)
            ok &= r < 1.0
            if ok:
                g = r / (1.0 - r)
                mass += p[-1] * g
                moment += p[-1] * (z * g + g / (1.0 - r))
        if a > lo:
            r = math.exp(-float(log_ratio(xs[:1] - 1)[0]))  # P(a-1) / P(a)
            ok &= r < 1.0
            if ok:
                mass += p[0] * r / (1.0 - r)
                moment += a * p[0] * r / (1.0 - r)
        if ok and mass <= _TAIL_TOL and moment <= _TAIL_TOL * max(1.0, float(xs @ p)):
            return xs, p
        half *= 2


def _hyp_pmf(pop: int, succ: int, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """Support (window, see :func:`_window_pmf`) and pmf of Hypergeometric(pop, succ, draws)."""
    lo = max(0, draws - (pop - succ))
    hi = min(draws, succ)
    if lo == hi:
        return np.array([lo], dtype=np.int64), np.ones(1)
    mode = min(hi, max(lo, (draws + 1) * (succ + 1) // (pop + 2)))
    q = succ / pop
    sd = math.sqrt(draws * q * (1.0 - q) * ((pop - draws) / max(pop - 1, 1)))
    off = pop - succ - draws + 1

    def lr(xs: np.ndarray) -> np.ndarray:
        # P(x+1)/P(x) = (draws - x)(succ - x) / ((x + 1)(pop - succ - draws + x + 1)); every
        # factor formed exactly in int64, then rounded once to float64.
        return (
            np.log((draws - xs).astype(np.float64))
            + np.log((succ - xs).astype(np.float64))
            - np.log((xs + 1).astype(np.float64))
            - np.log((xs + off).astype(np.float64))
        )

    return _window_pmf(lo, hi, mode, sd, lr, "hypergeometric")


def _binom_pmf(trials: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Support (window) and pmf of Binomial(trials, 1/b)."""
    if b == 1:
        return np.array([trials], dtype=np.int64), np.ones(1)
    if trials == 0:
        return np.zeros(1, dtype=np.int64), np.ones(1)
    p = 1.0 / b
    c = math.log(p) - math.log1p(-p)
    sd = math.sqrt(trials * p * (1.0 - p))

    def lr(xs: np.ndarray) -> np.ndarray:
        # P(x+1)/P(x) = (trials - x) / (x + 1) * p / (1 - p)
        return np.log((trials - xs).astype(np.float64)) - np.log((xs + 1).astype(np.float64)) + c

    return _window_pmf(0, trials, (trials + 1) // b, sd, lr, "binomial")


def _poisson_pmf(k: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Support (window; unbounded law) and pmf of Poisson(k / b)."""
    lam = k / b
    c = math.log(lam)

    def lr(xs: np.ndarray) -> np.ndarray:
        # P(x+1)/P(x) = lam / (x + 1)
        return c - np.log((xs + 1).astype(np.float64))

    return _window_pmf(0, None, k // b, math.sqrt(lam), lr, "Poisson")


def _window_points(n: int, k: int, b: int, kb: int, model: str) -> int:
    """Points :func:`_expected_recall_one` sums (first window of each pmf; an estimate)."""
    xmax = _max_count(n, k, b, model)
    if xmax is not None and kb >= xmax:
        return 0

    def pts(lo: int, hi: int, sd: float) -> int:
        if hi - lo + 1 <= _FULL_SUPPORT:
            return hi - lo + 1
        return min(hi - lo + 1, 2 * (math.ceil(_WIN_SD * sd) + _WIN_PAD) + 1)

    if model == "exact":
        q = k / n
        tot = 0
        for s, _ in bucket_size_counts(n, b):
            sd = math.sqrt(s * q * (1.0 - q) * ((n - s) / max(n - 1, 1)))
            tot += pts(max(0, s - (n - k)), min(s, k), sd)
        return tot
    if model == "binomial":
        return pts(0, k, math.sqrt(k / b * (1.0 - 1.0 / b)))
    return pts(0, _INT64_MAX, math.sqrt(k / b))


def _min_and_excess(xs: np.ndarray, p: np.ndarray, c: int) -> tuple[float, float]:
    """(E[min(X, c)], E[(X - c)^+]) as sums of non-negative terms."""
    c = min(c, int(xs[-1]))  # the same on the support, and fits in int64
    return float(np.dot(np.minimum(xs, c), p)), float(np.dot(np.maximum(xs - c, 0), p))


def _combine(kept: float, lost: float, total: float) -> float:
    # kept + lost = total (sum_j E[X_j] = k). Take the smaller of the two, each a sum of
    # non-negative terms, so the result is accurate to ~eps absolutely and is exactly 1.0
    # when no bucket can overflow.
    if lost <= kept:
        return 1.0 - lost / total
    return kept / total


def _max_count(n: int, k: int, b: int, model: str) -> int | None:
    """Largest possible per-bucket count X_j (None: unbounded, the Poisson limit)."""
    if model == "exact":
        return min(-(-n // b), k)
    return k if model == "binomial" else None


def _count_pmfs(n: int, k: int, b: int, model: str):
    """``([(weight, xs, p), ...], total)``: ``E[R] = sum weight E[min(X, k_b)] / total``."""
    if model == "exact":
        return [(cnt, *_hyp_pmf(n, k, s)) for s, cnt in bucket_size_counts(n, b)], float(k)
    if model == "binomial":
        return [(b, *_binom_pmf(k, b))], float(k)
    return [(1, *_poisson_pmf(k, b))], k / b


def _recall_from_pmfs(pmfs, total: float, kb: int) -> float:
    kept = lost = 0.0
    for w, xs, p in pmfs:
        m, e = _min_and_excess(xs, p, kb)
        kept += w * m
        lost += w * e
    return _combine(kept, lost, total)


def _expected_recall_one(n: int, k: int, b: int, kb: int, model: str) -> float:
    xmax = _max_count(n, k, b, model)
    if xmax is not None and kb >= xmax:
        return 1.0  # no bucket can overflow (what the sums give too, exactly: lost = 0)
    return _recall_from_pmfs(*_count_pmfs(n, k, b, model), kb)


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
    ``R = (1/k) sum_j min(X_j, k_b)`` (``docs/recall.md``, Proposition 1), so
    ``E[R] = (1/k) sum_j E[min(X_j, k_b)]``.

    * ``"exact"``: ``X_j ~ Hypergeometric(n, k, s_j)`` with the actual sizes ``s_j`` (first
      ``n % b`` buckets of size ``n // b + 1``, the rest ``n // b``); grouped by the two sizes.
      Exact under A1 + A2; for equal buckets it is Theorem 1 of Samaga et al.
      (arXiv 2506.04165v2), ``1 - (b/k) E[(X - k_b)^+]``. Equals the rank-wise form
      ``(1/k) sum_{i<k} P[H_i <= k_b - 1]``, ``H_i ~ Hyp(n-1, s-1, i)``, for equal buckets
      (any ``k_b >= 1``).
    * ``"binomial"``: arXiv 2412.04358, its expected-recall formula (``docs/recall.md``)
      ``E[R] = (min(k_b, k) + sum_{i=k_b}^{k-1} BinomCDF(k_b - 1; i, 1/b)) / k``, computed in
      the equivalent bucket form ``(b/k) E[min(Bin(k, 1/b), k_b)]`` (the published rank-wise
      form has ``k_b`` where ``min(k_b, k)`` stands: the two agree for ``k_b <= k``; for
      ``k_b > k`` it would give ``k_b / k > 1``). Assumes placement *with
      replacement* (each higher-ranked element in a given bucket w.p. ``1/b`` independently),
      i.e. ``n -> infinity``; ignores ``n`` (validated only). A lower bound on ``"exact"``
      for equal buckets.
    * ``"poisson"``: ``k, b -> infinity``, ``lambda = k/b``:
      ``E[R] = E[min(Pois(lambda), k_b)] / lambda``; depends only on ``k_b`` and
      ``b k_b / k``. A lower bound on ``"binomial"``, below 1 for every finite ``k_b``.

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
        ``1 <= num_buckets <= n``, ``k_per_bucket >= 1``, ``num_buckets * k_per_bucket >= k``;
        ``n`` (hence ``k``, ``num_buckets``) at most ``2**63 - 1``. ``k_per_bucket`` may be
        any larger int (every ``k_b`` at or above the largest possible count means the same).
    model : {"exact", "binomial", "poisson"}

    Returns
    -------
    float or ndarray of float64
        A float when every argument is a scalar, else an array of the broadcast shape.

    Raises
    ------
    ValueError
        Bad arguments, or a work limit (``docs/recall.md``, "Limits"): at most 2**20
        broadcast elements; a per-bucket count pmf is summed over at most 2**22 points
        (its mode +- 12 standard deviations, neglected tails < 1e-20 relative), so a count
        with standard deviation above ~1.7e5 (about ``sqrt(k / num_buckets)``) is refused
        unless ``k_b`` is at least the largest possible count (recall exactly 1); at most
        2**27 pmf points over all distinct argument tuples.
    TypeError
        Non-integer arguments.
    """
    model = _check_model(model)
    args = {
        "n": _as_int_array("n", n),
        "k": _as_int_array("k", k),
        "num_buckets": _as_int_array("num_buckets", num_buckets),
        "k_per_bucket": _as_int_array("k_per_bucket", k_per_bucket, clamp_high=True),
    }
    try:
        shape = np.broadcast_shapes(*(v.shape for v in args.values()))
    except ValueError as exc:
        shapes = ", ".join(f"{key} {v.shape}" for key, v in args.items())
        raise ValueError(f"arguments: shapes do not broadcast: {shapes}") from exc
    size = math.prod(shape)
    if size > _MAX_BROADCAST:
        raise _LimitError(
            f"arguments: expected a broadcast size <= 2**20 = {_MAX_BROADCAST}, got shape"
            f" {shape} ({size} elements); see docs/recall.md, Limits"
        )
    bn, bk, bb, bkb = np.broadcast_arrays(*args.values())
    # Validate every distinct tuple and bound the total work before computing any.
    keys: dict[tuple[int, int, int, int], float] = {}
    for idx in np.ndindex(shape):
        keys.setdefault((int(bn[idx]), int(bk[idx]), int(bb[idx]), int(bkb[idx])), 0.0)
    work = 0
    for key in keys:
        _check_params(*key)
        work += _window_points(*key, model) + _KEY_COST
    if work > _TOTAL_MAX_POINTS:
        raise _LimitError(
            f"arguments: expected at most 2**27 = {_TOTAL_MAX_POINTS} pmf points in all, got"
            f" {work} over {len(keys)} distinct (n, k, num_buckets, k_per_bucket); see"
            f" docs/recall.md, Limits"
        )
    for key in keys:
        keys[key] = _expected_recall_one(*key, model)
    out = np.empty(shape, dtype=np.float64)
    for idx in np.ndindex(shape):
        out[idx] = keys[(int(bn[idx]), int(bk[idx]), int(bb[idx]), int(bkb[idx]))]
    if out.ndim == 0:
        return float(out)
    return out


# --------------------------------------------------------------------------- k_b = 1 forms


def expected_recall_kb1(n: int, k: int, *, num_buckets: int) -> float:
    """Exact expected recall for ``k_b = 1``, closed form.

    ``E[R] = (1/k) sum_j (1 - C(n - s_j, k) / C(n, k))`` (a bucket yields a true top-k element
    iff it holds at least one). For equal buckets ``s = n/b`` this is
    ``(b/k)(1 - C(n-s, k)/C(n, k))``; here generalised to the two uneven sizes.
    Assumptions: A1 distinct values, A2 random order (uniform k-subset).
    ``C(n-s,k)/C(n,k) = prod_{i<k} (1 - s/(n-i))`` is summed in log space with ``log1p``
    for ``k <= 2**20``; beyond, with work independent of ``k`` (no ``k``-sized array): the
    same product over ``min(k, s)`` factors, exact underflow to 0 when ``k s > 800 n``, else
    Euler-Maclaurin with a checked remainder below 1e-15 (``_log_p_empty``).

    Parameters
    ----------
    n, k, num_buckets : int
        ``1 <= k <= n <= 2**63 - 1``, ``k <= num_buckets <= n``.

    Returns
    -------
    float
    """
    n, k, b = _check_int("n", n), _check_int("k", k), _check_int("num_buckets", num_buckets)
    _check_params(n, k, b, 1)
    total = 0.0
    for s, cnt in bucket_size_counts(n, b):
        total += cnt * (1.0 - math.exp(_log_p_empty(n, k, s)))
    return total / k


#: Products of at most this many factors are summed term by term (in log1p).
_DIRECT_TERMS = 2**20


def _psi(y: float) -> float:
    """``y + (1 - y) log(1 - y) = sum_{j >= 2} y^j / (j (j - 1))``, for ``0 <= y < 1``."""
    if y < 1e-2:  # series: terms fall by >= 100x, 10 terms reach 1e-20 relative
        return sum(y**j / (j * (j - 1)) for j in range(11, 1, -1))
    return y + (1.0 - y) * math.log1p(-y)


def _log_p_empty(n: int, k: int, s: int) -> float:
    """``log(C(n - s, k) / C(n, k))`` (a bucket of ``s`` holds none of the top ``k``), with
    work bounded independently of ``k`` and ``s``.

    ``C(n-s, k)/C(n, k) = prod_{i<k} (1 - s/(n-i)) = prod_{i<s} (1 - k/(n-i))`` (the same
    hypergeometric P[X = 0] with draws and successes swapped). Routes:

    * ``k <= 2**20``: the first product term by term (log1p), as always;
    * ``min(k, s) <= 2**20``: the product over ``min(k, s)`` factors, term by term;
    * ``k s > 800 n``: every factor is ``<= 1 - max(k, s)/n``, so the product is
      ``<= exp(-k s/n) < e^-800``, which is 0 in float64 (below the smallest subnormal):
      returns -inf;
    * otherwise (``A = min(k, s) > 2**20`` in each of ``M = max(k, s)`` factors, far from the
      pole: ``n - M - A >= 1300 M``): Euler-Maclaurin for ``sum_{i<M} g(i)``,
      ``g(t) = log(1 - A/(n-t))``: the integral in closed form
      ``phi(n) - phi(n-M) + A log1p(-M/n)`` with ``phi(u) = u psi(A/u)``, plus the end
      corrections ``(g(0) - g(M))/2`` and ``(g'(M) - g'(0))/12``. Every derivative of ``g``
      has one sign and is monotone, so the neglected terms are below
      ``(1/720 + 2 zeta(4)/(2 pi)^4) |g3(M) - g3(0)|`` (``g3`` the third derivative),
      checked to be < 1e-15 (it is ~1e-30 on this route).
    """
    if n - s < k:
        return -math.inf
    if k <= _DIRECT_TERMS:
        i = np.arange(k, dtype=np.float64)
        return float(np.sum(np.log1p(-s / (n - i))))
    a, m = min(k, s), max(k, s)
    if a <= _DIRECT_TERMS:
        i = np.arange(a, dtype=np.float64)
        return float(np.sum(np.log1p(-m / (n - i))))
    if a * m > 800 * n:  # (never for k_b = 1 inputs, where k <= b gives k s < 2 n)
        return -math.inf

    def phi(u: int) -> float:
        return u * _psi(a / u)

    def g1(u: int) -> float:  # first derivative of g at u = n - t
        return -a / (u * float(u - a))

    def g3(u: int) -> float:  # third derivative of g at u = n - t
        return -2.0 * (float(u - a) ** -3 - float(u) ** -3)

    integral = (phi(n) - phi(n - m)) + a * math.log1p(-m / n)
    ends = 0.5 * (math.log1p(-a / n) - math.log1p(-a / (n - m)))
    d1 = (g1(n - m) - g1(n)) / 12.0
    err = (1.0 / 720.0 + 2.0 * 1.0823232337111382 / (2.0 * math.pi) ** 4) * abs(g3(n - m) - g3(n))
    if not err < 1e-15:  # pragma: no cover - excluded by n - M - A >= 1300 M above
        raise RuntimeError(f"_log_p_empty: Euler-Maclaurin remainder {err:.3g} too large")
    return integral + ends + d1


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
    exact model (equal *and* uneven unpadded buckets; ``docs/recall.md``, Proposition 7).
    Assumptions: A1 distinct values, A2 random order. Holds for the exact and binomial models.

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
    """The TPU-KNN / XLA recall model ``(1 - 1/M)^(k - 1)`` for ``M`` bins and ``k_b = 1``.

    Chern et al., "TPU-KNN" (NeurIPS 2022, arXiv 2206.14286), as used by XLA's
    ``ApproxTopKReductionOutputSize`` (which writes ``K`` for our ``k``; its ``M`` bins are
    buckets with ``k_b = 1``, ``b = M``): the probability that a given true top-k element shares
    its bin with none of the other ``k - 1`` (placement with replacement). Every such element
    is recovered, so it is a lower bound on the binomial-model recall with ``k_b = 1``; for
    ``k <= M <= n`` it is also a lower bound on the exact recall, by the proved chain
    ``exact >= 1 - (k-1) p_2 / 2 >= 1 - (k-1)/(2M) >= exp(-(k-1)/M) >= (1 - 1/M)^(k-1)``
    (``docs/recall.md``, Proposition 8).
    Assumptions: A1 distinct values, A2 random order, placement with replacement.

    Parameters
    ----------
    k : int
        ``k >= 1``.
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
    """Number of bins of the TPU-KNN / XLA sizing rule, ``M = ceil((1 - k) / ln(target))``.

    From ``(1 - 1/M)^(k-1) ~= exp((1 - k)/M) >= target`` (arXiv 2206.14286; XLA
    ``ApproxTopKReductionOutputSize``, whose comment derives ``M = (1 - K)/LOG(recall)`` with
    its ``K`` our ``k``). This returns the smallest integer ``M`` meeting the *exponential*
    form, ``max(1, ceil(...))``. XLA itself truncates instead of rounding up and then clamps and
    rounds to power-of-two windows: see :func:`xla_reduction_output_size`. Because
    ``(1-1/M)^(k-1) < exp((1-k)/M)``, :func:`expected_recall_xla` at this ``M`` can be slightly
    below ``target``; the exact recall with ``b = M`` buckets is not: for ``k <= M <= n`` it is
    at least ``1 - (k-1)/(2M) >= exp(-(k-1)/M) >= target`` (proved in ``docs/recall.md``), and
    in practice far above, which is why XLA's bin counts are conservative.
    Assumptions: A1, A2, ``k_b = 1``.

    Parameters
    ----------
    k : int
        ``k >= 1``.
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
    (openxla/xla ``xla/client/lib/approx_topk_shape.cc`` at commit 16569562fc04; later moved
    to ``xla/hlo/builder/lib/``): tiling ``T = 1024`` for rank-1 operands, 128 otherwise;
    ``n <= T`` -> ``n``; ``k = 1`` -> ``T``; ``target = 1`` -> ``n``; otherwise
    ``m = clamp(trunc((1 - k)/ln(target)), T, n)``, ``r = floor(log2(n // m))`` (``r = 0`` ->
    ``n``), ``r = min(r, ceil(log2(n // T)))``, output ``ceil(ceil(n / T) / 2^r) * T``.
    ``target`` is rounded to float32 first, as XLA's argument is a C++ ``float``.

    Parameters
    ----------
    n, k : int
        Input size and the number of top elements (XLA's ``K``); ``1 <= k <= n``.
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
    if n < 1:
        raise ValueError(f"n: expected n >= 1, got {n}")
    if not 1 <= k <= n:
        raise ValueError(f"k: expected 1 <= k <= n = {n}, got {k}")
    if rank < 1:
        raise ValueError(
            f"rank: expected rank >= 1 (an operand with an axis to reduce), got {rank}"
        )
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
    # A target below float32's smallest subnormal rounds to 0: log(0) = -inf in C++, so the
    # quotient is 0 and the clamp gives the tiling.
    m = min(max(int((1.0 - k) / math.log(t)) if t > 0.0 else 0, tiling), n)
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
    buckets included; proof in the module docstring and ``docs/recall.md``, Proposition 9), so
    a bisection is exact; the answer is verified (``E[R](b) >= target > E[R](b - 1)``) before
    returning.

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
        If even ``b = n`` misses the target, checked before the search: the message names the
        model and the supremum of ``E[R]`` over the range, attained at ``b = n`` (by the
        monotonicity). ``"exact"`` always reaches 1 at ``b = n``; ``"binomial"`` at ``b = n``
        (``n >= 2``) is below 1 iff ``k_b < k``; ``"poisson"`` is below 1 for every ``b``
        and ``k_b`` (``docs/recall.md``, Proposition 4).
    """
    n, k = _check_int("n", n), _check_int("k", k)
    kb = _check_int("k_per_bucket", k_per_bucket, hi=None)
    model = _check_model(model)
    t = _check_target(target)
    if kb < 1:
        raise ValueError(f"k_per_bucket: expected k_per_bucket >= 1, got {kb}")
    lo = -(-k // kb)
    _check_params(n, k, min(max(lo, 1), n), kb)

    def f(b: int) -> float:
        return _expected_recall_one(n, k, b, kb, model)

    sup = f(n)  # E[R] is non-decreasing in b: its supremum over [lo, n] is E[R](n)
    if sup < t:
        raise _UnreachableError(
            f"target: {t} is not reachable with num_buckets <= n = {n} under model {model!r}"
            f" (supremum of E[R] over num_buckets in [{lo}, {n}]: {sup:.6g}, at num_buckets = n)"
        )
    return _bisect(f, lo, n, t, "num_buckets")


def k_per_bucket_for_recall(
    n: int, k: int, target: float, *, num_buckets: int, model: Model = "exact"
) -> int:
    """Smallest ``k_per_bucket`` with ``E[R] >= target`` for a fixed number of buckets.

    Semantics: the smallest ``k_b >= ceil(k / b)`` whose expected recall under ``model``
    (assumptions A1 distinct values, A2 random order) is at least ``target``; ``E[R]`` is
    non-decreasing in ``k_b`` (``min(x, k_b)`` is), so a bisection is exact, and the answer is
    verified. Reachability is checked first: under ``"exact"`` recall is 1 at
    ``k_b = min(k, ceil(n/b))`` and under ``"binomial"`` at ``k_b = k``, so every target in
    ``(0, 1]`` is reached within ``[ceil(k / b), k]``. The Poisson limit has unbounded counts:
    its recall is below 1 for *every* ``k_b`` (supremum 1, not attained), so ``target = 1``
    is refused (``ValueError`` naming the model and the supremum), and a target below 1 may
    need ``k_b > k`` (``k = b = k_b = 2`` gives ``2 - 3/e = 0.8964``): the range is extended
    by doubling ``k_b`` until the computed ``E[R]`` reaches ``target`` (it ends: the computed
    recall is exactly 1.0 once ``k_b`` passes the summed window of the Poisson pmf).

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

    Raises
    ------
    ValueError
        Bad arguments, or ``target = 1`` under ``"poisson"`` (not reachable: the supremum 1
        is not attained).
    """
    n, k = _check_int("n", n), _check_int("k", k)
    b = _check_int("num_buckets", num_buckets)
    model = _check_model(model)
    t = _check_target(target)
    lo = -(-k // b) if b >= 1 else 1
    _check_params(n, k, b, max(lo, 1))

    xmax = _max_count(n, k, b, model)
    if xmax is None and t >= 1.0:  # Poisson: E[R] < 1 for every finite k_b
        raise _UnreachableError(
            f"target: {t} is not reachable under model {model!r} (supremum of E[R] over"
            f" k_per_bucket >= {lo}: 1, not attained: P[Pois(k / num_buckets) > k_per_bucket]"
            f" > 0 for every k_per_bucket)"
        )
    pmfs: list = []  # the count pmfs do not depend on k_b: built once, on first use

    def f(kb: int) -> float:
        if xmax is not None and kb >= xmax:
            return 1.0
        if not pmfs:
            pmfs.append(_count_pmfs(n, k, b, model))
        return _recall_from_pmfs(*pmfs[0], kb)

    hi = k
    while f(hi) < t:  # only under "poisson" (t < 1); ends at the latest once hi passes the
        # pmf window, where the computed f is exactly 1.0
        hi *= 2
    return _bisect(f, lo, hi, t, "k_per_bucket")


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
        Compute ``pmf``. ``None``: only when the DP costs at most ~3e8 operations
        (``b (min(s, k) + 1) (k + 1)^2``) and its estimated time is below 10 s. ``True``
        refuses (``ValueError`` naming ``full``) a DP estimated above 10 s.

    Raises
    ------
    ValueError
        Bad arguments, or a work limit (``docs/recall.md``, "Limits"): the marginal pmfs as
        in :func:`expected_recall`, the variance's pair sum at most 2**29 pmf points, the DP
        (``full=True``) at most ~10 s.

    Returns
    -------
    RecallDistribution
    """
    n, k = _check_int("n", n), _check_int("k", k)
    b = _check_int("num_buckets", num_buckets)
    kb = _check_int("k_per_bucket", k_per_bucket, hi=None)
    model = _check_model(model, ("exact", "binomial"))
    if full is not None and not isinstance(full, (bool, np.bool_)):
        raise TypeError(f"full: expected a bool or None, got {full!r}")
    _check_params(n, k, b, kb)
    kb = min(kb, k)  # every X_j <= k, so min(X_j, k_b) is unchanged
    dp_cost = _dp_cost(n, k, b, model)
    if full and dp_cost > _DP_MAX_COST:
        raise _LimitError(
            f"full: expected a pmf DP estimated at <= {_DP_MAX_COST / 1e9:g} s, got"
            f" {dp_cost / 1e9:.3g} s (about num_buckets * (min(n / num_buckets, k) + 1) *"
            f" (k + 1)^2 * 1.5 ns; n = {n}, k = {k}, num_buckets = {b}); see docs/recall.md,"
            f" Limits"
        )
    auto = full is None and dp_cost <= _DP_MAX_COST and _dp_ops(n, k, b) <= _DP_AUTO_OPS
    classes = bucket_size_counts(n, b) if model == "exact" else [(n // b, b)]
    if kb >= _max_count(n, k, b, model):  # no bucket can overflow: K = k surely
        pmf = _distribution_dp(n, k, b, kb, model) if full or auto else None
        return RecallDistribution(mean=1.0, var=0.0, pmf=pmf, model=model)

    def marginal(s: int) -> tuple[np.ndarray, np.ndarray]:
        return _hyp_pmf(n, k, s) if model == "exact" else _binom_pmf(k, b)

    def conditional(s_i: int, x: int, s_j: int) -> tuple[np.ndarray, np.ndarray]:
        if model == "exact":
            return _hyp_pmf(n - s_i, k - x, s_j)
        return _binom_pmf(k - x, b - 1)

    marg = {s: marginal(s) for s, _ in classes}
    pair_cost = 0
    for s_i, c_i in classes:
        n_x = int(np.count_nonzero(marg[s_i][1] > _PMF_FLOOR))
        for s_j, c_j in classes:
            if (c_i * (c_i - 1) if s_i == s_j else c_i * c_j) > 0:
                pair_cost += n_x * (marg[s_j][0].size + _KEY_COST)
    if pair_cost > _PAIR_MAX_COST:
        raise _LimitError(
            f"k, num_buckets: expected the variance's pair sum to cost at most 2**29 ="
            f" {_PAIR_MAX_COST} pmf points, got {pair_cost} (it grows as the square of the"
            f" std of the per-bucket count, about k / num_buckets); see docs/recall.md, Limits"
        )
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
    if full or auto:
        pmf = _distribution_dp(n, k, b, kb, model)
    return RecallDistribution(mean=mean, var=float(var_k) / k**2, pmf=pmf, model=model)


def _dp_ops(n: int, k: int, b: int) -> int:
    """The DP's flop count as ``full=None`` has always estimated it, ``b (min(s, k) + 1)
    (k + 1)^2``: the pmf is computed automatically when this is <= 3e8 (and the time bound
    below holds)."""
    return b * (min(-(-n // b), k) + 1) * (k + 1) ** 2


def _dp_cost(n: int, k: int, b: int, model: str) -> float:
    """Estimated time of :func:`_distribution_dp` in ns on the 2-core development box: per
    bucket, ``xmax + 1`` slice updates of the ``(k+1)^2`` state (measured 0.9 ns per element
    and 2.3 us per slice), plus ``k + 1`` hypergeometric rows (exact; 12-15 us each) or a
    ``(k+1)^2`` scipy binomial pmf table (binomial; 31 ns per entry, ~20 us per call).
    Rounded up: 1.5 ns, 3 us, 15 us + 20 ns per point, 40 ns and 30 us."""
    xmax = min(-(-n // b), k) if model == "exact" else k
    slices = (xmax + 1) * (1.5 * (k + 1) ** 2 + 3000.0)
    if model == "exact":
        return b * (slices + (k + 1) * (15000.0 + 20.0 * (xmax + 1)))
    return b * (slices + 40.0 * (k + 1) ** 2 + 30000.0)


def _hyp_rows(pop: int, k: int, s: int, xmax: int) -> np.ndarray:
    """``w[m, x] = P[Hyp(pop, k - m, s) = x]`` for ``m <= k``, ``x <= xmax`` (0 where
    ``k - m > pop``, a state the DP never reaches), from :func:`_hyp_pmf` (exact ratios;
    scipy's hypergeom is slow and inexact for a huge population)."""
    w = np.zeros((k + 1, xmax + 1))
    for m in range(k + 1):
        if k - m <= pop:
            xs, p = _hyp_pmf(pop, k - m, s)
            w[m, xs] = p
    return w


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
            w = _hyp_rows(n - placed_pop, k, s, xmax)
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


def _check_simulation(
    n, k, *, num_buckets, k_per_bucket, interleaved, trials, seed, correlation, row_topk
) -> tuple[int, int, int, int, int, int, float]:
    """Validate :func:`simulate_recall`'s arguments (also used by ``sparq recall`` up front);
    return ``(n, k, b, kb, trials, seed, rho)`` with ``kb`` reduced to ``min(kb, largest
    bucket, k)``, which selects exactly the same indices (see :func:`simulate_recall`)."""
    n, k = _check_int("n", n), _check_int("k", k)
    kb = _check_int("k_per_bucket", k_per_bucket, hi=None)
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
        b = n
    trials, seed = _check_int("trials", trials), _check_int("seed", seed, hi=None)
    if trials < 2:
        raise ValueError(f"trials: expected trials >= 2, got {trials}")
    if seed < 0:
        raise ValueError(f"seed: expected seed >= 0, got {seed}")
    rho = 0.0
    if correlation is not None:
        rho = _as_float("correlation", correlation, "a float in (-1, 1) or None")
        if not -1.0 < rho < 1.0:
            raise ValueError(f"correlation: expected -1 < correlation < 1, got {rho}")
    if n > _SIM_MAX_N:
        raise _LimitError(
            f"n: expected n <= 2**22 = {_SIM_MAX_N} for simulation (each trial holds the row"
            f" and its top-k buffers, ~9 to ~80 bytes per element, on every thread), got {n};"
            f" see docs/recall.md, Limits"
        )
    if trials > _SIM_MAX_TRIALS:
        raise _LimitError(
            f"trials: expected trials <= 2**22 = {_SIM_MAX_TRIALS}, got {trials}; see"
            f" docs/recall.md, Limits"
        )
    # A bucket of size s keeps min(s, kb) elements, and no bucket holds more than k of the
    # final top k, so kb -> min(kb, largest bucket, k) keeps every true top-k element it kept
    # before and the final top-k (by the same value-then-index order) is the same set.
    kb = min(kb, -(-n // b), k)
    per_trial = _sim_trial_cost(n, k, b, kb)
    if trials * per_trial > _SIM_MAX_WORK:
        raise _LimitError(
            f"trials: expected trials * (n + k log2(k) / 2 + {_SIM_BUCKET_COST} num_buckets"
            f" [if k_per_bucket > 1] + {_SIM_TRIAL_COST}) <= 2**30 = {_SIM_MAX_WORK}"
            f" (simulation work, ~25 ns each on 2 cores), got {trials} * {per_trial} ="
            f" {trials * per_trial}; see docs/recall.md, Limits"
        )
    return n, k, b, kb, trials, seed, rho


def _sim_trial_cost(n: int, k: int, b: int, kb: int) -> int:
    """Work units (~25 ns of wall time on the 2-core development box) of one trial: the row,
    sorting the top k, and per-bucket selection when k_b > 1, plus fixed overhead (measured:
    22-31 ns per element; 5.4 us for n = 64; 29-42 us for n = 234, k = 58, b = k_b = 8; per
    trial with k_b > 1, n = 1500, k = 96, b = 192: 0.19-0.35 ms, estimate 0.54 ms; n = 4096,
    k = 64, b = 2048: 0.13 ms, estimate 5.2 ms; n = 65536, k = 1024, b = 1024, k_b = 4:
    1.8 ms, estimate 4.4 ms). The per-bucket term was 400 units, which refused a row of the
    docs' own table (n = 1500, k = 96, b = 192, k_b = 2, 20000 trials: ~4-7 s measured)."""
    return n + (k * k.bit_length()) // 2 + (_SIM_BUCKET_COST * b if kb > 1 else 0) + _SIM_TRIAL_COST


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
        Row length and number of indices kept, ``1 <= k <= n <= 2**22`` (each trial holds
        the row and its top-k buffers on every thread: ~9 to ~80 bytes per element).
    num_buckets, k_per_bucket : int
        As :func:`expected_recall`, for the built-in bucketed top-k only: ``num_buckets`` is
        required with ``row_topk=None`` and must be left out otherwise (``k_per_bucket`` then
        stays 1). Any ``k_per_bucket >= 1`` is accepted: it is reduced to
        ``min(k_per_bucket, largest bucket, k)`` before the kernel runs, which selects the
        same indices (a bucket of size ``s`` keeps ``min(s, k_b)`` elements, and no bucket
        holds more than ``k`` of the final top-k).
    interleaved : bool
        Bucket layout of the built-in bucketed top-k (must stay True with a ``row_topk``).
    trials : int
        ``>= 2``; at most 2**22, and ``trials * (n + k log2(k)/2 + 100 num_buckets [k_b > 1]
        + 512) <= 2**30`` (about 30 s on 2 cores; ``docs/recall.md``, "Limits").
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
    n, k, b, kb, trials, seed, rho = _check_simulation(
        n,
        k,
        num_buckets=num_buckets,
        k_per_bucket=k_per_bucket,
        interleaved=interleaved,
        trials=trials,
        seed=seed,
        correlation=correlation,
        row_topk=row_topk,
    )
    use_ar = correlation is not None
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
