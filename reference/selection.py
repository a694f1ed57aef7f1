"""Exact top-k and bucketed approximate top-k (Key et al. 2024, arXiv 2412.04358, Sec. 2).

Public functions
----------------
:func:`topk`
    Exact top-k along any axis, batched over the other axes.
:func:`bucketed_topk`
    The two-stage bucketed approximate top-k of ``docs/topk.md``: exact top-``k_b``
    of each of ``b`` buckets, then exact top-k of the ``b * k_b`` candidates.
:func:`bucket_params_from_public`
    Maps the public code's ``(j, k_mult)`` parameters to ``(num_buckets, k_per_bucket)``.
:func:`topk_twin`, :func:`bucketed_topk_twin`, :func:`topk_row_twin`
    Slow, obvious NumPy twins (ground truth for the tests).

Row-function contracts used by other kernels (SparQ's selection step, the recall
simulation); both are serial Numba functions callable from other Numba code:

``topk_row(x, k, out)``
    ``x`` is a 1-D float64 array that holds no NaN (±inf allowed), ``0 <= k <= len(x)``.
    Writes into ``out[:k]`` the indices of the k largest entries, ordered by value
    descending and, among equal values, by index ascending.

``bucketed_topk_row(x, k, num_buckets, k_per_bucket, interleaved, out)``
    Same ``x`` and output-order contract as ``topk_row`` (``out[:k]``: value descending,
    index ascending), for the bucketed algorithm; requires
    ``1 <= num_buckets <= len(x)``, ``k_per_bucket >= 1``,
    ``0 <= k <= num_buckets * k_per_bucket`` and ``k <= len(x)``.

Both raise ``ValueError`` when they meet a NaN (the public functions check first).

Conventions (details in ``docs/topk.md``): ranking is by value descending, ties to the
lower index; ``-0.0 == 0.0`` (a tie); NaN is rejected with ``ValueError``; ``sorted=False``
returns exactly what ``sorted=True`` returns; values come back in the input dtype and are
always ``x[indices]`` bit for bit.
"""

from __future__ import annotations

import numbers
from fractions import Fraction

import numpy as np

from reference._checks import as_bool
from reference._selection_args import (
    _as_rows,
    _check_bucket_args,
    _check_int,
    _nrows,
    bucket_sizes,
)
from reference._selection_twin import bucketed_topk_twin, topk_row_twin, topk_twin
from reference._topk_bucketed import (
    _bucketed_kernel,
    _bucketed_kernel_serial,
    bucketed_topk_row,
)
from reference._topk_exact import (
    _topk_kernel,
    _topk_kernel_serial,
    topk_buffer_size,
    topk_row,
    topk_row_into,
    topk_set_into,
)

topk_naive = topk_row_twin  # old name, kept for one release

__all__ = [
    "bucket_params_from_public",
    "bucket_sizes",
    "bucketed_topk",
    "bucketed_topk_row",
    "bucketed_topk_twin",
    "topk",
    "topk_buffer_size",
    "topk_row_twin",
    "topk_naive",  # old name of topk_row_twin, kept for one release
    "topk_row",
    "topk_row_into",
    "topk_set_into",
    "topk_twin",
]


# --------------------------------------------------------------------------------------
# Public API: validation and normalisation. The work is done by the kernels over rows in
# reference._topk_exact and reference._topk_bucketed (which call the serial row
# functions); the pair-sort primitives they share are in reference._pairsort and the NumPy
# twins in reference._selection_twin.
# --------------------------------------------------------------------------------------


