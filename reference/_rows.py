"""Row primitives shared by the dense and SparQ kernels: reading K/V in their own dtype, and
exact attention of a group of query heads over a list of positions.

Caches reach the kernels C-contiguous in their own dtype (never as float64 copies):
float32 and float64 are read as they are; float16 arrives as a ``uint16`` view and bfloat16
as an ``int16`` view of the bit patterns (the view's type selects the decoder at compile
time). Every element is widened exactly to float64 by :func:`widen` as the loops read it:
float16 by the hardware conversion (LLVM ``fpext half``, F16C/AVX-512 ``vcvtph2ps`` where
the CPU has it, so it vectorises), bfloat16 as the top half of a float32. All arithmetic
is float64.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from reference._config import (
    FASTMATH_CHAIN,
    GATHER_NEAR_LOCALITY,
    PREFETCH_LOCALITY,
    njit_serial,
)
from reference._config import GATHER_REQUESTS as GATHER_REQUESTS  # (the kernels' setting)
from reference._vexp import exp_nonpos_into

#: Encodings of a cache's elements (Python side; in jitted code the view's dtype says it:
#: float16 bits as ``uint16``, bfloat16 bits as ``int16``).
ENC_NATIVE, ENC_F16, ENC_BF16 = 0, 1, 2

#: Rows ahead that the passes over every valid row (dense attention) prefetch. Measured on
#: the development host (dense, S = 32768, two threads, cache-cold calls, alternating
#: processes): float32 `Hkv = 8` 5.74 ms at 16 against 6.18 ms at 8 when the memory read at
#: 72-75 GB/s (5.81 at 32; 9.5 without prefetch at 43-59 GB/s), the same at 41-44 GB/s;
#: float16 `Hkv = 8` 4.98-5.12 against 5.43-5.64 ms, `Hkv = 32` 13.7-14.3 against 14.4-15.0
#: ms.
STREAM_AHEAD = 16
#: SparQ's passes over its kept rows request each row GATHER_REQUESTS times (4 on AMD Zen,
#: 1 elsewhere: :func:`reference._config.gather_requests`), at
#: GATHER_AHEAD, ..., 2 * GATHER_AHEAD / GATHER_REQUESTS and GATHER_AHEAD / GATHER_REQUESTS
#: rows ahead (:func:`prefetch_ahead`; with several, the nearest into the L1:
#: :data:`reference._config.GATHER_NEAR_LOCALITY`). Gathered rows of kept positions are ~S/k rows
#: apart, so the hardware prefetchers do not see them coming (without software prefetch
#: the K pass over 4096 of 32768 float32 rows of 8 KV heads took 3.5 ms on one thread,
#: with one request 8 rows ahead 1.0 ms). A software prefetch that finds the core's miss
#: queue full may be dropped (the measurements below fit that), and the line is then
#: fetched on demand, a full memory latency with the arithmetic stalled behind it; a
#: request repeated nearer the row costs a cache hit when the first one went through. On
#: the Zen 4 development host (2 vCPUs;
#: 8 KV heads, 4096 of 32768 float32 rows each, four heads, two threads, cache-cold) the
#: K pass took 1.16-1.60 ms with one request 8 rows ahead (4 to 128 rows ahead: the same)
#: and 0.94-1.25 ms with requests 16, 12, 8 and 4 rows ahead, against 0.70-0.91 ms for a
#: pass that only reads one element of every line of the same rows and 0.56-0.71 ms for
#: the arithmetic on rows in cache. With the arithmetic on rows in cache and the gathered
#: rows only requested, a load of each row's first line cost little beyond the reads, a
#: load of its last line more and a load of every line as much as the K pass: the later
#: lines of a row were the ones not there in time. (``requests`` above ``ahead`` repeats
#: the same distance.)
GATHER_AHEAD = 16


def _prefetch_intrinsic(name: str, locality: int, doc: str):
    """An intrinsic ``f(arr, i, j)``: ``llvm.prefetch`` (read, data cache) of the address of
    ``arr[i, j]`` with the given locality (3: into the L1, 2: into the L2)."""

    def prefetch(typingctx, arr, i, j):
        def codegen(context, builder, sig, args):
            aryty = sig.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]])
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            loc = ir.Constant(i32, locality)
            builder.call(fn, [ptr, ir.Constant(i32, 0), loc, ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.none(arr, types.intp, types.intp), codegen

    prefetch.__name__ = prefetch.__qualname__ = name
    prefetch.__doc__ = doc
    return intrinsic(prefetch)


#: ``_prefetch(arr, i, j)``: request the line of ``arr[i, j]`` with the host's locality.
_prefetch = _prefetch_intrinsic(
    "_prefetch",
    PREFETCH_LOCALITY,
    "``llvm.prefetch`` of the address of ``arr[i, j]`` with the host's locality "
    "(:data:`reference._config.PREFETCH_LOCALITY`: into the L1 or the L2).",
)
#: ``_prefetch_near(arr, i, j)``: the same into the L1 (the nearest of several requests).
_prefetch_near = _prefetch_intrinsic(
    "_prefetch_near",
    GATHER_NEAR_LOCALITY,
    "``llvm.prefetch`` of the address of ``arr[i, j]`` with the locality of the nearest "
    "of several requests (:data:`reference._config.GATHER_NEAR_LOCALITY`: into the L1).",
)


#: Bytes per cache line that the software prefetches assume (one prefetch per line).
CACHE_LINE_BYTES = 64


def line_elems(A):
    """Elements of ``A`` per cache line (at least 1): the stride of the prefetches. A
    compile-time constant of the array type (jitted code only)."""
    raise NotImplementedError


@overload(line_elems, inline="always")
def _line_elems_impl(A):
    # Resolved when the caller is typed: a runtime ``64 // A.itemsize`` (and a range with a
    # runtime step) cost two integer divisions per prefetched row, which made an in-cache
    # K pass over 128-element float32 rows 3.6x slower at one head.
    n = max(1, CACHE_LINE_BYTES // (A.dtype.bitwidth // 8))
    return lambda A: n


def row_at_a_time(A):
    """Whether the V pass should give the heads left over from its blocks of four one row of
    ``A`` at a time (4- and 8-byte elements) rather than four rows at once (16-bit
    elements). A compile-time constant of the array type (jitted code only)."""
    raise NotImplementedError


@overload(row_at_a_time, inline="always")
def _row_at_a_time_impl(A):
    # On the development host (g = 1, 32 KV heads, S = 32768, two threads), a V pass that
    # walked four rows at once took stream + in-core time for float32 (16.4 ms, streaming
    # read 12.0 ms, in cache 3.3 ms) and one row at a time hid its in-core work (12.6 ms,
    # 5.5 ms in cache; two rows at once: 15.5 ms). For float16, where the pass is bound by
    # its in-core work (widening), four rows at once stayed faster (7.0 ms against 7.8 ms).
    seq = A.dtype.bitwidth >= 32
    return lambda A: seq


def bits(A):
    """``A`` viewed as unsigned integers of its element width (a bit-for-bit comparison:
    NaN equals itself, -0.0 differs from 0.0). Jitted code only."""
    raise NotImplementedError


@overload(bits, inline="always")
def _bits_impl(A):
    ut = {16: np.uint16, 32: np.uint32, 64: np.uint64}[A.dtype.bitwidth]
    return lambda A: A.view(ut)


@njit_serial(inline="always")
def _request_row(A, j, near):
    """Request every cache line of row ``j`` of the 2-D array ``A``, also when the row does
    not start on a line boundary: into the L1 with ``near`` (a constant at each call site,
    so the choice is folded away), else with the host's locality."""
    step = line_elems(A)
    n = A.shape[1]
    c = 0
    while c < n:
        if near:
            _prefetch_near(A, j, c)
        else:
            _prefetch(A, j, c)
        c += step
    # A row that starts inside a line ends in a line that the loop above does not reach
    # (NumPy's large arrays start 16 bytes into a line, so a 512-byte row spans nine).
    # Without this request its last line was fetched on demand: on the development host a
    # gathered row then cost a full memory latency however early the loop above ran, and
    # no arithmetic overlapped the gathers.
    if n > 0:
        if near:
            _prefetch_near(A, j, n - 1)
        else:
            _prefetch(A, j, n - 1)


