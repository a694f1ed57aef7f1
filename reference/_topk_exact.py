"""Streaming exact top-k of one row, and the kernels over rows that call it.

Row functions (serial, callable from other Numba code; re-exported by
:mod:`reference.selection`): :func:`topk_row`, :func:`topk_row_into`,
:func:`topk_buffer_size`. Kernels over rows: :func:`_topk_kernel` (parallel) and
:func:`_topk_kernel_serial` (one row). The algorithm is described in ``docs/topk.md``.
"""

from __future__ import annotations

import llvmlite.binding as _llvm
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from reference._config import cpu_features, njit_parallel, njit_serial
from reference._llvmir import splat as _splat
from reference._pairsort import (
    _SMALL,
    _depth_limit,
    _has_nan,
    _heapsort,
    _select,
    _sorted_indices,
    _three_positions,
)

# Candidate buffer: min(n, max(_BUF_FACTOR * k, k + _BUF_EXTRA)) + 1 slots. Each
# compaction (an introselect of the full buffer) keeps k, so it frees
# max((_BUF_FACTOR - 1) k, _BUF_EXTRA) slots.
# Measured (2-vCPU AMD EPYC VM, 1 thread, float32 N(0,1), public topk, us per call, best
# of 4 interleaved processes x 25 reps; noise ~10%, up to 30% on 2x262144):
#   _BUF_FACTOR = 2 / 3 / 4: 64x2048 k=256: 1201 / 1047 / 970; 8x65536 k=1024: 561 / 554 /
#   563; 8x16384 k=64: 204 / 222 / 210. Flat at large n; 2 loses at n/k = 8.
#   _BUF_EXTRA = 64 / 256 / 1024: 8x65536 k=16: 284 / 338 / 503; 8x16384 k=64: 238 / 222 /
#   285; bucketed 8x65536 k=256 b=64 k_b=8 (buckets of 1024): 2033 / 2016 / 3103. 1024
#   loses everywhere; 64 wins for k=16 at n=65536, loses for k=64 at n=16384.
_BUF_FACTOR = 3
_BUF_EXTRA = 256
# Vectorised threshold screen: blocks of _BLOCK elements (multiple of 8: a block's mask
# is read as _BLOCK / 8 uint64 words), chunks of _CHUNK blocks screened at once.
#   _BLOCK = 16 / 32 / 64: 8x65536 k=16: 335 / 338 / 393; 8x16384 k=64: 243 / 222 / 230.
#   _CHUNK = 16 / 64 / 256: 8x65536 k=16: 362 / 338 / 362; 8x16384 k=64: 220 / 222 / 210.
_BLOCK = 32
_CHUNK = 64
# A chunk in which more than _CHUNK / _DENSE blocks pass is appended in one pass.
#   _DENSE = 2 / 4 / 8 / 1000 (~always whole chunks): 8x65536 k=16: 346 / 338 / 379 / 436;
#   8x16384 k=64: 248 / 222 / 222 / 235.
_DENSE = 4
# Sampled first threshold: at most _SAMPLE positions, at a stride of at least
# _SAMPLE_STRIDE (so the sample costs at most 1/_SAMPLE_STRIDE of the row); used when
# k >= _SAMPLE_MIN_K, n >= _SAMPLE_STRIDE * _SAMPLE_MIN and the expected number of top-k
# members in the sample, mu = k ns / n, is >= _SAMPLE_MIN_MU. The threshold is the sample
# element of rank mu + _SAMPLE_Z sqrt(mu) + _SAMPLE_SLACK, so that ~k (1 + _SAMPLE_Z /
# sqrt(mu)) elements pass: at _SAMPLE_Z = 4 the threshold lands above the k-th largest
# value (fewer than k pass: a redo) with about the odds of a 4-sigma binomial deviation.
# _SAMPLE_MIN_K is never the binding condition today: mu >= _SAMPLE_MIN_MU with
# ns <= n / _SAMPLE_STRIDE already implies k >= 16 * 8 = 128. _SAMPLE_SLACK keeps r >= 2
# for tiny mu. Measured (same setup as above):
#   _SAMPLE = 1024 / 4096 / 16384: 8x65536 k=256: 698 (not sampled: mu = 4) / 404 / 515;
#   8x65536 k=1024: 509 / 554 / 660.
#   _SAMPLE_STRIDE = 4 / 8 / 16: 64x2048 k=256: 828 (sampled) / 1047 / 1033; 8x16384
#   k=64: 223 / 222 / 198. _SAMPLE_MIN = 128 / 512: 64x2048 k=256: 829 / 1047.
#   _SAMPLE_MIN_MU = 4 / 16 / 64: 8x65536 k=256: 402 / 404 / 702; 2x262144 k=256: 248 /
#   378-507 / 459; 8x16384 k=64: 161 / 222 / 216.
#   _SAMPLE_Z = 2 / 4 / 6: 8x65536 k=256: 387 / 404 / 418; k=1024: 525 / 554 / 562 (i.i.d.
#   rows never redo; Z trades a few % of scan time against the redo risk on skewed rows).
# So sampling earlier (smaller _SAMPLE_MIN_MU, or _SAMPLE_MIN / _SAMPLE_STRIDE admitting
# n = 2048) measured 20-50% faster on these i.i.d. rows; the values are kept until a sweep
# over more shapes and non-i.i.d. rows (where a sample misleads more often) backs a change.
_SAMPLE = 4096
# ... but no more positions than give mu = _SAMPLE_MU expected top-k members: the two
# thresholds below are then ~2 _SAMPLE_Z sqrt(mu) sample ranks apart either way, and a
# smaller sample costs less to take and to select in. SparQ's top-k of 32768 at k = 4096
# (float64, one thread, rows with a +inf local window, on the development host): ns = 4096
# (mu = 512) 67 us per row, 2048 (mu = 256) 59 us, 1024 (mu = 128) 57 us (measured when
# the thresholds were selected by the pair introselect, several times slower per element
# than today's _value_at_rank: the balance may have moved towards larger samples).
_SAMPLE_MU = 256
_SAMPLE_STRIDE = 8
_SAMPLE_MIN = 512
_SAMPLE_MIN_K = 64
_SAMPLE_MIN_MU = 16
_SAMPLE_Z = 4.0
_SAMPLE_SLACK = 2


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
    return min(n, max(_BUF_FACTOR * k, k + _BUF_EXTRA)) + 1


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
        if nhit * _DENSE > _CHUNK:
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


