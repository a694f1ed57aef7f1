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
:func:`topk_twin`, :func:`bucketed_topk_twin`, :func:`topk_naive`
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
from numba import prange, types
from numba.extending import overload

from reference._config import FASTMATH, njit_parallel, njit_serial

__all__ = [
    "bucket_params_from_public",
    "bucket_sizes",
    "bucketed_topk",
    "bucketed_topk_row",
    "bucketed_topk_twin",
    "topk",
    "topk_naive",
    "topk_row",
    "topk_twin",
]

# Below this many elements a range is insertion-sorted.
_SMALL = 16
# Extra room of the candidate buffer of the streaming exact top-k, beyond 2k.
_BUF_EXTRA = 256
# Block length of the vectorised threshold screen of the streaming exact top-k.
_BLOCK = 32
_CHUNK = 64
# Minimum number of lanes of the vectorised bucket argmax (interleaved, k_b = 1).
_LANES = 256
# Sampled first threshold of the exact top-k: sample size, and when to use it.
_SAMPLE = 4096
_SAMPLE_MIN = 512
_SAMPLE_MIN_K = 64
_SAMPLE_MIN_MU = 16


# --------------------------------------------------------------------------------------
# Serial building blocks on (value, index) pairs. Rank order: larger value first, then
# lower index. Keys are unique (indices are), so the order is strict and total.
# --------------------------------------------------------------------------------------


@njit_serial(inline="always")
def _before(va, ia, vb, ib):
    # True when (va, ia) ranks before (vb, ib).
    return va > vb or (va == vb and ia < ib)


@njit_serial(inline="always")
def _swap(v, idx, a, b):
    tv = v[a]
    v[a] = v[b]
    v[b] = tv
    ti = idx[a]
    idx[a] = idx[b]
    idx[b] = ti


@njit_serial
def _insertion_sort(v, idx, lo, hi):
    for i in range(lo + 1, hi):
        tv = v[i]
        ti = idx[i]
        j = i - 1
        while j >= lo and _before(tv, ti, v[j], idx[j]):
            v[j + 1] = v[j]
            idx[j + 1] = idx[j]
            j -= 1
        v[j + 1] = tv
        idx[j + 1] = ti


@njit_serial
def _sift_down(v, idx, lo, start, size):
    # Heap over v[lo:lo+size] whose root is the worst-ranked element.
    i = start
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        worst = left
        right = left + 1
        if right < size and _before(v[lo + left], idx[lo + left], v[lo + right], idx[lo + right]):
            worst = right
        if _before(v[lo + i], idx[lo + i], v[lo + worst], idx[lo + worst]):
            _swap(v, idx, lo + i, lo + worst)
            i = worst
        else:
            break