@njit_serial
def prefetch_row(A, j):
    """Ask the cache to fetch row ``j`` of the 2-D array ``A`` (every cache line, also when
    the row does not start on a line boundary), with the host's locality."""
    _request_row(A, j, False)


@njit_serial
def prefetch_row_near(A, j):
    """:func:`prefetch_row` into the L1 (:data:`reference._config.GATHER_NEAR_LOCALITY`):
    the nearest of a row's several requests."""
    _request_row(A, j, True)


@njit_serial(inline="always")
def prefetch_ahead(A, positions, t, count, n_pos, ahead, requests):
    """Request (:func:`prefetch_row`) the rows ``positions[u]`` of ``A`` for ``u`` in
    ``[t + a, t + a + count)`` (clipped to ``n_pos``), for ``a = ahead`` and then each
    ``ahead // requests`` nearer, ``requests`` distances in all (farthest first). A pass that
    calls it at every step of ``count`` rows requests each row ``requests`` times; ``ahead``
    0 requests nothing. With several requests the nearest goes into the L1
    (:func:`prefetch_row_near`), the others with the host's locality."""
    if ahead <= 0:
        return
    step = ahead // requests if requests > 1 else ahead
    a = ahead
    for rq in range(requests):
        if requests > 1 and rq == requests - 1:
            for u in range(t + a, min(t + a + count, n_pos)):
                prefetch_row_near(A, positions[u])
        else:
            for u in range(t + a, min(t + a + count, n_pos)):
                prefetch_row(A, positions[u])
        a -= step