#: Elements per branch-free step of :func:`_append_two` (its regions must have room for a
#: whole step, else the rest of the row takes the branching loop). A multiple of 8
#: (:func:`split8`).
_APPEND_STEP = 64


def _compress_ok() -> bool:
    """Whether :func:`split8` may use LLVM's vector compress: it exists from LLVM 19 on,
    and compiles to one instruction with AVX-512 (``vpcompressq``); elsewhere the scalar
    loop is at least as fast as LLVM's expansion of it."""
    if _llvm.llvm_version_info < (19,):
        return False
    return "+avx512f" in cpu_features(_llvm)


#: Whether :func:`split8` takes the vector path for float32 and float64 rows (decided once
#: per process; the scalar path gives the same counts and indices, see the tests).
COMPRESS_OK = _compress_ok()


@njit_serial(inline="always")
def split8_scalar(x, t, lo, hi, bi, nd, kc):
    """The 8 elements ``x[t : t + 8]``, split by two thresholds ``lo <= hi``: the indices of
    those above ``hi`` go to ``bi[nd:]``, those neither above ``hi`` nor below ``lo`` (NaN
    included) to ``bi[kc:]``, each in index order. Returns ``n_up + (n_mid << 16)``. Writes
    all 8 slots from ``nd`` and from ``kc`` (the slots past the counts hold junk).
    Branch-free: every index goes to both regions and each count advances by its test."""
    a = 0
    m = 0
    for u in range(t, t + 8):
        v = x[u]
        up = v > hi
        bi[nd + a] = u
        bi[kc + m] = u
        a += up
        m += not (v < lo) and not up
    return a + (m << 16)


