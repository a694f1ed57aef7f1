"""Bucketed approximate top-k of one row, and the kernels over rows that call it.

Row function (serial, callable from other Numba code; re-exported by
:mod:`reference.selection`): :func:`bucketed_topk_row`. Kernels over rows:
:func:`_bucketed_kernel` (parallel) and :func:`_bucketed_kernel_serial` (one row). The
algorithm is described in ``docs/topk.md``.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from reference._config import njit_parallel, njit_serial
from reference._pairsort import _before, _has_nan, _select, _sorted_indices
from reference._topk_exact import _buffer_size, _topk_core

# Minimum number of lanes of the vectorised bucket argmax (interleaved, k_b = 1).
# Measured (2-vCPU AMD EPYC VM, 1 thread, float32 N(0,1), us per call, best of 4
# interleaved processes x 25 reps; noise ~10%), _LANES = 64 / 256 / 1024: bucketed
# 8x65536 k=b=16: 91 / 82 / 79; k=b=1024: 154 / 142 / 137. Flat from 256 up.
_LANES = 256
# The lanes record the row of their maximum as int32 (half the bytes of int64, twice the
# lanes per vector); rows beyond that, and rows < 2 (nothing to vectorise), take the
# scalar loop. A bound, not a tuning knob.
_LANE_ROW_LIMIT = 2**31


# --------------------------------------------------------------------------------------
# Bucketed top-k of one row.
# --------------------------------------------------------------------------------------


@njit_serial
def _bucket_start(j, base, rem):
    # First index of contiguous bucket j (buckets 0..rem-1 hold base+1 elements).
    return j * base + min(j, rem)


@njit_serial
def _bucket_argmax_interleaved_scalar(x, b, cv, ci):
    # Stage 1 for k_b = 1, interleaved, element by element: bucket j = i % b. Strict ">"
    # keeps the lower index on ties. Returns True on NaN.
    n = x.shape[0]
    for j in range(b):
        v = x[j]
        if v != v:
            return True
        cv[j] = v
        ci[j] = j
    start = b
    while start < n:
        m = min(b, n - start)
        for j in range(m):
            v = x[start + j]
            if not (v <= cv[j]):
                if v != v:
                    return True
                cv[j] = v
                ci[j] = start + j
        start += b
    return False


@njit_serial
def _bucket_argmax_interleaved(x, b, cv, ci):
    # Stage 1 for k_b = 1, interleaved, vectorised: view the row as R rows of W = m*b
    # lanes (W >= _LANES); lane l only ever sees bucket l % b. Each lane keeps its running
    # max and the row where it was found (strict ">": the first occurrence); then the m
    # lanes of each bucket are merged (larger value, then lower index) and the n - R*W
    # trailing elements are folded in. Returns True on NaN.
    n = x.shape[0]
    m = (_LANES + b - 1) // b
    w = m * b
    rows = n // w
    if rows < 2 or rows >= _LANE_ROW_LIMIT:
        return _bucket_argmax_interleaved_scalar(x, b, cv, ci)
    lv = np.empty(w, dtype=x.dtype)
    lr = np.zeros(w, dtype=np.int32)
    ln = np.zeros(w, dtype=np.int32)
    for lane in range(w):
        v = x[lane]
        lv[lane] = v
        ln[lane] = np.int32(v != v)
    start = w
    row = np.int32(1)
    while start + w <= n:
        for lane in range(w):
            v = x[start + lane]
            c = lv[lane]
            up = v > c
            lv[lane] = v if up else c
            lr[lane] = row if up else lr[lane]
            ln[lane] |= np.int32(v != v)
        start += w
        row += np.int32(1)
    for lane in range(w):
        if ln[lane]:
            return True
    for j in range(b):
        bv = lv[j]
        bidx = np.int64(lr[j]) * w + j
        for q in range(1, m):
            lane = j + q * b
            v = lv[lane]
            g = np.int64(lr[lane]) * w + lane
            if _before(v, g, bv, bidx):
                bv = v
                bidx = g
        cv[j] = bv
        ci[j] = bidx
    for i in range(rows * w, n):
        v = x[i]
        if v != v:
            return True
        j = i % b
        if v > cv[j]:
            cv[j] = v
            ci[j] = i
    return False


@njit_serial
def _bucket_argmax_contiguous(x, b, cv, ci):
    # Stage 1 for k_b = 1, contiguous buckets. Returns True on NaN.
    n = x.shape[0]
    base = n // b
    rem = n % b
    for j in range(b):
        s = _bucket_start(j, base, rem)
        e = s + base + (1 if j < rem else 0)
        best = x[s]
        if best != best:
            return True
        bidx = s
        for i in range(s + 1, e):
            v = x[i]
            if not (v <= best):
                if v != v:
                    return True
                best = v
                bidx = i
        cv[j] = best
        ci[j] = bidx
    return False


@njit_serial
def _bucketed_core(x, k, b, kb, interleaved, out):
    """Core of :func:`bucketed_topk_row` on any real dtype; returns True on NaN."""
    n = x.shape[0]
    if k <= 0:
        return _has_nan(x)
    base = n // b
    rem = n % b
    if kb == 1:
        ncand = b
        cv = np.empty(b, dtype=x.dtype)
        ci = np.empty(b, dtype=np.int64)
        if interleaved:
            if _bucket_argmax_interleaved(x, b, cv, ci):
                return True
        else:
            if _bucket_argmax_contiguous(x, b, cv, ci):
                return True
    else:
        # A bucket smaller than k_b contributes all it has.
        big = min(base + 1, kb)
        small = min(base, kb)
        ncand = rem * big + (b - rem) * small
        cv = np.empty(ncand, dtype=x.dtype)
        ci = np.empty(ncand, dtype=np.int64)
        smax = base + (1 if rem > 0 else 0)
        cap = _buffer_size(smax, kb)
        bv = np.empty(cap, dtype=x.dtype)
        bi = np.empty(cap, dtype=np.int64)
        loc = np.empty(kb, dtype=np.int64)
        c = 0
        for j in range(b):
            s = base + (1 if j < rem else 0)
            if interleaved:
                first = j
                step = b
            else:
                first = _bucket_start(j, base, rem)
                step = 1
            if s <= kb:
                for t in range(s):
                    g = first + t * step
                    v = x[g]
                    if v != v:
                        return True
                    cv[c] = v
                    ci[c] = g
                    c += 1
            else:
                # Local order within a bucket follows global index order in both layouts,
                # so ties to the lower local index are ties to the lower global index.
                if _topk_core(x[first : first + (s - 1) * step + 1 : step], kb, loc, bv, bi):
                    return True
                for t in range(kb):
                    g = first + loc[t] * step
                    cv[c] = x[g]
                    ci[c] = g
                    c += 1
    # Stage 2: exact top-k of the candidates (all of them, sorted, when ncand == k).
    if ncand > k:
        _select(cv, ci, 0, ncand, k - 1)
    _sorted_indices(cv, ci, k, out)
    return False


@njit_serial
def bucketed_topk_row(x, k, num_buckets, k_per_bucket, interleaved, out):
    """Bucketed top-k of one row into ``out[:k]`` (value desc, index asc).

    Parameters
    ----------
    x : ndarray, shape (n,)
        float64 (any real dtype compiles), no NaN; ±inf allowed.
    k : int
        ``0 <= k <= min(n, num_buckets * k_per_bucket)``.
    num_buckets : int
        ``1 <= num_buckets <= n``.
    k_per_bucket : int
        ``>= 1``.
    interleaved : bool
        Bucket j is ``{j, j+b, ...}`` if True, else the j-th consecutive slice.
    out : ndarray of int64, shape (>= k,)

    Raises
    ------
    ValueError
        If ``x`` holds a NaN or the parameters are out of range.
    """
    n = x.shape[0]
    if num_buckets < 1 or num_buckets > n:
        raise ValueError("bucketed_topk_row: need 1 <= num_buckets <= len(x)")
    if k_per_bucket < 1:
        raise ValueError("bucketed_topk_row: need k_per_bucket >= 1")
    if k < 0 or k > n or k > num_buckets * k_per_bucket:
        raise ValueError("bucketed_topk_row: need 0 <= k <= min(n, num_buckets*k_per_bucket)")
    if _bucketed_core(x, k, num_buckets, k_per_bucket, interleaved, out):
        raise ValueError("bucketed_topk_row: x holds a NaN")


@njit_parallel
def _bucketed_kernel(x2, k, b, kb, interleaved, out, nan_rows):
    rows = x2.shape[0]
    for r in prange(rows):
        nan_rows[r] = _bucketed_core(x2[r], k, b, kb, interleaved, out[r])


@njit_serial
def _bucketed_kernel_serial(x2, k, b, kb, interleaved, out, nan_rows):
    for r in range(x2.shape[0]):
        nan_rows[r] = _bucketed_core(x2[r], k, b, kb, interleaved, out[r])