@intrinsic
def _f16_to_f64(typingctx, x):
    """IEEE binary16 bits (uint16) -> float64, exactly (``fpext half to double``)."""

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.DoubleType())

    return types.float64(types.uint16), codegen


@intrinsic
def _bf16_to_f64(typingctx, x):
    """bfloat16 bits (int16) -> float64, exactly: the bits are the top half of a float32."""

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        w = builder.shl(builder.zext(args[0], i32), ir.Constant(i32, 16))
        return builder.fpext(builder.bitcast(w, ir.FloatType()), ir.DoubleType())

    return types.float64(types.int16), codegen


@intrinsic
def opaque_int(typingctx, x):
    """``x`` (an integer), unchanged, but hidden from the optimiser: a value that is a
    compile-time constant at a call site (a default argument, a module constant) reaches
    the code after it as a run-time value, so loops that take it are not specialised for
    it (see :func:`_v_accumulate`)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        (v,) = args
        fnty = ir.FunctionType(v.type, [v.type])
        return builder.asm(fnty, "", "=r,0", [v], side_effect=False, name="opaque")

    return x(x), codegen


def widen(x):
    """One cache element as float64: float32/float64 values as they are, ``uint16`` as
    float16 bits, ``int16`` as bfloat16 bits. Jitted code only."""
    raise NotImplementedError


@overload(widen, inline="always")
def _widen_impl(x):
    if isinstance(x, types.Float):
        return lambda x: np.float64(x)
    if x == types.uint16:
        return lambda x: _f16_to_f64(x)
    if x == types.int16:
        return lambda x: _bf16_to_f64(x)
    return None


@intrinsic
def maxnum(typingctx, a, b):
    """``llvm.maxnum.f64``: the larger of two float64 (a NaN operand yields the other).

    Equal to ``max(a, b)`` for non-NaN operands (except possibly the sign of a zero result),
    and, unlike ``max`` (a compare and select that LLVM vectorises only with ``nnan``), a
    loop reduction of it vectorises under the project's flags (see :func:`max_of`)."""

    def codegen(context, builder, sig, args):
        dbl = ir.DoubleType()
        fnty = ir.FunctionType(dbl, [dbl, dbl])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.maxnum.f64")
        return builder.call(fn, args)

    return types.float64(types.float64, types.float64), codegen