def _compress_store(context, builder, vec, mask, aty, arr, start):
    """Store the lanes of the 8-lane ``vec`` whose ``mask`` bit is set, packed and in lane
    order, at ``arr[start:]`` of the Numba array type ``aty`` (``llvm.experimental.vector
    .compress``, one ``vpcompress`` with AVX-512; the store writes all 8 slots, zeros past
    the count). Returns the count (int64)."""
    vt = vec.type
    el = vt.element
    if isinstance(el, ir.DoubleType):
        suffix = "f64"
    elif isinstance(el, ir.FloatType):
        suffix = "f32"
    else:
        suffix = f"i{el.width}"
    name = f"llvm.experimental.vector.compress.v8{suffix}"
    vb = ir.VectorType(ir.IntType(1), 8)
    comp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vb, vt]), name)
    i8 = ir.IntType(8)
    pop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i8, [i8]), "llvm.ctpop.i8")
    packed = builder.call(comp, [vec, mask, ir.Constant(vt, [0] * 8)])
    dst = cgutils.get_item_pointer(context, builder, aty, arr, [start])
    builder.store(packed, builder.bitcast(dst, vt.as_pointer()), align=aty.dtype.bitwidth // 8)
    return builder.zext(builder.call(pop, [builder.bitcast(mask, i8)]), ir.IntType(64))


@intrinsic
def _split8_simd(typingctx, x, t, lo, hi, bi, nd, kc):
    """:func:`split8_scalar` for a contiguous float32/float64 ``x`` and contiguous int64
    ``bi``: one 8-lane load, two compares and two ``llvm.experimental.vector.compress`` of
    the index vector (each then stored whole, 8 slots; the lanes past the count are 0)."""
    if not (
        isinstance(x, types.Array)
        and x.dtype in (types.float32, types.float64)
        and x.ndim == 1
        and x.layout == "C"
        and isinstance(bi, types.Array)
        and bi.dtype == types.int64
        and bi.layout == "C"
    ):
        return None

    def codegen(context, builder, sig, args):
        xa, ta, loa, hia, bia, nda, kca = args
        xty, bty = sig.args[0], sig.args[4]
        xarr = context.make_array(xty)(context, builder, xa)
        barr = context.make_array(bty)(context, builder, bia)
        ft = context.get_value_type(xty.dtype)
        i64 = ir.IntType(64)
        vf, vq = ir.VectorType(ft, 8), ir.VectorType(i64, 8)
        lo_v = context.cast(builder, loa, sig.args[2], xty.dtype)
        hi_v = context.cast(builder, hia, sig.args[3], xty.dtype)
        p = cgutils.get_item_pointer(context, builder, xty, xarr, [ta])
        v = builder.load(builder.bitcast(p, vf.as_pointer()), align=xty.dtype.bitwidth // 8)
        up = builder.fcmp_ordered(">", v, _splat(builder, hi_v, vf))  # v > hi (NaN: false)
        ge = builder.fcmp_unordered(">=", v, _splat(builder, lo_v, vf))  # not (v < lo) (NaN: true)
        mid = builder.and_(ge, builder.not_(up))
        idx = builder.add(_splat(builder, ta, vq), ir.Constant(vq, list(range(8))))
        counts = [
            _compress_store(context, builder, idx, mask, bty, barr, start)
            for mask, start in ((up, nda), (mid, kca))
        ]
        return builder.add(counts[0], builder.shl(counts[1], ir.Constant(i64, 16)))

    return types.int64(x, types.intp, lo, hi, bi, types.intp, types.intp), codegen


def split8(x, t, lo, hi, bi, nd, kc):
    """:func:`split8_scalar`, by one vector step where :data:`COMPRESS_OK` and the arrays
    allow (jitted code only)."""
    raise NotImplementedError


@overload(split8, inline="always")
def _split8_impl(x, t, lo, hi, bi, nd, kc):
    simd = (
        COMPRESS_OK
        and x.dtype in (types.float32, types.float64)
        and lo == x.dtype  # thresholds of the row's own type: the compares stay exact
        and hi == x.dtype
        and x.ndim == 1
        and x.layout == "C"
        and bi.dtype == types.int64
        and bi.layout == "C"
    )
    if simd:
        return lambda x, t, lo, hi, bi, nd, kc: _split8_simd(x, t, lo, hi, bi, nd, kc)
    return lambda x, t, lo, hi, bi, nd, kc: split8_scalar(x, t, lo, hi, bi, nd, kc)


@njit_serial(inline="always")
def part8_scalar(x, t, p, dg, ng, dl, nl):
    """The 8 values ``x[t : t + 8]`` split by a pivot ``p``: those above it go to ``dg[ng:]``,
    those below to ``dl[nl:]``, each in index order (those equal to it, nowhere). Returns
    ``n_above + (n_below << 16)``. Writes all 8 slots from ``ng`` and from ``nl`` (junk past
    the counts). Branch-free, as :func:`split8_scalar`. No NaN in ``x``."""
    a = 0
    b = 0
    for u in range(t, t + 8):
        v = x[u]
        dg[ng + a] = v
        dl[nl + b] = v
        a += v > p
        b += v < p
    return a + (b << 16)


@intrinsic
def _part8_simd(typingctx, x, t, p, dg, ng, dl, nl):
    """:func:`part8_scalar` for contiguous float32/float64 ``x``, ``dg`` and ``dl`` of one
    dtype and a pivot of that dtype: one 8-lane load, two compares, two compress-stores."""
    arrs = (x, dg, dl)
    if not (
        all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in arrs)
        and x.dtype in (types.float32, types.float64)
        and dg.dtype == x.dtype
        and dl.dtype == x.dtype
        and p == x.dtype
    ):
        return None

    def codegen(context, builder, sig, args):
        xa, ta, pa, ga, nga, la, nla = args
        xty, gty, lty = sig.args[0], sig.args[3], sig.args[5]
        xarr = context.make_array(xty)(context, builder, xa)
        vf = ir.VectorType(context.get_value_type(xty.dtype), 8)
        ptr = cgutils.get_item_pointer(context, builder, xty, xarr, [ta])
        v = builder.load(builder.bitcast(ptr, vf.as_pointer()), align=xty.dtype.bitwidth // 8)
        pv = _splat(builder, pa, vf)
        counts = [
            _compress_store(
                context,
                builder,
                v,
                mask,
                aty,
                context.make_array(aty)(context, builder, arr),
                start,
            )
            for mask, aty, arr, start in (
                (builder.fcmp_ordered(">", v, pv), gty, ga, nga),
                (builder.fcmp_ordered("<", v, pv), lty, la, nla),
            )
        ]
        return builder.add(counts[0], builder.shl(counts[1], ir.Constant(ir.IntType(64), 16)))

    return types.int64(x, types.intp, p, dg, types.intp, dl, types.intp), codegen


def part8(x, t, p, dg, ng, dl, nl):
    """:func:`part8_scalar`, by one vector step where :data:`COMPRESS_OK` and the arrays
    allow (jitted code only)."""
    raise NotImplementedError


@overload(part8, inline="always")
def _part8_impl(x, t, p, dg, ng, dl, nl):
    arrs = (x, dg, dl)
    simd = (
        COMPRESS_OK
        and all(a.ndim == 1 and a.layout == "C" and a.dtype == x.dtype for a in arrs)
        and x.dtype in (types.float32, types.float64)
        and p == x.dtype
    )
    if simd:
        return lambda x, t, p, dg, ng, dl, nl: _part8_simd(x, t, p, dg, ng, dl, nl)
    return lambda x, t, p, dg, ng, dl, nl: part8_scalar(x, t, p, dg, ng, dl, nl)


@njit_serial
def _value_at_rank(src, n, rank, w, limit=-1):
    """The value at 0-based ``rank`` of ``src[:n]`` ordered largest first (values alone: no
    index tie-break is needed to name a value). ``src`` is left unchanged; ``w`` is scratch
    of shape (3, >= n) and ``src``'s dtype. No NaN in ``src[:n]``. (A vector step writes 8
    slots from each count, but only while 8 elements remain, so never past ``n``.)

    Quickselect with an out-of-place three-way partition (:func:`part8`): the values above
    the pivot go to one row of ``w`` and those below to another, 8 at a time by vector
    compress where the CPU has it (no data-dependent branch, no loop-carried swap: the pair
    partition of :func:`_select` costs several times more per element). Values equal to the
    pivot are dropped, so every round shrinks the range and repeated values cost nothing.
    Past the depth limit (``limit`` rounds; -1: introselect's, :func:`_depth_limit`) the
    range is heapsorted."""
    for i in range(n):
        w[0, i] = src[i]
    cur = 0
    m = n
    if limit < 0:
        limit = _depth_limit(n)
    while m > _SMALL:
        xs = w[cur]
        if limit == 0:
            seg = xs[:m]
            _heapsort(seg, np.zeros(m, dtype=np.int64), 0, m)  # (the indices are ignored)
            return seg[rank]
        limit -= 1
        a, b, c = _three_positions(0, m)
        pa, pb, pc = xs[a], xs[b], xs[c]
        p = max(min(pa, pb), min(max(pa, pb), pc))  # the median of three
        g = (cur + 1) % 3
        lw = (cur + 2) % 3
        dg = w[g]
        dl = w[lw]
        ng = 0
        nl = 0
        t = 0
        while t + 8 <= m:
            r = part8(xs, t, p, dg, ng, dl, nl)
            ng += r & 0xFFFF
            nl += r >> 16
            t += 8
        while t < m:
            v = xs[t]
            dg[ng] = v
            dl[nl] = v
            ng += v > p
            nl += v < p
            t += 1
        if rank < ng:
            cur = g
            m = ng
        elif rank < m - nl:
            return p
        else:
            rank -= m - nl
            cur = lw
            m = nl
    xs = w[cur]
    for i in range(1, m):  # insertion sort, largest first
        v = xs[i]
        j = i - 1
        while j >= 0 and xs[j] < v:
            xs[j + 1] = xs[j]
            j -= 1
        xs[j + 1] = v
    return xs[rank]


@njit_serial
def _append_two(x, k, bv, bi, lo, hi, top_values=True):
    # One pass over x with two thresholds lo <= hi: elements above hi go to bv/bi[:nd],
    # those in [lo, hi] (and NaN) to bv/bi[k : k + nc]. Returns (nd, nc, fits); fits is
    # False when a region would overflow (nd > k, or k + nc past the buffer), and the
    # caller then falls back to the one-threshold scan.
    #
    # Branch-free while both regions have room for a step: every index is written to both
    # regions' next slots and each count advances by its test (a branch per element taken
    # ~15% of the time at random cost ~20% of a row's top-k in mispredictions); the values
    # are read back by index at the end (those above hi only with ``top_values``: an
    # unordered caller never looks at them).
    cap = bv.shape[0] - 1
    n = x.shape[0]
    nd = 0
    nc = 0
    i = 0
    while i + _APPEND_STEP <= n and nd + _APPEND_STEP <= k and k + nc + _APPEND_STEP <= cap:
        for t in range(i, i + _APPEND_STEP, 8):
            r = split8(x, t, lo, hi, bi, nd, k + nc)
            nd += r & 0xFFFF
            nc += r >> 16
        i += _APPEND_STEP
    while i < n:
        v = x[i]
        if v > hi:
            if nd == k:
                return nd, nc, False
            bi[nd] = i
            nd += 1
        elif not (v < lo):
            if k + nc == cap:
                return nd, nc, False
            bi[k + nc] = i
            nc += 1
        i += 1
    if top_values:
        for t in range(nd):
            bv[t] = x[bi[t]]
    for t in range(k, k + nc):
        bv[t] = x[bi[t]]
    return nd, nc, True


@njit_serial
def _take_band(bv, bi, k, nd, nc, w):
    """Complete the top k from the band: ``bv``/``bi[:nd]`` hold the elements above the
    upper threshold, ``bv``/``bi[k : k + nc]`` those between the thresholds in index order
    (as :func:`_append_two` leaves them), ``nd <= k <= nd + nc``. Moves the band's best
    ``k - nd`` to ``bv``/``bi[nd:k]``: its value ``T`` at that rank (values alone, by
    :func:`_value_at_rank` with scratch ``w``), a count of the values above ``T``, then one
    pass in index order that keeps every value above ``T`` and the first of those equal to
    it, as many as the rank order (value desc, index asc) admits."""
    need = k - nd
    if need == 0:
        return
    if nc == need:
        for t in range(need):
            bv[nd + t] = bv[k + t]
            bi[nd + t] = bi[k + t]
        return
    thr = _value_at_rank(bv[k : k + nc], nc, need - 1, w)
    above = 0
    for t in range(k, k + nc):
        above += bv[t] > thr
    ties = need - above  # (>= 1: thr is a value of the band)
    c = 0
    for t in range(k, k + nc):  # (slot nd + c <= t: no unread element is overwritten)
        v = bv[t]
        eq = v == thr
        take = (v > thr) | (eq & (ties > 0))
        ties -= eq
        bv[nd + c] = v
        bi[nd + c] = bi[t]
        c += take


@njit_serial
def _sample_size(n, k):
    """Positions of the strided sample that :func:`_topk_core` takes from a row of ``n``
    at this ``k`` (every ``n // ns``-th from 0; when the row takes the sampling path)."""
    return min(_SAMPLE, n // _SAMPLE_STRIDE, -(-_SAMPLE_MU * n // k))


@njit_serial
def _topk_core(x, k, out, bv, bi, ordered=True):
    """Core of :func:`topk_row` on any real dtype; returns True if ``x`` holds a NaN.

    ``bv``/``bi``: scratch of equal length ``_buffer_size(len(x), k)``.
    Writes ``out[:k]`` (undefined when a NaN was found): ordered by rank, or with
    ``ordered=False`` the same k indices in an unspecified order (no final sort).
    """
    n = x.shape[0]
    if k <= 0:
        return _has_nan(x)
    cap = bv.shape[0] - 1
    cnt = 0
    done = False
    if cap >= n:
        pass  # the whole row fits the buffer: plain introselect below
    elif k >= _SAMPLE_MIN_K and n >= _SAMPLE_STRIDE * _SAMPLE_MIN:
        ns = _sample_size(n, k)
        if k * ns >= _SAMPLE_MIN_MU * n:
            # First threshold from a strided sample of ns positions: with mu = k ns / n
            # expected true top-k members in the sample, take the sample element of rank
            # ~mu + _SAMPLE_Z sqrt(mu), so that ~k (1 + _SAMPLE_Z / sqrt(mu)) elements pass.
            stride = n // ns
            sv = np.empty(ns, dtype=x.dtype)
            for t in range(ns):
                sv[t] = x[t * stride]
            if _has_nan(sv):
                return True
            # (scratch of the value selections: the sample, then the band below)
            w = np.empty((3, max(ns, cap - k)), dtype=x.dtype)
            mu = k * ns / n
            r = min(ns, int(mu + _SAMPLE_Z * np.sqrt(mu)) + _SAMPLE_SLACK)
            lo = _value_at_rank(sv, ns, r - 1, w)
            # A second, upper threshold from the same sample (the element of rank ~mu -
            # _SAMPLE_Z sqrt(mu)): elements above it are in the top k with the same odds, so
            # only those between the two thresholds (~2 _SAMPLE_Z sqrt(mu) n / ns) need the
            # final selection, instead of all ~k (1 + _SAMPLE_Z / sqrt(mu)) that pass.
            r_hi = max(1, int(mu - _SAMPLE_Z * np.sqrt(mu)) - _SAMPLE_SLACK)
            if r_hi < r:
                hi = _value_at_rank(sv, ns, r_hi - 1, w)
                nd, nc, fits = _append_two(x, k, bv, bi, lo, hi, ordered)
                if fits and _has_nan(bv[k : k + nc]):
                    return True
                if fits and nd <= k <= nd + nc:  # the top k: the nd above, the rest between
                    _take_band(bv, bi, k, nd, nc, w)
                    cnt = k
                    done = True
            if not done:
                # The expected pass rate r / ns is above 1/128 here (r >= 34, ns <= 4096):
                # most blocks would pass a block screen, so a plain scan is cheaper.
                cnt, _, _, bad = _append_range(x, 0, n, k, bv, bi, lo, False, 0)
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
    if ordered:
        _sorted_indices(bv, bi, k, out)
    else:
        for t in range(k):
            out[t] = bi[t]
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


@njit_serial
def topk_set_into(x, k, out, bv, bi):
    """The indices :func:`topk_row_into` writes, in an unspecified order (the final sort by
    rank is skipped: for a caller that only needs the set, e.g. to sort it by index)."""
    if _topk_core(x, k, out, bv, bi, False):
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