@njit_serial
def _heapsort(v, idx, lo, hi):
    # Sorts v[lo:hi] best first (the fallback that bounds the worst case).
    size = hi - lo
    for i in range(size // 2 - 1, -1, -1):
        _sift_down(v, idx, lo, i, size)
    while size > 1:
        _swap(v, idx, lo, lo + size - 1)
        size -= 1
        _sift_down(v, idx, lo, 0, size)


@njit_serial
def _depth_limit(m):
    d = 4
    while m > 1:
        m >>= 1
        d += 2
    return d


@njit_serial
def _partition(v, idx, lo, hi):
    # Branch-free Lomuto partition of v[lo:hi] (hi - lo >= 3) around the median of three
    # (the data-dependent branches of a Hoare partition mispredict about half the time).
    # Returns (p + 1, p - 1) where p is the pivot's final position: v[lo:p] ranks before
    # the pivot and v[p+1:hi] after it.
    # Median of three pseudo-random positions (a fixed hash of lo and hi, so the run is
    # deterministic). Fixed positions make poor candidates: a range left by an earlier
    # partition is not in random order, and fixed positions invite adversarial inputs.
    r = np.uint64(hi - lo)
    h = np.uint64(lo) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(hi)
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    a = lo + np.int64(h % r)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    mid = lo + np.int64(h % r)
    h *= np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(29)
    c = lo + np.int64(h % r)
    if a == mid or mid == c or a == c:
        q = (hi - lo) // 4
        a = lo + q
        mid = lo + 2 * q
        c = lo + 3 * q
    if _before(v[mid], idx[mid], v[a], idx[a]):
        _swap(v, idx, a, mid)
    if _before(v[c], idx[c], v[mid], idx[mid]):
        _swap(v, idx, mid, c)
        if _before(v[mid], idx[mid], v[a], idx[a]):
            _swap(v, idx, a, mid)
    _swap(v, idx, lo, mid)
    pv = v[lo]
    pi = idx[lo]
    j = lo + 1
    for i in range(lo + 1, hi):
        vi = v[i]
        ii = idx[i]
        c = (vi > pv) | ((vi == pv) & (ii < pi))
        v[i] = v[j]
        idx[i] = idx[j]
        v[j] = vi
        idx[j] = ii
        j += c
    p = j - 1
    _swap(v, idx, lo, p)
    return p + 1, p - 1


@njit_serial
def _select(v, idx, lo, hi, kth):
    # Introselect: afterwards v[kth] holds the element of rank kth - lo in v[lo:hi], every
    # element of v[lo:kth] ranks before it and every element of v[kth+1:hi] after it.
    limit = _depth_limit(hi - lo)
    while hi - lo > _SMALL:
        if limit == 0:
            _heapsort(v, idx, lo, hi)
            return
        limit -= 1
        i, j = _partition(v, idx, lo, hi)
        if kth <= j:
            hi = j + 1
        elif kth >= i:
            lo = i
        else:
            return
    _insertion_sort(v, idx, lo, hi)


@njit_serial
def _sort(v, idx, lo, hi):
    # Introsort of v[lo:hi] best first. Explicit stack; the smaller part is done first,
    # so at most log2(n) entries wait on the stack.
    maxd = _depth_limit(hi - lo)
    stack = np.empty(3 * 130, dtype=np.int64)
    sp = 0
    d = 0
    while True:
        if hi - lo <= _SMALL or d > maxd:
            if hi - lo <= _SMALL:
                _insertion_sort(v, idx, lo, hi)
            else:
                _heapsort(v, idx, lo, hi)
            if sp == 0:
                break
            sp -= 3
            lo = stack[sp]
            hi = stack[sp + 1]
            d = stack[sp + 2]
            continue
        i, j = _partition(v, idx, lo, hi)
        d += 1
        if j + 1 - lo < hi - i:
            stack[sp] = i
            stack[sp + 1] = hi
            stack[sp + 2] = d
            hi = j + 1
        else:
            stack[sp] = lo
            stack[sp + 1] = j + 1
            stack[sp + 2] = d
            lo = i
        sp += 3


def _sorted_indices(v, idx, k, out):
    """out[:k] = idx[:k] ordered by (v desc, idx asc); v/idx[:k] may be reordered.

    Numba-only: dispatches on the value dtype at compile time (overload below). The four
    kernel dtypes (float32/64, int64, uint64) take an LSD radix sort, which has no
    data-dependent branches (a comparison sort mispredicts on every level); any other
    dtype takes the pair introsort.
    """
    raise NotImplementedError("numba-only helper")


@njit_serial
def _sorted_indices_generic(v, idx, k, out):
    _sort(v, idx, 0, k)
    for i in range(k):
        out[i] = idx[i]


@njit_serial
def _radix_pass(sk, si, dk, di, n, shift, by_key, cnt):
    # One stable counting-sort pass on 8 bits (of the key, or of the index) from s* to d*.
    cnt[:] = 0
    sh = np.uint64(shift)
    m = np.uint64(255)
    if by_key:
        for i in range(n):
            cnt[(sk[i] >> sh) & m] += 1
    else:
        for i in range(n):
            cnt[(np.uint64(si[i]) >> sh) & m] += 1
    tot = 0
    for d in range(256):
        c = cnt[d]
        cnt[d] = tot
        tot += c
    for i in range(n):
        d = (sk[i] >> sh) & m if by_key else (np.uint64(si[i]) >> sh) & m
        p = cnt[d]
        dk[p] = sk[i]
        di[p] = si[i]
        cnt[d] = p + 1


@njit_serial
def _radix_sort_desc(dkey, idx, k, out):
    # Sort by (dkey asc, idx asc), dkey = ~(order-preserving map of the value); write the
    # idx into out[:k]. LSD: index bytes first, then key bytes; bytes on which all keys
    # (or all indices) agree are skipped.
    tk = np.empty(k, dtype=np.uint64)
    ti = np.empty(k, dtype=np.int64)
    cnt = np.empty(256, dtype=np.int64)
    ior = np.uint64(0)
    iand = ~np.uint64(0)
    kor = np.uint64(0)
    kand = ~np.uint64(0)
    for i in range(k):
        u = np.uint64(idx[i])
        ior |= u
        iand &= u
        kor |= dkey[i]
        kand &= dkey[i]
    idiff = ior ^ iand
    kdiff = kor ^ kand
    sk = dkey
    si = idx
    dk = tk
    di = ti
    for by_key in (False, True):
        diff = kdiff if by_key else idiff
        for byte in range(8):
            if (diff >> np.uint64(8 * byte)) & np.uint64(255):
                _radix_pass(sk, si, dk, di, k, 8 * byte, by_key, cnt)
                sk, dk = dk, sk
                si, di = di, si
    for i in range(k):
        out[i] = si[i]


@njit_serial
def _sorted_indices_bits32(v, idx, k, out):
    # float32: map the bits to an order-preserving uint32 (negatives: all bits flipped;
    # non-negatives: sign bit set; -0.0 first made +0.0, since they tie).
    bits = v[:k].view(np.uint32)
    dkey = np.empty(k, dtype=np.uint64)
    for i in range(k):
        b = bits[i]
        if b == np.uint32(0x80000000):
            b = np.uint32(0)
        if b >> np.uint32(31):
            b = ~b
        else:
            b = b | np.uint32(0x80000000)
        dkey[i] = np.uint64(~b)
    _radix_sort_desc(dkey, idx, k, out)


@njit_serial
def _sorted_indices_float64(v, idx, k, out):
    bits = v[:k].view(np.uint64)
    top = np.uint64(0x8000000000000000)
    dkey = np.empty(k, dtype=np.uint64)
    for i in range(k):
        b = bits[i]
        if b == top:
            b = np.uint64(0)
        if b & top:
            b = ~b
        else:
            b = b | top
        dkey[i] = ~b
    _radix_sort_desc(dkey, idx, k, out)


@njit_serial
def _sorted_indices_int64(v, idx, k, out):
    bits = v[:k].view(np.uint64)
    top = np.uint64(0x8000000000000000)
    dkey = np.empty(k, dtype=np.uint64)
    for i in range(k):
        dkey[i] = ~(bits[i] ^ top)
    _radix_sort_desc(dkey, idx, k, out)


@njit_serial
def _sorted_indices_uint64(v, idx, k, out):
    dkey = np.empty(k, dtype=np.uint64)
    for i in range(k):
        dkey[i] = ~v[i]
    _radix_sort_desc(dkey, idx, k, out)


@overload(_sorted_indices, jit_options={"fastmath": set(FASTMATH)})
def _ol_sorted_indices(v, idx, k, out):
    dt = v.dtype if isinstance(v, types.Array) else None
    if dt == types.float32:
        return lambda v, idx, k, out: _sorted_indices_bits32(v, idx, k, out)
    if dt == types.float64:
        return lambda v, idx, k, out: _sorted_indices_float64(v, idx, k, out)
    if dt == types.int64:
        return lambda v, idx, k, out: _sorted_indices_int64(v, idx, k, out)
    if dt == types.uint64:
        return lambda v, idx, k, out: _sorted_indices_uint64(v, idx, k, out)
    return lambda v, idx, k, out: _sorted_indices_generic(v, idx, k, out)


@njit_serial
def _has_nan(x):
    for i in range(x.shape[0]):
        if x[i] != x[i]:
            return True
    return False


# --------------------------------------------------------------------------------------
# Exact top-k of one row: a streaming threshold filter into a buffer of ~3k candidates,
# compacted by introselect when full; then the k survivors are sorted. O(n + k log k)
# comparisons per row in the worst case (every compaction removes at least half of the
# buffer). The filter screens blocks of _BLOCK elements with a vectorisable "any element
# passes?" test, so once the threshold has settled an element costs a fraction of a
# compare. For large k the first threshold comes from a strided sample (a rank chosen so
# that ~1.3-2k elements pass); if fewer than k pass, the row is redone without it.
# --------------------------------------------------------------------------------------


@njit_serial
def _buffer_size(n, k):
    # Candidate buffer length (plus one slot of slack).
    return min(n, max(3 * k, k + _BUF_EXTRA)) + 1


@njit_serial
def _compact(bv, bi, cnt, k):
    # Keep the best k of bv/bi[:cnt] in bv/bi[:k]; returns (k, new threshold, found_nan).
    if _has_nan(bv[:cnt]):
        return cnt, bv[0], True
    _select(bv, bi, 0, cnt, k - 1)
    return k, bv[k - 1], False


@njit_serial
def _append_range(x, i0, i1, k, bv, bi, thr, strict, cnt):
    # Element-wise part of _stream over x[i0:i1]. Returns (cnt, thr, strict, found_nan).
    # Strict ">" once thr is the k-th kept value: an equal value arrives with a larger
    # index, so it ranks after that element. ``not (v < thr)`` lets NaN in (caught later).
    cap = bv.shape[0] - 1
    i = i0
    while i < i1 and not strict:
        v = x[i]
        if not (v < thr):
            bv[cnt] = v
            bi[cnt] = i
            cnt += 1
            if cnt == cap:
                cnt, thr, bad = _compact(bv, bi, cnt, k)
                if bad:
                    return cnt, thr, strict, True
                strict = True
        i += 1
    while i < i1:
        v = x[i]
        if not (v <= thr):
            bv[cnt] = v
            bi[cnt] = i
            cnt += 1
            if cnt == cap:
                cnt, thr, bad = _compact(bv, bi, cnt, k)
                if bad:
                    return cnt, thr, strict, True
        i += 1
    return cnt, thr, strict, False


@njit_serial
def _screen_chunk(x, i0, thr, strict, mask):
    # mask[i] = 1 if x[i0 + i] passes (NaN passes), for a whole chunk of _CHUNK * _BLOCK
    # elements. An element-wise compare-and-store vectorises fully (a per-block reduction
    # or a float max would not, without nnan); the per-block "any" is then read 8 bytes
    # at a time. thr and strict are invariant here.
    if strict:
        for i in range(mask.shape[0]):
            mask[i] = np.uint8(not (x[i0 + i] <= thr))
    else:
        for i in range(mask.shape[0]):
            mask[i] = np.uint8(not (x[i0 + i] < thr))


@njit_serial
def _stream(x, k, bv, bi, thr, strict, start, cnt):
    # Appends to bv/bi[cnt:] every x[i], i >= start, that passes the threshold (strict:
    # v > thr; else v >= thr), compacting to the best k whenever the buffer is full (after
    # which the threshold is the k-th kept value, strict). NaN always passes. Returns
    # (cnt, found_nan).
    #
    # Chunks of _CHUNK blocks of _BLOCK are first screened with the threshold at the
    # start of the chunk (vectorised); then only passing blocks are looked at closely.
    # The threshold only rises, so a block that fails the screen has nothing to add.
    n = x.shape[0]
    chunk = _CHUNK * _BLOCK
    words = _BLOCK // 8
    mask = np.empty(chunk, dtype=np.uint8)
    m64 = mask.view(np.uint64)
    i0 = start
    hit = np.empty(_CHUNK, dtype=np.bool_)
    while i0 + chunk <= n:
        _screen_chunk(x, i0, thr, strict, mask)
        nhit = 0
        for t in range(_CHUNK):
            w = np.uint64(0)
            for u in range(words):
                w |= m64[t * words + u]
            hit[t] = w != 0
            nhit += hit[t]
        if nhit * 4 > _CHUNK:
            # Dense chunk: one pass over it beats many short calls.
            cnt, thr, strict, bad = _append_range(x, i0, i0 + chunk, k, bv, bi, thr, strict, cnt)
            if bad:
                return cnt, True
        elif nhit:
            for t in range(_CHUNK):
                if hit[t]:
                    b0 = i0 + t * _BLOCK
                    cnt, thr, strict, bad = _append_range(
                        x, b0, b0 + _BLOCK, k, bv, bi, thr, strict, cnt
                    )
                    if bad:
                        return cnt, True
        i0 += chunk
    cnt, thr, strict, bad = _append_range(x, i0, n, k, bv, bi, thr, strict, cnt)
    if bad:
        return cnt, True
    return cnt, _has_nan(bv[:cnt])


@njit_serial
def _topk_core(x, k, out, bv, bi):
    """Core of :func:`topk_row` on any real dtype; returns True if ``x`` holds a NaN.

    ``bv``/``bi``: scratch of equal length ``_buffer_size(len(x), k)``.
    Writes ``out[:k]`` (undefined when a NaN was found).
    """
    n = x.shape[0]
    if k <= 0:
        return _has_nan(x)
    cap = bv.shape[0] - 1
    cnt = 0
    done = False
    if cap >= n:
        pass  # the whole row fits the buffer: plain introselect below
    elif k >= _SAMPLE_MIN_K and n >= 8 * _SAMPLE_MIN:
        ns = min(_SAMPLE, n // 8)
        if k * ns >= _SAMPLE_MIN_MU * n:
            # First threshold from a strided sample of ns positions: with mu = k ns / n
            # expected true top-k members in the sample, take the sample element of rank
            # ~mu + 4 sqrt(mu), so that ~k (1 + 4 / sqrt(mu)) elements pass.
            stride = n // ns
            sv = np.empty(ns, dtype=x.dtype)
            si = np.empty(ns, dtype=np.int64)
            for t in range(ns):
                sv[t] = x[t * stride]
                si[t] = t * stride
            if _has_nan(sv):
                return True
            mu = k * ns / n
            r = min(ns, int(mu + 4.0 * np.sqrt(mu)) + 2)
            _select(sv, si, 0, ns, r - 1)
            # The expected pass rate r / ns is above 1/128 here (r >= 34, ns <= 4096): most
            # blocks would pass a block screen, so a plain scan is cheaper.
            cnt, _, _, bad = _append_range(x, 0, n, k, bv, bi, sv[r - 1], False, 0)
            bad = bad or _has_nan(bv[:cnt])
            if bad:
                return True
            done = cnt >= k
    if not done:
        m = min(cap, n)
        for i in range(m):
            bv[i] = x[i]
            bi[i] = i
        if _has_nan(bv[:m]):
            return True
        cnt = m
        if cnt > k:
            _select(bv, bi, 0, cnt, k - 1)
            cnt = k
        cnt, bad = _stream(x, k, bv, bi, bv[k - 1], True, m, cnt)
        if bad:
            return True
    if cnt > k:
        _select(bv, bi, 0, cnt, k - 1)
    _sorted_indices(bv, bi, k, out)
    return False


@njit_serial
def topk_row(x, k, out):
    """Indices of the k largest entries of ``x`` into ``out[:k]`` (value desc, index asc).

    Parameters
    ----------
    x : ndarray, shape (n,)
        float64 (any real dtype compiles), no NaN; ±inf allowed.
    k : int
        ``0 <= k <= n``.
    out : ndarray of int64, shape (>= k,)
        Receives the indices.

    Raises
    ------
    ValueError
        If ``x`` holds a NaN.
    """
    cap = _buffer_size(x.shape[0], k)
    bv = np.empty(cap, dtype=x.dtype)
    bi = np.empty(cap, dtype=np.int64)
    if _topk_core(x, k, out, bv, bi):
        raise ValueError("topk_row: x holds a NaN")


@njit_serial
def topk_buffer_size(n, k):
    """Length of the candidate buffers :func:`topk_row_into` needs for a row of ``n``."""
    return _buffer_size(n, k)


@njit_serial
def topk_row_into(x, k, out, bv, bi):
    """:func:`topk_row` with caller-provided candidate buffers ``bv`` (x's dtype) and ``bi``
    (int64), each of at least :func:`topk_buffer_size` elements (no allocation)."""
    if _topk_core(x, k, out, bv, bi):
        raise ValueError("topk_row: x holds a NaN")


@njit_parallel
def _topk_kernel(x2, k, out, nan_rows):
    rows = x2.shape[0]
    n = x2.shape[1]
    cap = _buffer_size(n, k)
    for r in prange(rows):
        bv = np.empty(cap, dtype=x2.dtype)
        bi = np.empty(cap, dtype=np.int64)
        nan_rows[r] = _topk_core(x2[r], k, out[r], bv, bi)


@njit_serial
def _topk_kernel_serial(x2, k, out, nan_rows):
    # Same as _topk_kernel without the thread pool (used for a single row, where waking
    # idle threads only costs time).
    cap = _buffer_size(x2.shape[1], k)
    bv = np.empty(cap, dtype=x2.dtype)
    bi = np.empty(cap, dtype=np.int64)
    for r in range(x2.shape[0]):
        nan_rows[r] = _topk_core(x2[r], k, out[r], bv, bi)


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
    if rows < 2 or rows >= 2**31:
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


# --------------------------------------------------------------------------------------
# Public API: validation and normalisation.
# --------------------------------------------------------------------------------------


def _check_int(name: str, value, lo: int, hi: int | None, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}: expected {what}, got {value}")
    return value


def _as_rows(x, axis, fname: str) -> tuple[np.ndarray, int]:
    """Validate ``x``/``axis``; return (x with ``axis`` moved last, normalised axis)."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    dt = x.dtype
    if dt == np.bool_:
        raise TypeError(
            f"{fname}: x: expected a real numeric dtype (float16/32/64 or integer), got bool; "
            "cast to an integer dtype to rank booleans"
        )
    if dt.kind not in "fiu" or (dt.kind == "f" and dt.itemsize > 8):
        raise TypeError(
            f"{fname}: x: expected a real numeric dtype (float16/32/64 or integer), got {dt}"
        )
    if x.ndim == 0:
        raise ValueError(f"{fname}: x: expected at least 1 dimension, got a 0-d array")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{fname}: axis: expected an int, got {type(axis).__name__} {axis!r}")
    axis = int(axis)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(
            f"{fname}: axis: expected -{x.ndim} <= axis < {x.ndim} for x.ndim={x.ndim}, got {axis}"
        )
    axis %= x.ndim
    xm = x if axis == x.ndim - 1 else np.moveaxis(x, axis, -1)
    return xm, axis


def _nrows(xm: np.ndarray) -> int:
    return int(np.prod(xm.shape[:-1], dtype=np.int64))


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
    key = _kernel_key(xm, bool(largest))
    out = np.empty((key.shape[0], k), dtype=np.int64)
    nan_rows = np.zeros(key.shape[0], dtype=np.bool_)
    if key.shape[0] == 1:
        _topk_kernel_serial(key, k, out, nan_rows)
    elif key.shape[0] > 1:
        _topk_kernel(key, k, out, nan_rows)
    return _finish(xm, out, k, axis, nan_rows, "topk")


def bucket_sizes(n: int, num_buckets: int) -> np.ndarray:
    """Sizes of the ``num_buckets`` buckets of ``n`` elements (no padding).

    Buckets ``0 .. n % b - 1`` hold ``n // b + 1`` elements, the rest ``n // b``; the same
    sizes serve both layouts (interleaved bucket j is ``{j, j + b, j + 2b, ...}``).

    Returns
    -------
    ndarray of int64, shape (num_buckets,)
    """
    n = _check_int("bucket_sizes: n", n, 0, None, "n >= 0")
    b = _check_int("bucket_sizes: num_buckets", num_buckets, 1, None, "num_buckets >= 1")
    base, rem = divmod(n, b)
    return np.where(np.arange(b) < rem, base + 1, base).astype(np.int64)


def _check_bucket_args(fname, n, k, num_buckets, k_per_bucket, axis):
    k = _check_int(f"{fname}: k", k, 0, n, f"0 <= k <= n = {n} (the size of axis {axis})")
    b = _check_int(f"{fname}: num_buckets", num_buckets, 1, n, f"1 <= num_buckets <= n = {n}")
    kb = _check_int(f"{fname}: k_per_bucket", k_per_bucket, 1, None, "k_per_bucket >= 1")
    if b * kb < k:
        raise ValueError(
            f"{fname}: num_buckets * k_per_bucket: expected >= k = {k}, got {b} * {kb} = {b * kb}"
        )
    return k, b, kb


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
    """Bucketed approximate top-k (Key et al. 2024, Sec. 2; spec ``topk.md``).

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
    if isinstance(k_mult, bool) or not isinstance(k_mult, numbers.Real):
        raise TypeError(f"bucket_params_from_public: k_mult: expected a number, got {k_mult!r}")
    b = Fraction(k_mult) * k / j
    if b.denominator != 1 or b < 1:
        raise ValueError(
            "bucket_params_from_public: k_mult: expected k_mult * k / j to be a positive "
            f"integer, got {k_mult} * {k} / {j} = {float(b)}"
        )
    if int(b) * j < k:
        raise ValueError(f"bucket_params_from_public: k_mult: expected k_mult >= 1, got {k_mult}")
    return int(b), j


# --------------------------------------------------------------------------------------
# Float64 NumPy twins (slow, obvious; the ground truth of the tests).
# --------------------------------------------------------------------------------------


def topk_naive(x: np.ndarray, k: int) -> np.ndarray:
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