@njit_serial
def max_of(x, m):
    """``max(m, max(x))`` for a 1-D float64 ``x`` with no NaN (a vectorised reduction; callers
    detect NaN separately, since :func:`maxnum` skips it). Exact, so order-independent."""
    for i in range(x.shape[0]):
        m = maxnum(m, x[i])
    return m


@njit_serial
def widen_into(src, dst):
    """``dst[i] = widen(src[i])`` for 1-D arrays (tests and the error path use it)."""
    for i in range(src.shape[0]):
        dst[i] = widen(src[i])


@njit_serial(inline="always")
def _dot4x4(qg, h, K, i0, i1, i2, i3, t, scale, logits):
    """``logits[h + a, t + b] = scale * qg[h + a] . K[i_b]`` for a, b < 4: sixteen dot
    products in one sweep over ``d``, so that each q element loaded feeds four rows and each
    K element four heads."""
    d = qg.shape[1]
    q0, q1, q2, q3 = qg[h], qg[h + 1], qg[h + 2], qg[h + 3]
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = 0.0
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = 0.0
    for c in range(d):
        k0, k1 = widen(K[i0, c]), widen(K[i1, c])
        k2, k3 = widen(K[i2, c]), widen(K[i3, c])
        x0, x1, x2, x3 = q0[c], q1[c], q2[c], q3[c]
        a00 += x0 * k0
        a10 += x1 * k0
        a20 += x2 * k0
        a30 += x3 * k0
        a01 += x0 * k1
        a11 += x1 * k1
        a21 += x2 * k1
        a31 += x3 * k1
        a02 += x0 * k2
        a12 += x1 * k2
        a22 += x2 * k2
        a32 += x3 * k2
        a03 += x0 * k3
        a13 += x1 * k3
        a23 += x2 * k3
        a33 += x3 * k3
    logits[h, t] = a00 * scale
    logits[h, t + 1] = a01 * scale
    logits[h, t + 2] = a02 * scale
    logits[h, t + 3] = a03 * scale
    logits[h + 1, t] = a10 * scale
    logits[h + 1, t + 1] = a11 * scale
    logits[h + 1, t + 2] = a12 * scale
    logits[h + 1, t + 3] = a13 * scale
    logits[h + 2, t] = a20 * scale
    logits[h + 2, t + 1] = a21 * scale
    logits[h + 2, t + 2] = a22 * scale
    logits[h + 2, t + 3] = a23 * scale
    logits[h + 3, t] = a30 * scale
    logits[h + 3, t + 1] = a31 * scale
    logits[h + 3, t + 2] = a32 * scale
    logits[h + 3, t + 3] = a33 * scale