def _kernel_key(xm: np.ndarray, largest: bool) -> np.ndarray:
    """(rows, n) C-contiguous array the kernels rank (descending), one of 4 dtypes.

    Exact: float16 -> float32 and narrow ints -> int64 widen without loss; int64 and uint64
    stay as they are (no float round trip, so values beyond 2**53 rank exactly).
    ``largest=False`` ranks ``-x`` (floats) or ``~x`` (ints: ``~x = -x - 1`` is strictly
    decreasing and cannot overflow), so ties still go to the lower index.
    """
    dt = xm.dtype
    n = xm.shape[-1]
    x2 = xm.reshape(_nrows(xm), n)
    if dt.kind == "f":
        kdt = np.float64 if dt.itemsize == 8 else np.float32
    elif dt == np.uint64:
        kdt = np.uint64
    else:
        kdt = np.int64
    key = np.ascontiguousarray(x2, dtype=np.dtype(kdt).newbyteorder("="))
    if not largest:
        key = -key if dt.kind == "f" else np.invert(key)
    return key


def _finish(xm, idx2, k, axis, nan_rows, fname):
    if nan_rows.any():
        r = int(np.flatnonzero(nan_rows)[0])
        raise ValueError(
            f"{fname}: x: expected no NaN, got NaN in row {r} of the {nan_rows.size} rows "
            "along the chosen axis (NaN is rejected; see docs/topk.md)"
        )
    rows = idx2.shape[0]
    values2 = xm.reshape(rows, xm.shape[-1])[np.arange(rows)[:, None], idx2]
    shape = xm.shape[:-1] + (k,)
    values = values2.reshape(shape)
    idx = idx2.reshape(shape)
    if axis == xm.ndim - 1:
        return values, idx
    return np.moveaxis(values, -1, axis), np.moveaxis(idx, -1, axis)


