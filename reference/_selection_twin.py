"""Float64 NumPy twins of the top-k functions (slow, obvious; the ground truth of the tests).

:func:`topk_row_twin` (one row), :func:`topk_twin` and :func:`bucketed_topk_twin` (batched,
same argument checks and conventions as :func:`reference.selection.topk` and
:func:`reference.selection.bucketed_topk`); all re-exported by :mod:`reference.selection`.
No Numba: a full ``np.lexsort`` per row (per bucket) by (value desc, index asc).
"""

from __future__ import annotations

import numpy as np

from reference._checks import as_bool
from reference._selection_args import (
    _as_rows,
    _check_bucket_args,
    _check_int,
    _nrows,
    bucket_sizes,
)


def topk_row_twin(x: np.ndarray, k: int) -> np.ndarray:
    """NumPy twin of :func:`topk_row` for a 1-D array: a stable sort by (value desc, index
    asc). Floats compare in float64 (exact for float16/32/64), integers as integers (exact
    beyond 2^53)."""
    return _twin_order(_twin_key(np.asarray(x)), True)[:k]


def _twin_key(row: np.ndarray) -> np.ndarray:
    # Floats compare in float64 (exact for float16/32/64); integers stay integers.
    if row.dtype.kind == "f":
        return row.astype(np.float64)
    return row.astype(np.uint64 if row.dtype == np.uint64 else np.int64)


def _twin_order(key: np.ndarray, largest: bool) -> np.ndarray:
    # All positions ranked: by value (desc if largest), ties to the lower index.
    pos = np.arange(key.shape[0])
    if largest:
        # (value desc, index asc) is the reverse of (value asc, index desc).
        return np.lexsort((-pos, key))[::-1].astype(np.int64)
    return np.lexsort((pos, key)).astype(np.int64)


def _twin_rows(x, axis, fname):
    xm, axis = _as_rows(x, axis, fname)
    rows = xm.reshape(_nrows(xm), xm.shape[-1])
    if xm.dtype.kind == "f" and np.isnan(xm).any():
        raise ValueError(f"{fname}: x: expected no NaN, got NaN")
    return xm, axis, rows


def topk_twin(
    x: np.ndarray, k: int, *, axis: int = -1, largest: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Slow NumPy twin of :func:`topk` (full lexsort per row; same conventions)."""
    xm, axis, rows = _twin_rows(x, axis, "topk_twin")
    n = xm.shape[-1]
    k = _check_int("topk_twin: k", k, 0, n, f"0 <= k <= n = {n}")
    largest = as_bool("topk_twin: largest", largest)
    idx = np.empty((rows.shape[0], k), dtype=np.int64)
    for r in range(rows.shape[0]):
        idx[r] = _twin_order(_twin_key(rows[r]), largest)[:k]
    idx = idx.reshape(xm.shape[:-1] + (k,))
    values = np.take_along_axis(xm, idx, axis=-1)
    return np.moveaxis(values, -1, axis), np.moveaxis(idx, -1, axis)


def bucketed_topk_twin(
    x: np.ndarray,
    k: int,
    *,
    num_buckets: int,
    k_per_bucket: int = 1,
    interleaved: bool = True,
    axis: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """Slow NumPy twin of :func:`bucketed_topk`: explicit bucket index lists + lexsort."""
    xm, axis, rows = _twin_rows(x, axis, "bucketed_topk_twin")
    n = xm.shape[-1]
    k, b, kb = _check_bucket_args("bucketed_topk_twin", n, k, num_buckets, k_per_bucket, axis)
    interleaved = as_bool("bucketed_topk_twin: interleaved", interleaved)
    sizes = bucket_sizes(n, b)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    if interleaved:
        buckets = [np.arange(j, n, b) for j in range(b)]
    else:
        buckets = [np.arange(starts[j], starts[j] + sizes[j]) for j in range(b)]
    idx = np.empty((rows.shape[0], k), dtype=np.int64)
    for r in range(rows.shape[0]):
        key = _twin_key(rows[r])
        cand = np.concatenate([bk[_twin_order(key[bk], True)[:kb]] for bk in buckets]).astype(
            np.int64
        )
        cand.sort()  # index order, so the final ranking's ties follow global index
        idx[r] = cand[_twin_order(key[cand], True)[:k]]
    idx = idx.reshape(xm.shape[:-1] + (k,))
    values = np.take_along_axis(xm, idx, axis=-1)
    return np.moveaxis(values, -1, axis), np.moveaxis(idx, -1, axis)