@njit_serial
def _k_pass(qg, K, positions, n_pos, scale, logits, ahead=STREAM_AHEAD, requests=1):
    """``logits[h, t] = scale * qg[h] . K[positions[t]]`` for ``t < n_pos``, each row
    requested ahead as :func:`prefetch_ahead` says. Heads in blocks of 4 take four
    rows at a time (:func:`_dot4x4`: each load of a q element feeds four rows and each K
    element four heads; in cache it was 2.4x faster than one row at a time for four heads);
    the ``n_pos % 4`` last rows go one at a time. The remaining ``G % 4`` heads take each
    row one head at a time while it is in cache. (Taking four rows at a time for a
    remaining head gave the same bits but was slower: at g = 1, 32 KV heads, S = 32768,
    float32, two threads, 14.6 ms streaming and 3.7 ms in cache, against 11.3 ms and 3.3 ms
    one row at a time, with the streaming read of K at 10.6 ms.) Which code path computes a
    logit depends only on ``G``, ``n_pos`` and its index, never on the cache dtype."""
    G, d = qg.shape
    g4 = G - G % 4  # heads in blocks of four; the rest one at a time
    t = 0
    while t < n_pos:
        four = t + 4 <= n_pos
        # rows ``ahead`` further on (0: no prefetch), ``requests`` times each
        prefetch_ahead(K, positions, t, 4 if four else 1, n_pos, ahead, requests)
        if four:
            i0, i1, i2, i3 = positions[t], positions[t + 1], positions[t + 2], positions[t + 3]
            for h in range(0, g4, 4):
                _dot4x4(qg, h, K, i0, i1, i2, i3, t, scale, logits)
        for rr in range(4 if four else 1):
            i = positions[t + rr]
            tt = t + rr
            if not four:
                for h in range(0, g4, 4):
                    q0, q1, q2, q3 = qg[h], qg[h + 1], qg[h + 2], qg[h + 3]
                    a0 = a1 = a2 = a3 = 0.0
                    for c in range(d):
                        kc = widen(K[i, c])
                        a0 += q0[c] * kc
                        a1 += q1[c] * kc
                        a2 += q2[c] * kc
                        a3 += q3[c] * kc
                    logits[h, tt] = a0 * scale
                    logits[h + 1, tt] = a1 * scale
                    logits[h + 2, tt] = a2 * scale
                    logits[h + 3, tt] = a3 * scale
            for h in range(g4, G):
                qh = qg[h]
                a0 = 0.0
                for c in range(d):
                    a0 += qh[c] * widen(K[i, c])
                logits[h, tt] = a0 * scale
        t += 4 if four else 1


#: Elements per call of the vector exp (its input and output stay in L1). Exps of 4 x 32768
#: logits, one thread, on the development host: 1.17 ns each at 256, 1.00 at 1024, 1.11 at
#: 4096, 1.07 at 16384.
EXP_CHUNK = 1024


@njit_serial
def softmax_weights(x, m):
    """In place: ``x[t] = exp(x[t] - m)`` for a 1-D float64 ``x``; returns ``sum(x)``.

    Exps by :func:`reference._vexp.exp_nonpos_into` (``x <= m``: exactly 0 for a term below
    ``exp(-708)``) in chunks of :data:`EXP_CHUNK`; the sum is a
    serial float64 loop in index order (reassociated only within a fixed vector width)."""
    n = x.shape[0]
    copy = np.empty(EXP_CHUNK)  # the exp's input and output must not overlap (SIMD)
    total = 0.0
    for i0 in range(0, n, EXP_CHUNK):
        i1 = min(n, i0 + EXP_CHUNK)
        seg = x[i0:i1]
        for t in range(i1 - i0):
            copy[t] = seg[t]
        exp_nonpos_into(copy[: i1 - i0], seg, m)
        for t in range(i1 - i0):
            total += seg[t]
    return total