def topk(
    x: np.ndarray, k: int, *, axis: int = -1, largest: bool = True, sorted: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k along ``axis``, batched over all other axes.

    Parameters
    ----------
    x : array_like, shape (..., n, ...)
        Real numeric: float16/32/64 or any integer dtype. NaN is rejected; ±inf allowed.
    k : int
        Number of elements kept, ``0 <= k <= n``.
    axis : int
        Axis to reduce (default last).
    largest : bool
        If True the k largest (value descending), else the k smallest (value ascending).
    sorted : bool
        Accepted for API compatibility; the order returned is always the sorted one
        (identical to ``sorted=True``).

    Returns
    -------
    values : ndarray, shape of ``x`` with ``n`` replaced by ``k``, dtype of ``x``
        ``values == take_along_axis(x, indices, axis)``.
    indices : ndarray of int64, same shape
        Ordered by value (descending if ``largest`` else ascending); among equal values
        the lower index comes first.

    Raises
    ------
    TypeError
        Non-numeric or bool dtype; non-int ``k``/``axis``.
    ValueError
        ``k`` outside ``[0, n]``, ``axis`` out of range, NaN in ``x``.
    """
    xm, axis = _as_rows(x, axis, "topk")
    n = xm.shape[-1]
    k = _check_int("topk: k", k, 0, n, f"0 <= k <= n = {n} (the size of axis {axis})")
    largest = as_bool("topk: largest", largest)
    as_bool("topk: sorted", sorted)
    key = _kernel_key(xm, largest)
    out = np.empty((key.shape[0], k), dtype=np.int64)
    nan_rows = np.zeros(key.shape[0], dtype=np.bool_)
    if key.shape[0] == 1:
        _topk_kernel_serial(key, k, out, nan_rows)
    elif key.shape[0] > 1:
        _topk_kernel(key, k, out, nan_rows)
    return _finish(xm, out, k, axis, nan_rows, "topk")


def bucketed_topk(
    x: np.ndarray,
    k: int,
    *,
    num_buckets: int,
    k_per_bucket: int = 1,
    interleaved: bool = True,
    axis: int = -1,
    sorted: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Bucketed approximate top-k (Key et al. 2024, Sec. 2; ``docs/topk.md``).

    Stage 1: split the n positions into ``b = num_buckets`` buckets without padding (the
    first ``n % b`` hold ``n // b + 1`` elements, the rest ``n // b``), interleaved
    (bucket j = ``{j, j+b, ...}``) or contiguous; take the exact top-``k_b`` of each (a
    bucket smaller than ``k_b`` contributes all its elements). Stage 2: exact top-k of the
    candidates (when there are exactly k candidates they are the answer).

    Parameters
    ----------
    x : array_like, shape (..., n, ...)
        Real numeric (float16/32/64 or integer); NaN rejected; ±inf allowed.
    k : int
        ``0 <= k <= n``.
    num_buckets : int
        ``1 <= b <= n``.
    k_per_bucket : int
        ``k_b >= 1`` with ``b * k_b >= k``.
    interleaved : bool
        Bucket layout (default interleaved).
    axis : int
        Axis to reduce (default last).
    sorted : bool
        Accepted for API compatibility; the output is always sorted.

    Returns
    -------
    values : ndarray, shape of ``x`` with ``n`` replaced by ``k``, dtype of ``x``
    indices : ndarray of int64, same shape
        Value descending, ties to the lower index. Always real positions of ``x``, also
        for buckets that hold only -inf.
    """
    xm, axis = _as_rows(x, axis, "bucketed_topk")
    n = xm.shape[-1]
    k, b, kb = _check_bucket_args("bucketed_topk", n, k, num_buckets, k_per_bucket, axis)
    interleaved = as_bool("bucketed_topk: interleaved", interleaved)
    as_bool("bucketed_topk: sorted", sorted)
    key = _kernel_key(xm, True)
    out = np.empty((key.shape[0], k), dtype=np.int64)
    nan_rows = np.zeros(key.shape[0], dtype=np.bool_)
    if key.shape[0] == 1:
        _bucketed_kernel_serial(key, k, b, kb, bool(interleaved), out, nan_rows)
    elif key.shape[0] > 1:
        _bucketed_kernel(key, k, b, kb, bool(interleaved), out, nan_rows)
    return _finish(xm, out, k, axis, nan_rows, "bucketed_topk")


def bucket_params_from_public(k: int, j: int, k_mult) -> tuple[int, int]:
    """Map the public code's ``(j, k_mult)`` to ``(num_buckets, k_per_bucket)``.

    graphcore-research/pytorch-approx-topk takes ``j`` (elements kept per bucket) and
    ``k_mult`` (candidates per output element), so ``k_b = j`` and
    ``b = k_mult * k / j`` (it requires ``j`` to divide ``k * k_mult``). Conversely
    ``j = k_b`` and ``k_mult = b * k_b / k``.

    Parameters
    ----------
    k : int
        Target k (``>= 1``).
    j : int
        Per-bucket count (``>= 1``).
    k_mult : int, Fraction or float
        ``>= 1`` in the public code; any value making ``k_mult * k / j`` a positive
        integer with ``b * j >= k`` is accepted here.

    Returns
    -------
    (num_buckets, k_per_bucket) : tuple of int
    """
    k = _check_int("bucket_params_from_public: k", k, 1, None, "k >= 1")
    j = _check_int("bucket_params_from_public: j", j, 1, None, "j >= 1")
    if isinstance(k_mult, (bool, np.bool_)) or not isinstance(k_mult, numbers.Real):
        raise TypeError(f"bucket_params_from_public: k_mult: expected a number, got {k_mult!r}")
    if isinstance(k_mult, numbers.Rational):
        k_mult = Fraction(int(k_mult.numerator), int(k_mult.denominator))  # numpy ints: exact
    else:
        k_mult = float(k_mult)  # exact for numpy floats (float16/32/64)
        if not np.isfinite(k_mult):
            raise ValueError(
                f"bucket_params_from_public: k_mult: expected a finite number, got {k_mult}"
            )
    b = Fraction(k_mult) * k / j
    if b.denominator != 1 or b < 1:
        raise ValueError(
            "bucket_params_from_public: k_mult: expected k_mult * k / j to be a positive "
            f"integer, got {k_mult} * {k} / {j} = {b}"
        )
    if int(b) * j < k:
        raise ValueError(f"bucket_params_from_public: k_mult: expected k_mult >= 1, got {k_mult}")
    return int(b), j
