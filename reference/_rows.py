"""Row primitives shared by the dense and SparQ kernels: reading K/V in their own dtype, and
exact attention of a group of query heads over a list of positions.

Caches reach the kernels C-contiguous in their own dtype (never as float64 copies):
float32 and float64 rows are read in place; float16 and bfloat16 arrive as ``uint16`` views
of their bit patterns with an encoding code (:data:`ENC_F16`, :data:`ENC_BF16`) and are
decoded exactly, a row or a segment at a time, into a small per-thread float32 buffer.
All arithmetic is float64.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from reference._config import njit_serial
from reference._vexp import exp_into

#: Encodings of a cache's elements (how a ``uint16`` array is to be read).
ENC_NATIVE, ENC_F16, ENC_BF16 = 0, 1, 2

#: Rows a decode buffer holds (the V pass reads 4 rows at a time).
DECODE_SLOTS = 4

_F16_MIN_NORMAL = np.float32(2.0**-14)

#: Rows ahead that the gathers prefetch. Gathered rows of kept positions are ~S/k rows
#: apart, so the hardware prefetchers do not see them coming; on the development host
#: (2 vCPUs of an AMD EPYC) software prefetch 8 rows ahead made the K pass over 4096 of
#: 32768 float32 rows 3.4x faster (3.5 ms -> 1.0 ms for 8 KV heads, one thread); 16 rows
#: ahead gave the same.
PREFETCH_AHEAD = 8


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """``llvm.prefetch`` (read, high locality, data cache) of the address of ``arr[i, j]``."""

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]])
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, types.intp, types.intp), codegen


@njit_serial
def prefetch_row(A, j):
    """Ask the cache to fetch row ``j`` of the 2-D array ``A`` (every 64-byte line)."""
    step = max(1, 64 // A.itemsize)
    for c in range(0, A.shape[1], step):
        _prefetch(A, j, c)


@njit_serial
def decode16(src, enc, bits):
    """Decode the 16-bit patterns ``src`` (n,) into float32 bit patterns ``bits[:n]``
    (uint32; read them through a float32 view). Exact for every pattern: bfloat16 is the top
    half of a float32; IEEE binary16 is re-biased in the integer domain, zeros and subnormals
    (``|x| < 2^-14``) as ``2^-14 + m 2^-24`` from which ``2^-14`` is subtracted exactly, and
    the sign is applied last."""
    n = src.shape[0]
    if enc == ENC_BF16:
        for i in range(n):
            bits[i] = np.uint32(src[i]) << np.uint32(16)
        return
    for i in range(n):
        em = np.uint32(src[i]) & np.uint32(0x7FFF)
        # exponent bias 15 -> 127: +112 << 23; inf/NaN exponent 31 -> 255: +224 << 23;
        # zero/subnormal: +113 << 23 gives 2^-14 + m 2^-24, and 2^-14 is taken off below
        adj = np.uint32(0x38000000)
        if em >= np.uint32(0x7C00):
            adj = np.uint32(0x70000000)
        elif em < np.uint32(0x400):
            adj = np.uint32(0x38800000)
        bits[i] = (em << np.uint32(13)) + adj
    f = bits[:n].view(np.float32)
    for i in range(n):  # branch-free: both selects vectorise
        h = src[i]
        v = f[i] - (_F16_MIN_NORMAL if (h & 0x7FFF) < 0x400 else np.float32(0.0))
        f[i] = -v if h & 0x8000 else v


def src_of(A, fview):
    """The 2-D array that rows of the cache ``A`` are read from: ``A`` itself (float32 or
    float64, read in place) or the float32 decode buffer ``fview`` (16-bit caches). Use with
    :func:`load_row`. Jitted code only."""
    raise NotImplementedError


@overload(src_of, inline="always")
def _src_of_impl(A, fview):
    if isinstance(A.dtype, types.Float):
        return lambda A, fview: A
    return lambda A, fview: fview


def load_row(A, j, enc, bits, fview, slot):
    """Make row ``j`` of the cache ``A`` readable as ``src_of(A, fview)[i]`` and return ``i``:
    ``j`` for float caches (nothing is done, no array view is made), ``slot`` for 16-bit caches
    after decoding the row into ``bits[slot]`` (``bits`` (DECODE_SLOTS, >= d) uint32,
    ``fview`` its float32 view). Jitted code only."""
    raise NotImplementedError


@overload(load_row, inline="always")
def _load_row_impl(A, j, enc, bits, fview, slot):
    if isinstance(A.dtype, types.Float):
        return lambda A, j, enc, bits, fview, slot: j

    def impl(A, j, enc, bits, fview, slot):
        decode16(A[j], enc, bits[slot])
        return slot

    return impl


def load_rows4(A, positions, t, enc, bits, fview):
    """:func:`load_row` for ``positions[t : t + 4]`` into slots 0..3; returns the 4 row
    indices into ``src_of(A, fview)``. A 16-bit cache whose 4 rows are consecutive is decoded
    in one sweep over ``4 * d`` elements (2-4x faster than 4 row-sized sweeps). Jitted code
    only."""
    raise NotImplementedError


@overload(load_rows4, inline="always")
def _load_rows4_impl(A, positions, t, enc, bits, fview):
    if isinstance(A.dtype, types.Float):
        return lambda A, positions, t, enc, bits, fview: (
            positions[t],
            positions[t + 1],
            positions[t + 2],
            positions[t + 3],
        )

    def impl(A, positions, t, enc, bits, fview):
        j = positions[t]
        if positions[t + 3] == j + 3 and bits.shape[1] == A.shape[1]:
            d = A.shape[1]
            decode16(A.reshape(-1)[j * d : (j + 4) * d], enc, bits.reshape(-1))
        else:
            for u in range(4):
                decode16(A[positions[t + u]], enc, bits[u])
        return (0, 1, 2, 3)

    return impl


def segment_of(a, j0, n, enc, bits, fview, slot):
    """``a[j0 : j0 + n]`` of a 1-D cache row as floats (in place, or decoded into slot
    ``slot`` of the buffer). Jitted code only."""
    raise NotImplementedError


@overload(segment_of, inline="always")
def _segment_of_impl(a, j0, n, enc, bits, fview, slot):
    if isinstance(a.dtype, types.Float):
        return lambda a, j0, n, enc, bits, fview, slot: a[j0 : j0 + n]

    def impl(a, j0, n, enc, bits, fview, slot):
        decode16(a[j0 : j0 + n], enc, bits[slot])
        return fview[slot, :n]

    return impl


@njit_serial
def decode_buffer(width):
    """A (DECODE_SLOTS, width) uint32 decode buffer and its float32 view."""
    bits = np.empty((DECODE_SLOTS, width), dtype=np.uint32)
    return bits, bits.view(np.float32)


@njit_serial
def _k_pass(qg, K, enc_k, positions, n_pos, scale, logits):
    """``logits[h, t] = scale * qg[h] . K[positions[t]]`` (heads in blocks of 4 share loads)."""
    G, d = qg.shape
    bits, fv = decode_buffer(d)
    Ks = src_of(K, fv)
    t = 0
    while t < n_pos:
        four = t + 4 <= n_pos
        for u in range(t + PREFETCH_AHEAD, min(t + PREFETCH_AHEAD + (4 if four else 1), n_pos)):
            prefetch_row(K, positions[u])
        if four:
            rows = load_rows4(K, positions, t, enc_k, bits, fv)
        else:
            i = load_row(K, positions[t], enc_k, bits, fv, 0)
            rows = (i, i, i, i)
        for rr in range(4 if four else 1):
            i = rows[rr]
            tt = t + rr
            h = 0
            while h + 4 <= G:
                q0, q1, q2, q3 = qg[h], qg[h + 1], qg[h + 2], qg[h + 3]
                a0 = a1 = a2 = a3 = 0.0
                for c in range(d):
                    kc = np.float64(Ks[i, c])
                    a0 += q0[c] * kc
                    a1 += q1[c] * kc
                    a2 += q2[c] * kc
                    a3 += q3[c] * kc
                logits[h, tt] = a0 * scale
                logits[h + 1, tt] = a1 * scale
                logits[h + 2, tt] = a2 * scale
                logits[h + 3, tt] = a3 * scale
                h += 4
            while h < G:
                qh = qg[h]
                a0 = 0.0
                for c in range(d):
                    a0 += qh[c] * Ks[i, c]
                logits[h, tt] = a0 * scale
                h += 1
        t += 4 if four else 1


#: Elements per call of the vector exp (its scratch stays in L1).
EXP_CHUNK = 1024


@njit_serial
def softmax_weights(x, m):
    """In place: ``x[t] = exp(x[t] - m)`` for a 1-D float64 ``x``; returns ``sum(x)``.

    Exps by :func:`reference._vexp.exp_into` in chunks of :data:`EXP_CHUNK`; the sum is a
    serial float64 loop in index order (reassociated only within a fixed vector width)."""
    n = x.shape[0]
    scratch = np.empty(2 * EXP_CHUNK)
    shifted = np.empty(EXP_CHUNK)  # exp_into's input and output must not overlap (SIMD)
    total = 0.0
    for i0 in range(0, n, EXP_CHUNK):
        i1 = min(n, i0 + EXP_CHUNK)
        seg = x[i0:i1]
        for t in range(i1 - i0):
            shifted[t] = seg[t] - m
        exp_into(shifted[: i1 - i0], seg, scratch)
        for t in range(i1 - i0):
            total += seg[t]
    return total


@njit_serial
def _v_pass(V, enc_v, positions, n_pos, w, y):
    """``y[h] = sum_t w[h, t] V[positions[t]]`` (4 positions x 4 heads per step)."""
    G, d = y.shape
    bits, fv = decode_buffer(d)
    Vs = src_of(V, fv)
    for h in range(G):
        for c in range(d):
            y[h, c] = 0.0
    t = 0
    while t + 4 <= n_pos:
        for u in range(t + PREFETCH_AHEAD, min(t + PREFETCH_AHEAD + 4, n_pos)):
            prefetch_row(V, positions[u])
        i0, i1, i2, i3 = load_rows4(V, positions, t, enc_v, bits, fv)
        h = 0
        while h + 4 <= G:
            y0, y1, y2, y3 = y[h], y[h + 1], y[h + 2], y[h + 3]
            w00, w01, w02, w03 = w[h, t], w[h, t + 1], w[h, t + 2], w[h, t + 3]
            w10, w11, w12, w13 = w[h + 1, t], w[h + 1, t + 1], w[h + 1, t + 2], w[h + 1, t + 3]
            w20, w21, w22, w23 = w[h + 2, t], w[h + 2, t + 1], w[h + 2, t + 2], w[h + 2, t + 3]
            w30, w31, w32, w33 = w[h + 3, t], w[h + 3, t + 1], w[h + 3, t + 2], w[h + 3, t + 3]
            for c in range(d):
                e0 = np.float64(Vs[i0, c])
                e1 = np.float64(Vs[i1, c])
                e2 = np.float64(Vs[i2, c])
                e3 = np.float64(Vs[i3, c])
                y0[c] += w00 * e0 + w01 * e1 + w02 * e2 + w03 * e3
                y1[c] += w10 * e0 + w11 * e1 + w12 * e2 + w13 * e3
                y2[c] += w20 * e0 + w21 * e1 + w22 * e2 + w23 * e3
                y3[c] += w30 * e0 + w31 * e1 + w32 * e2 + w33 * e3
            h += 4
        while h < G:
            yh = y[h]
            x0, x1, x2, x3 = w[h, t], w[h, t + 1], w[h, t + 2], w[h, t + 3]
            for c in range(d):
                yh[c] += x0 * Vs[i0, c] + x1 * Vs[i1, c] + x2 * Vs[i2, c] + x3 * Vs[i3, c]
            h += 1
        t += 4
    while t < n_pos:
        i0 = load_row(V, positions[t], enc_v, bits, fv, 0)
        for h in range(G):
            yh = y[h]
            wt = w[h, t]
            for c in range(d):
                yh[c] += wt * Vs[i0, c]
        t += 1


@njit_serial
def attend_positions(qg, K, enc_k, V, enc_v, positions, n_pos, scale, y, status, work):
    """Exact attention of the query rows ``qg`` (G, d, float64) over ``positions[:n_pos]`` of
    ``K``, ``V`` (S, d, own dtype; encodings ``enc_k``, ``enc_v``):
    ``y[h] = softmax(scale * K[pos] @ qg[h]) @ V[pos]``.

    Each K and V row is read once for all G heads (heads in blocks of 4 share every load;
    the V pass also takes 4 positions at a time). Softmax with max subtraction, exps by
    :func:`reference._vexp.exp_into`, float64 accumulation in a fixed order that depends only
    on G and ``n_pos``. ``work`` is float64 scratch of at least ``G * n_pos`` elements. Sets
    ``status[0] = 1`` if a logit or an output is not finite (a
    non-finite input was read, or an overflow)."""
    G, d = qg.shape
    w = work[: G * n_pos].reshape(G, n_pos)  # logits, then softmax weights (in place)
    total = np.empty(G)
    _k_pass(qg, K, enc_k, positions, n_pos, scale, w)
    chk = 0.0
    for h in range(G):
        wh = w[h]
        m = -np.inf
        for t in range(n_pos):
            chk += wh[t] * 0.0  # NaN iff some logit is NaN or +/-inf
            m = max(m, wh[t])
        total[h] = softmax_weights(wh, m)
    _v_pass(V, enc_v, positions, n_pos, w, y)
    for h in range(G):
        inv = 1.0 / total[h]
        yh = y[h]
        for c in range(d):
            yh[c] *= inv
            chk += yh[c] * 0.0
    if chk != chk:
        status[0] = 1


@njit_serial
def nonfinite_rows(A, enc, maskrow, want):
    """1 if some row ``j`` of ``A`` (S, d) with ``maskrow[j] == want`` holds a NaN or inf."""
    S, d = A.shape
    bits, fv = decode_buffer(d)
    As = src_of(A, fv)
    chk = 0.0
    for j in range(S):
        if maskrow[j] == want:
            i = load_row(A, j, enc, bits, fv, 0)
            for c in range(d):
                chk += As[i, c] * 0.0
    return 1 if chk != chk else 0