@njit_serial
def _v_pass(V, positions, n_pos, w, y, ahead=STREAM_AHEAD, requests=1):
    """``y[h] = sum_t w[h, t] V[positions[t]]`` (4 positions x 4 heads per step).

    The sums run in a buffer of this call's that starts on a cache line and are copied to
    ``y`` at the end (the same values: only where they are held changes). The pass reads
    and writes its outputs once per row (once per four rows in a block of four heads), and
    outputs that straddle cache lines made it slow: on the Zen 5 host, one head over 256
    float32 rows in cache, two threads, 16.6-17.2 G FMA/s with ``y`` on a 64-byte boundary
    against 10.0-11.1 with ``y`` 32 bytes off it (and 11.2-17.4 over eight placements of
    the callers' arrays); the callers' ``y`` (dense's per-part outputs, SparQ's returned
    ``y``) sit wherever their scratch or output array puts them."""
    G, d = y.shape
    buf = np.empty(G * d + CACHE_LINE_BYTES // 8)
    o = ((-buf.ctypes.data) % CACHE_LINE_BYTES) // 8
    ya = buf[o : o + G * d].reshape((G, d))
    for h in range(G):
        for c in range(d):
            ya[h, c] = 0.0
    _v_accumulate(V, positions, n_pos, w, ya, ahead, requests)
    for h in range(G):
        for c in range(d):
            y[h, c] = ya[h, c]


@njit_serial(fastmath=set(FASTMATH_CHAIN))
def _v_accumulate(V, positions, n_pos, w, y, ahead=STREAM_AHEAD, requests=1):
    """``y[h] += sum_t w[h, t] V[positions[t]]`` in steps of 4 positions x 4 heads, then the
    ``n_pos % 4`` last positions one at a time.

    Every head, in a block of four or left over, adds the positions to ``y`` one by one,
    one FMA each in position order (contraction only, no reassociation):
    ``y[h, c] = fma(w[h, t], V[positions[t], c], y[h, c])``. So the result does not depend
    on how the heads or positions are blocked (consecutive calls over chunks add as one call
    over all of them), and a float16 or bfloat16 cache and its exact float64 copy agree to
    rounding. The ``G % 4`` heads left over loop over one row at a time for 4- and 8-byte
    ``V`` and over the four rows at once for 16-bit ``V`` (:func:`row_at_a_time`), with the
    same FMAs in the same order. (In a block, the chain of four FMAs per element replaced a
    sum of the four products added to ``y``: one instruction fewer per element and head,
    the pass over float32 rows in cache 4% faster on the Zen 5 host, 36.1-36.6 against
    34.7-35.0 G FMA/s on one thread, both forms compiled in one process.)"""
    G, d = y.shape
    # The prefetch distances as run-time values: compiled with them constant (the dense
    # kernel's defaults, step 7's module constants), the pass ran at half the speed over
    # float32 and float64 rows on the Zen 5 host (17 against 35 G FMA/s in cache, one
    # thread; the kernels as loaded from the disk cache), a third of its time in flag
    # tests ahead of the vector loop.
    ahead = opaque_int(ahead)
    requests = opaque_int(requests)
    t = 0
    while t + 4 <= n_pos:
        prefetch_ahead(V, positions, t, 4, n_pos, ahead, requests)  # as in _k_pass
        i0, i1, i2, i3 = positions[t], positions[t + 1], positions[t + 2], positions[t + 3]
        h = 0
        while h + 4 <= G:
            y0, y1, y2, y3 = y[h], y[h + 1], y[h + 2], y[h + 3]
            w00, w01, w02, w03 = w[h, t], w[h, t + 1], w[h, t + 2], w[h, t + 3]
            w10, w11, w12, w13 = w[h + 1, t], w[h + 1, t + 1], w[h + 1, t + 2], w[h + 1, t + 3]
            w20, w21, w22, w23 = w[h + 2, t], w[h + 2, t + 1], w[h + 2, t + 2], w[h + 2, t + 3]
            w30, w31, w32, w33 = w[h + 3, t], w[h + 3, t + 1], w[h + 3, t + 2], w[h + 3, t + 3]
            for c in range(d):
                e0 = widen(V[i0, c])
                e1 = widen(V[i1, c])
                e2 = widen(V[i2, c])
                e3 = widen(V[i3, c])
                y0[c] = (((y0[c] + w00 * e0) + w01 * e1) + w02 * e2) + w03 * e3
                y1[c] = (((y1[c] + w10 * e0) + w11 * e1) + w12 * e2) + w13 * e3
                y2[c] = (((y2[c] + w20 * e0) + w21 * e1) + w22 * e2) + w23 * e3
                y3[c] = (((y3[c] + w30 * e0) + w31 * e1) + w32 * e2) + w33 * e3
            h += 4
        if row_at_a_time(V):  # the remaining heads walk the four rows one after another
            for rr in range(4):
                i = positions[t + rr]
                for hh in range(h, G):
                    yh = y[hh]
                    wt = w[hh, t + rr]
                    for c in range(d):
                        yh[c] += wt * widen(V[i, c])
        else:  # the same sums in the same order, the four rows at once
            while h < G:
                yh = y[h]
                x0, x1, x2, x3 = w[h, t], w[h, t + 1], w[h, t + 2], w[h, t + 3]
                for c in range(d):
                    acc = yh[c] + x0 * widen(V[i0, c])
                    acc = acc + x1 * widen(V[i1, c])
                    acc = acc + x2 * widen(V[i2, c])
                    yh[c] = acc + x3 * widen(V[i3, c])
                h += 1
        t += 4
    while t < n_pos:
        i0 = positions[t]
        for h in range(G):
            yh = y[h]
            wt = w[h, t]
            for c in range(d):
                yh[c] += wt * widen(V[i0, c])
        t += 1


@njit_serial
def attend_positions(
    qg, K, V, positions, n_pos, scale, y, status, work, ahead=STREAM_AHEAD, requests=1
):
    """Exact attention of the query rows ``qg`` (G, d, float64) over ``positions[:n_pos]`` of
    ``K``, ``V`` (S, d, own dtype, see :func:`widen`):
    ``y[h] = softmax(scale * K[pos] @ qg[h]) @ V[pos]``.

    Each K and V row is read once for all G heads (heads in blocks of 4 share every load;
    the V pass also takes 4 positions at a time). Softmax with max subtraction, exps by
    :func:`reference._vexp.exp_nonpos_into`, float64 accumulation in a fixed order that
    depends only on G and ``n_pos``. The weights are normalised (``exp(l - max) / sum``)
    before the V pass, as the float64 twin does, so the sum cannot overflow unless the true
    output does (|V| near the float64 maximum is fine). ``work`` is float64 scratch of at least
    ``G * n_pos`` elements. Sets ``status[0] = 1`` if a logit is not finite (a non-finite
    K or q entry, or an overflow of ``q . k``) and otherwise ``status[0] = 2`` if an output
    is not finite (a non-finite V entry, or an output beyond the float64 range).

    The rows are requested ``ahead`` rows before they are read, ``requests`` times each
    (:func:`prefetch_ahead`): dense attention's consecutive rows once, ``STREAM_AHEAD``
    ahead; SparQ's step 7, over its kept rows, ``GATHER_REQUESTS`` times from
    ``GATHER_AHEAD`` ahead. Only speed depends on them, never a bit of the result."""
    G = qg.shape[0]
    w = work[: G * n_pos].reshape(G, n_pos)  # logits, then softmax weights (in place)
    _k_pass(qg, K, positions, n_pos, scale, w, ahead, requests)
    weigh_and_v_pass(w, V, positions, n_pos, y, status, ahead, requests)


@njit_serial
def weigh_and_v_pass(w, V, positions, n_pos, y, status, ahead=STREAM_AHEAD, requests=1):
    """The second half of :func:`attend_positions`: the logits ``w`` (G, n_pos) become
    softmax weights (``status[0] = 1`` and nothing else if one is not finite), then
    ``y = w @ V[positions]`` (``status[0] = 2`` if an output is not finite; V's rows
    requested as :func:`prefetch_ahead` says)."""
    G = w.shape[0]
    _weigh_v_stats(w, V, positions, n_pos, y, status, np.empty(G), np.empty(G), ahead,
                   requests)  # fmt: skip


@njit_serial
def attend_part(
    qg, K, V, positions, n_pos, scale, y, status, work, m, z, ahead=STREAM_AHEAD, requests=1
):  # fmt: skip
    """:func:`attend_positions`, and per head ``h`` the softmax statistics of the part:
    ``m[h]`` the largest logit and ``z[h] = sum_t exp(logit_t - m[h])`` (as the weights
    were normalised with), so that parts over disjoint positions combine into the attention
    over all of them (:func:`combine_parts`). ``m`` and ``z`` are unspecified when
    ``status[0]`` is set."""
    G = qg.shape[0]
    w = work[: G * n_pos].reshape(G, n_pos)
    # The passes request rows ``ahead`` on, so a part's first rows would come on demand
    # (dense's parts: 64 a call where whole rows had 8): request them before each pass.
    for t in range(min(ahead, n_pos)):
        prefetch_row(K, positions[t])
    _k_pass(qg, K, positions, n_pos, scale, w, ahead, requests)
    for t in range(min(ahead, n_pos)):
        prefetch_row(V, positions[t])
    _weigh_v_stats(w, V, positions, n_pos, y, status, m, z, ahead, requests)


@njit_serial
def _weigh_v_stats(w, V, positions, n_pos, y, status, m, z, ahead, requests):
    """:func:`weigh_and_v_pass`, writing each head's logit max ``m`` and exp sum ``z``."""
    if not logits_to_weights_stats(w, m, z):
        status[0] = 1
        return
    _v_pass(V, positions, n_pos, w, y, ahead, requests)
    if not all_finite(y):
        status[0] = 2


@njit_serial
def logits_to_weights_stats(w, m, z):
    """Each row of the logits ``w`` (G, n) becomes its softmax weights in place
    (``exp(l - max) / sum``), its max written to ``m[h]`` and its sum
    ``z[h] = sum_t exp(w[h, t] - m[h])`` (before the division). False (``w``, ``m`` and
    ``z`` then unspecified) if a logit is NaN or +/-inf."""
    G = w.shape[0]
    chk = 0.0
    for h in range(G):
        wh = w[h]
        for t in range(wh.shape[0]):
            chk += wh[t] * 0.0  # NaN iff some logit is NaN or +/-inf
        m[h] = max_of(wh, -np.inf)
        z[h] = softmax_weights(wh, m[h])  # (a NaN row is discarded below)
    if chk != chk:
        return False
    for h in range(G):
        inv = 1.0 / z[h]
        wh = w[h]
        for t in range(wh.shape[0]):
            wh[t] *= inv
    return True


@njit_serial
def combine_parts(ys, ms, zs, used, n_parts, out, coef):
    """The attention over the union of parts from each part's own: ``ys`` (P, G, d) the
    parts' outputs (each normalised over its own positions), ``ms`` / ``zs`` (P, G) their
    logit maxima and exp sums (:func:`attend_part`), ``used`` (P,) whether a part had a
    position; writes ``out`` (G, d). With ``M = max_p ms[p, h]`` and
    ``c_p = zs[p, h] exp(ms[p, h] - M)`` (the part's softmax mass against the union's max),
    ``out[h] = sum_p (c_p / sum_p' c_p') ys[p, h]``, parts in index order: a convex
    combination of the parts' outputs up to rounding (so with outputs near the float64
    maximum it can still overflow). With one used part its output is copied as it is.
    ``coef`` is float64 scratch of at least ``P``. Returns whether every output is finite."""
    G, d = out.shape
    n_used = 0
    last = 0
    for p in range(n_parts):
        if used[p]:
            n_used += 1
            last = p
    if n_used == 1:
        for h in range(G):
            for c in range(d):
                out[h, c] = ys[last, h, c]
        return True
    for h in range(G):
        mx = -np.inf
        for p in range(n_parts):
            if used[p] and ms[p, h] > mx:
                mx = ms[p, h]
        den = 0.0
        for p in range(n_parts):
            coef[p] = zs[p, h] * math.exp(ms[p, h] - mx) if used[p] else 0.0
            den += coef[p]
        for c in range(d):
            out[h, c] = 0.0
        for p in range(n_parts):
            if used[p]:
                cp = coef[p] / den
                yp = ys[p, h]
                oh = out[h]
                for c in range(d):
                    oh[c] += cp * yp[c]
    return all_finite(out)


@njit_serial
def all_finite(y):
    """Whether every element of the 2-D float64 array ``y`` is finite."""
    chk = 0.0
    for h in range(y.shape[0]):
        yh = y[h]
        for c in range(yh.shape[0]):
            chk += yh[c] * 0.0
    return chk == chk


@njit_serial
def nonfinite_rows(A, maskrow, want):
    """1 if some row ``j`` of ``A`` (S, d) with ``maskrow[j] == want`` holds a NaN or inf."""
    S, d = A.shape
    chk = 0.0
    for j in range(S):
        if maskrow[j] == want:
            for c in range(d):
                chk += widen(A[j, c]) * 0.0
    return 1 if chk != chk else 0
