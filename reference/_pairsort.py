"""Serial building blocks on (value, index) pairs, shared by the exact and bucketed top-k.

Rank order: larger value first, then lower index. Keys are unique (indices are), so the
order is strict and total, and every routine here gives one answer whatever its pivots.

- :func:`_select`: introselect (branch-free Lomuto partition around a median of three
  hashed positions; heapsort past a depth limit).
- :func:`_three_positions`: the pseudo-random pivot candidates of a range.
- :func:`_sort`: introsort with an explicit stack (the generic-dtype fallback).
- :func:`_sorted_indices`: the k best, ordered; an LSD radix sort on an order-preserving
  64-bit image of the value for the four kernel dtypes, else :func:`_sort`.
- :func:`_has_nan`.

All are ``@njit_serial`` and callable only from other Numba code.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

from reference._config import FASTMATH, njit_serial

# Below this many elements a range is insertion-sorted (introselect and introsort).
# Measured (2-vCPU AMD EPYC VM, 1 thread, float32 N(0,1), us per call, best of 4
# interleaved processes x 25 reps; noise ~10%), _SMALL = 8 / 16 / 32:
#   topk 8x65536 k=1024: 550 / 554 / 556; bucketed 8x65536 k=256 b=64 k_b=8: 1982 / 2016 /
#   2140; bucketed 8x65536 k=b=1024: 155 / 142 / 162. Flat below 16, worse above.
_SMALL = 16
#: Frames of the explicit stack of :func:`_sort` (3 int64 each: lo, hi, depth). Not a
#: tuning knob but a bound: the larger part is pushed and the smaller one processed, so
#: every frame at least halves the range and at most log2(n) < 64 frames wait at once.
_STACK_FRAMES = 130
# Introsort depth limit ``_DEPTH_SLACK + _DEPTH_PER_BIT * floor(log2(m))``: the usual
# 2 log2(m) of introsort, plus a little slack for short ranges; past it, heapsort.
_DEPTH_SLACK = 4
_DEPTH_PER_BIT = 2
# Pivot-position hash of :func:`_three_positions` (the pivots of :func:`_partition` and of
# reference._topk_exact._value_at_rank): the three multipliers of SplitMix64 (Steele,
# Lea, Flood 2014; 0x9E37... is 2**64 / golden ratio), with shifts 29/32/31/29. The same
# multipliers are costmodel.recall's SplitMix64 constants; they are defined here because
# reference must not import costmodel. Changing them changes pivots, never results.
_HASH_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_HASH_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_HASH_MIX2 = np.uint64(0x94D049BB133111EB)
# LSD radix sort of the final k: digits of _RADIX_BITS bits (one byte), so _RADIX
# counters and at most 8 passes over the 64-bit key and 8 over the index; digits on
# which all keys (or all indices) agree are skipped.
# Measured (same setup), _RADIX_BITS = 4 / 8 / 11: topk 8x65536 k=1024: 628 / 554 / 606;
# topk 64x2048 k=256: 1174 / 1047 / 1136; bucketed k=256 b=64 k_b=8: 2223 / 2016 / 2916.
_RADIX_BITS = 8
_RADIX = 1 << _RADIX_BITS
_RADIX_DIGITS = (64 + _RADIX_BITS - 1) // _RADIX_BITS


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
    d = _DEPTH_SLACK
    while m > 1:
        m >>= 1
        d += _DEPTH_PER_BIT
    return d


@njit_serial(inline="always")
def _three_positions(lo, hi):
    # Three pivot candidates in [lo, hi) (hi - lo >= 3): pseudo-random positions (a fixed
    # hash of lo and hi, so the run is deterministic), or the quartiles when two coincide.
    # Fixed positions make poor candidates: a range left by an earlier partition is not in
    # random order, and fixed positions invite adversarial inputs.
    r = np.uint64(hi - lo)
    h = np.uint64(lo) * _HASH_GOLDEN + np.uint64(hi)
    h ^= h >> np.uint64(29)
    h *= _HASH_MIX1
    h ^= h >> np.uint64(32)
    a = lo + np.int64(h % r)
    h *= _HASH_MIX2
    h ^= h >> np.uint64(31)
    mid = lo + np.int64(h % r)
    h *= _HASH_GOLDEN
    h ^= h >> np.uint64(29)
    c = lo + np.int64(h % r)
    if a == mid or mid == c or a == c:
        q = (hi - lo) // 4
        a = lo + q
        mid = lo + 2 * q
        c = lo + 3 * q
    return a, mid, c


@njit_serial
def _partition(v, idx, lo, hi):
    # Branch-free Lomuto partition of v[lo:hi] (hi - lo >= 3) around the median of three
    # (the data-dependent branches of a Hoare partition mispredict about half the time).
    # Returns (p + 1, p - 1) where p is the pivot's final position: v[lo:p] ranks before
    # the pivot and v[p+1:hi] after it.
    # Median of three pseudo-random positions (:func:`_three_positions`).
    a, mid, c = _three_positions(lo, hi)
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
    stack = np.empty(3 * _STACK_FRAMES, dtype=np.int64)
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
    # One stable counting-sort pass on the _RADIX_BITS-bit digit at ``shift`` (of the key,
    # or of the index) from s* to d*.
    cnt[:] = 0
    sh = np.uint64(shift)
    m = np.uint64(_RADIX - 1)
    if by_key:
        for i in range(n):
            cnt[(sk[i] >> sh) & m] += 1
    else:
        for i in range(n):
            cnt[(np.uint64(si[i]) >> sh) & m] += 1
    tot = 0
    for d in range(_RADIX):
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
    # idx into out[:k]. LSD: index digits first, then key digits; digits on which all keys
    # (or all indices) agree are skipped.
    tk = np.empty(k, dtype=np.uint64)
    ti = np.empty(k, dtype=np.int64)
    cnt = np.empty(_RADIX, dtype=np.int64)
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
        for digit in range(_RADIX_DIGITS):
            shift = _RADIX_BITS * digit
            if (diff >> np.uint64(shift)) & np.uint64(_RADIX - 1):
                _radix_pass(sk, si, dk, di, k, shift, by_key, cnt)
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
