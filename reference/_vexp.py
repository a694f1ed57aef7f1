"""A vectorisable float64 ``exp`` over arrays (pip's llvmlite has no vector math library).

``math.exp`` in a Numba loop is a scalar libm call: about 1M of them per decode step at
Llama sizes would cost more than reading the cache. :func:`exp_into` computes ``exp`` of a
whole block with a branch-free element-wise loop that LLVM turns into SIMD code:

1. range reduction (Cody-Waite): ``n = round(x / ln 2)``, ``r = (x - n ln2_hi) - n ln2_lo``,
   ``|r| <= ln(2) / 2``; ``ln2_hi`` has 32 trailing zero bits so ``n ln2_hi`` is exact for
   ``|n| < 2^20``;
2. ``exp(r)`` by a polynomial of degree 11, ``1 + r + r^2 q(r)`` with ``q`` a Chebyshev fit
   (:data:`_POLY`; within 1.7e-17 of ``exp`` on the reduced range, far below half an ulp),
   in Horner form (eleven FMAs);
3. scaling by ``2^n`` built from exponent bits, in two halves ``2^(n//2) 2^(n - n//2)`` so
   that subnormal results and the overflow to ``inf`` come out right. The halves are the
   integers' bits read as float64 (:func:`_bits_as_f64`, an LLVM ``bitcast``, which stays in
   the vector registers; a round trip through a scratch array made the loop 10% slower).

:func:`exp_nonpos_into` and :func:`exp_nonpos_sum` are the kernels' exps of softmax terms
(arguments at most 0, results below ``exp(-708)`` set to 0), stored or summed. They take
one of two routes, the same for every call in a process:

- the table route, on CPUs with AVX-512 (:data:`TABLE_EXP`): ``2^(j/16)`` looked up by one
  ``vpermi2pd`` and a degree-6 polynomial, in explicit LLVM vector code (about 0.7 of the
  time of the polynomial route);
- the polynomial route (:func:`exp_nonpos_into_poly`, :func:`exp_nonpos_sum_poly`): the
  computation of :func:`exp_into` without the overflow clamp and the split scaling (``2^n``
  is a normal number for every ``n`` it meets), about 0.78 of the time of
  :func:`exp_into`; the sum adds the terms in the same loop, without storing them.

The polynomial routes take their polynomial from one scalar function (:func:`_exp_poly`), compiled
with contraction only and *not* inlined by Numba: LLVM inlines it into each loop and keeps
its instructions' flags, so the summing loop may reassociate its sum (which is what lets it
vectorise) while the range reduction inside stays as written.

Compiled with contraction only (each ``a * b + c`` one FMA: the Horner steps and the range
reduction, 1.75x faster than separate multiplies and adds on the development host, and no
less accurate) and **without** reassociation, which could merge the two halves of the range
reduction and lose the precision Cody-Waite buys. Accuracy (tested against ``math.exp``
over the whole float64 range): at most 2 ulp for normal results; ``exp(-inf) = 0``,
``exp(+inf) = inf``, ``exp(nan) = nan``; results below the smallest subnormal are 0.
"""

from __future__ import annotations

from decimal import Context as _Context
from decimal import Decimal as _D
from decimal import localcontext as _localcontext

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from reference._config import FASTMATH_CHAIN, cpu_features, njit_serial
from reference._llvmir import splat

_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238  # ln 2 rounded to 21 significant bits (n * hi exact)
_LN2_LO = 1.9082149292705877e-10  # ln 2 - _LN2_HI
_X_MAX = 709.782712893384  # exp(x) overflows above this
_X_ZERO = -745.1332191019412  # exp(x) rounds to 0 below this
#: Coefficients of r^11 .. r^2 of the polynomial ``p(r) = 1 + r + r^2 q(r)`` for ``exp(r)``
#: on ``|r| <= ln(2) / 2``: ``q`` is the Chebyshev fit of degree 9 (mpmath ``chebyfit``, 40
#: digits) to ``(exp(r) - 1 - r) / r^2`` on ``|r| <= 1.001 ln(2) / 2``, rounded to float64.
#: With these float64 coefficients the exact polynomial is within 1.7e-17 (relative) of
#: ``exp`` there, so the float64 evaluation's own rounding decides the error; the constant
#: and linear terms are exactly 1. Degree 13 of the Taylor series gave the same accuracy
#: with two more FMAs per element.
_POLY = (
    2.5100472505694996e-08,
    2.7620201591031547e-07,
    2.7557268276905696e-06,
    2.4801521057868204e-05,
    0.00019841269863171557,
    0.0013888888917367081,
    0.008333333333330039,
    0.041666666666623824,
    0.16666666666666669,
    0.5000000000000001,
)


@intrinsic
def _bits_as_f64(typingctx, x):
    """The 64 bits of an int64 read as a float64 (no conversion)."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit_serial(fastmath=set(FASTMATH_CHAIN))
def _exp_poly(xc):
    """``(n, p)``: ``n = round(xc / ln 2)`` (float64) and ``p = exp(r)`` by the degree-11
    polynomial, ``r = xc - n ln 2`` (Cody-Waite), so ``exp(xc) = p 2^n``; ``xc`` clamped by
    the caller to where its scaling is exact."""
    nf = np.floor(xc * _LOG2E + 0.5)
    r = xc - nf * _LN2_HI
    r = r - nf * _LN2_LO
    p = _POLY[0]
    p = p * r + _POLY[1]
    p = p * r + _POLY[2]
    p = p * r + _POLY[3]
    p = p * r + _POLY[4]
    p = p * r + _POLY[5]
    p = p * r + _POLY[6]
    p = p * r + _POLY[7]
    p = p * r + _POLY[8]
    p = p * r + _POLY[9]
    p = p * r + 1.0
    p = p * r + 1.0
    return nf, p


@njit_serial(fastmath=set(FASTMATH_CHAIN))
def exp_into(x, out, shift=0.0):
    """``out[i] = exp(x[i] - shift)`` for 1-D float64 ``x`` and ``out`` (the subtraction
    is the float64 one, so the result is that of ``exp`` of a shifted copy, without the
    copy).

    ``x`` and ``out`` may be the same array, but only distinct arrays get SIMD code (LLVM's
    runtime overlap check fails for in-place calls, which run about 6x slower).

    The loop is branch-free and vectorises."""
    for i in range(x.shape[0]):
        xi = x[i] - shift
        nf, p = _exp_poly(min(max(xi, -746.0), 710.0))
        ni = np.int64(nf)
        na = ni >> 1
        v = p * _bits_as_f64((na + 1023) << 52) * _bits_as_f64((ni - na + 1023) << 52)
        # NaN stays NaN; below the underflow threshold (and -inf) exactly 0
        out[i] = xi if xi != xi else (0.0 if xi < _X_ZERO else v)


#: exp_nonpos_*: arguments below this give 0 (exp(-708) = 3.3e-308; 2^n stays normal).
_X_NONPOS_LOW = -708.0


@njit_serial(fastmath=set(FASTMATH_CHAIN))
def _exp_nonpos(xi):
    """``exp(xi)`` for ``xi <= 0``: see :func:`exp_nonpos_into_poly`."""
    nf, p = _exp_poly(max(xi, _X_NONPOS_LOW))
    v = p * _bits_as_f64((np.int64(nf) + 1023) << 52)
    # NaN stays NaN (selected, not computed: the conversion of a NaN to an integer is
    # undefined); below the threshold (and -inf) exactly 0
    return xi if xi != xi else (0.0 if xi < _X_NONPOS_LOW else v)


@njit_serial(fastmath=set(FASTMATH_CHAIN))
def exp_nonpos_into_poly(x, out, shift):
    """:func:`exp_nonpos_into` by the polynomial of :func:`exp_into` (the route of CPUs
    without AVX-512 and of strided arrays): ``out[i] = exp(x[i] - shift)`` for 1-D float64
    ``x`` and ``out`` (distinct arrays, else scalar code) where ``x[i] - shift <= 0``.

    The same range reduction and degree-11 polynomial as :func:`exp_into` (so at most 2 ulp
    from ``math.exp``), scaled by one ``2^n`` (``n >= -1022``: a normal number); arguments
    below -708 (``exp`` < 3.3e-308), ``-inf`` included, give exactly 0, NaN gives NaN.
    Arguments above 0 are outside its contract (correct up to 709, undefined beyond). For
    a softmax sum, whose largest term is ``exp(0) = 1``, the terms it zeroes are below half
    an ulp of the sum even all added together (S < 2^50 positions). For arguments from
    -708 to 0 it is bit for bit :func:`exp_into` (a product by ``2^n`` in one step or two
    is exact there); between -708.4 and -708 :func:`exp_into` still gives a normal number,
    this gives 0."""
    for i in range(x.shape[0]):
        out[i] = _exp_nonpos(x[i] - shift)


@njit_serial
def exp_nonpos_sum_poly(x, shift):
    """:func:`exp_nonpos_sum` by the polynomial: ``sum_i exp(x[i] - shift)`` for a 1-D
    float64 ``x`` with ``x[i] - shift <= 0``, each term that of :func:`exp_nonpos_into_poly`,
    added in one vectorised loop (reassociated within
    the vector width: lane sums, then added up) without storing the terms."""
    tot = 0.0
    for i in range(x.shape[0]):
        tot += _exp_nonpos(x[i] - shift)
    return tot


# --- The table route: 2^(j/16) by a vector permute, a degree-6 polynomial -----------------

#: Whether :func:`exp_nonpos_into` and :func:`exp_nonpos_sum` take the table route (the CPU
#: the kernels compile for has AVX-512, whose ``vpermi2pd`` looks up 16 float64 in one
#: instruction); otherwise they take the polynomial route. Decided once per process.
TABLE_EXP: bool = "+avx512f" in cpu_features()


def _sixteenths() -> tuple:
    """``2^(j/16)``, ``j = 0..15``, correctly rounded to float64: ``decimal``'s power at 60
    digits (correctly rounded there), then its nearest float64."""
    with _localcontext(_Context(prec=60)):
        return tuple(float(_D(2) ** (_D(j) / 16)) for j in range(16))


#: ``2^(j/16)``, ``j = 0..15``, correctly rounded to float64.
_TAB16 = _sixteenths()
_LOG2E16 = 16 * _LOG2E  # 16 / ln 2 (a product by 16 is exact)
_LN2_HI16 = _LN2_HI / 16  # ln(2) / 16 in two parts, as the polynomial route's halves
_LN2_LO16 = _LN2_LO / 16
_SHIFTER = 1.5 * 2.0**52  # z = x 16 / ln 2 + this rounds to an integer n held in z's low bits
#: Coefficients of r^4 .. r^0 of ``q`` in ``exp(r) = 1 + r + r^2 q(r)`` on ``|r| <=
#: ln(2) / 32``: the Chebyshev fit of degree 4 (mpmath ``chebyfit``, 50 digits) to ``(exp(r)
#: - 1 - r) / r^2`` on ``|r| <= 1.001 ln(2) / 32``, rounded to float64. With them the exact
#: polynomial is within 2.9e-17 (relative) of ``exp``, a quarter of an ulp of 1.
_POLY16 = (
    0.0013889034639665864,
    0.008333449934107185,
    0.04166666666495362,
    0.16666666665296223,
    0.5,
)


def _exp8_table(builder, v, shv):
    """LLVM IR: ``exp(v - shv)`` of the 8-lane float64 vectors ``v``, ``shv`` (the shift in
    every lane), arguments at most 0, by the table route (see :func:`exp_nonpos_into`)."""
    dt, i64 = ir.DoubleType(), ir.IntType(64)
    vt, qt = ir.VectorType(dt, 8), ir.VectorType(i64, 8)

    def c(x):
        return ir.Constant(vt, [x] * 8)

    def ci(x):
        return ir.Constant(qt, [x] * 8)

    mod = builder.module
    fma = cgutils.get_or_insert_function(mod, ir.FunctionType(vt, [vt, vt, vt]), "llvm.fma.v8f64")
    perm = cgutils.get_or_insert_function(
        mod, ir.FunctionType(vt, [vt, qt, vt]), "llvm.x86.avx512.vpermi2var.pd.512"
    )
    xi = builder.fsub(v, shv)  # the float64 subtraction, as a shifted copy would hold
    low = builder.fcmp_ordered("<", xi, c(_X_NONPOS_LOW))  # -inf too; false for NaN
    xc = builder.select(low, c(_X_NONPOS_LOW), xi)  # NaN flows on and makes the result NaN
    z = builder.call(fma, [xc, c(_LOG2E16), c(_SHIFTER)])  # n = round(x 16 / ln 2), in z
    nf = builder.fsub(z, c(_SHIFTER))  # n as a float64, exactly
    neg = builder.fneg(nf)
    r = builder.call(fma, [neg, c(_LN2_HI16), xc])  # Cody-Waite: r = x - n ln(2) / 16
    r = builder.call(fma, [neg, c(_LN2_LO16), r])
    q = c(_POLY16[0])
    for co in _POLY16[1:]:
        q = builder.call(fma, [q, r, c(co)])
    pm1 = builder.call(fma, [q, builder.fmul(r, r), r])  # exp(r) - 1
    zb = builder.bitcast(z, qt)  # low bits: n (the shifter is a multiple of 16)
    j = builder.and_(zb, ci(15))  # t = 2^(j/16): bit 3 picks the second half of the table
    t = builder.call(perm, [ir.Constant(vt, _TAB16[:8]), j, ir.Constant(vt, _TAB16[8:])])
    # 2^(n >> 4) added into t's exponent: (z's bits << 48) holds n << 48, whose bits from 52
    # on are n >> 4 (t 2^(n >> 4) is normal for n >= -16 * 1022)
    e = builder.and_(builder.shl(zb, ci(48)), ci(-(1 << 52)))
    ts = builder.bitcast(builder.add(builder.bitcast(t, qt), e), vt)
    res = builder.call(fma, [ts, pm1, ts])  # t 2^(n >> 4) exp(r), one rounding
    return builder.select(low, c(0.0), res)


def _tail_mask(builder, rem):
    """The 8-lane mask ``lane < rem`` (LLVM IR)."""
    i64 = ir.IntType(64)
    qt = ir.VectorType(i64, 8)
    return builder.icmp_signed("<", ir.Constant(qt, list(range(8))), splat(builder, rem, qt))


def _masked_load(builder, data, i, mask):
    """The 8 float64 from element ``i`` of ``data`` in the lanes of ``mask``, 0 in the
    others, reading only the lanes of ``mask`` (``llvm.masked.load``)."""
    vt = ir.VectorType(ir.DoubleType(), 8)
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(vt, [vt.as_pointer(), i32, mask.type, vt])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.load.v8f64.p0")
    zero = ir.Constant(vt, [0.0] * 8)
    return builder.call(fn, [_vec_at(builder, data, i, vt), ir.Constant(i32, 8), mask, zero])


def _masked_store(builder, val, data, i, mask):
    """Store the lanes of ``mask`` of the 8-lane ``val`` at element ``i`` of ``data`` on
    (``llvm.masked.store``)."""
    vt = val.type
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [vt, vt.as_pointer(), i32, mask.type])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.store.v8f64.p0")
    builder.call(fn, [val, _vec_at(builder, data, i, vt), ir.Constant(i32, 8), mask])


_UNROLL = 4  # vectors of 8 per step of the main loops (the exps' latency needs them)


def _vec_at(builder, data, i, vt):
    """Pointer to the 8 float64 from element ``i`` of ``data`` (LLVM IR)."""
    return builder.bitcast(builder.gep(data, [i]), vt.as_pointer())


def _table_loops(builder, n, step8, tail):
    """The loops of the table route over ``n`` elements: ``step8(i)`` for the vectors of 8
    from each ``i`` (``_UNROLL`` of them per step while they last, then one per step),
    ``tail(n8, rem)`` once for the ``rem = n - n8`` (0-7) last elements."""
    i64 = ir.IntType(64)
    big = builder.and_(n, ir.Constant(i64, -8 * _UNROLL))
    zero, step = ir.Constant(i64, 0), ir.Constant(i64, 8 * _UNROLL)
    with cgutils.for_range_slice(builder, zero, big, step) as (i, _):
        step8([builder.add(i, ir.Constant(i64, 8 * u)) for u in range(_UNROLL)])
    n8 = builder.and_(n, ir.Constant(i64, -8))
    with cgutils.for_range_slice(builder, big, n8, ir.Constant(i64, 8)) as (i, _):
        step8([i])
    tail(n8, builder.sub(n, n8))


def _contiguous_f64(*arrays) -> bool:
    """Whether every one of these Numba types is a C-contiguous 1-D float64 array."""
    return all(
        isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == types.float64
        for a in arrays
    )


@intrinsic
def _nonpos_into_table(typingctx, x, out, shift):
    """:func:`exp_nonpos_into` by the table route, for C-contiguous 1-D float64 ``x`` and
    ``out`` of the same length."""
    if not _contiguous_f64(x, out):
        return None

    def codegen(context, builder, sig, args):
        xa, oa, sh = args
        xarr = context.make_array(sig.args[0])(context, builder, xa)
        oarr = context.make_array(sig.args[1])(context, builder, oa)
        (n,) = cgutils.unpack_tuple(builder, xarr.shape, 1)
        vt = ir.VectorType(ir.DoubleType(), 8)
        shv = splat(builder, sh, vt)

        def step8(idx):
            vs = [builder.load(_vec_at(builder, xarr.data, i, vt), align=8) for i in idx]
            es = [_exp8_table(builder, v, shv) for v in vs]  # every load before any store
            for i, e in zip(idx, es, strict=True):
                builder.store(e, _vec_at(builder, oarr.data, i, vt), align=8)

        def tail(n8, rem):
            m = _tail_mask(builder, rem)
            v = _masked_load(builder, xarr.data, n8, m)
            _masked_store(builder, _exp8_table(builder, v, shv), oarr.data, n8, m)

        _table_loops(builder, n, step8, tail)
        return context.get_dummy_value()

    return types.none(x, out, types.float64), codegen


@intrinsic
def _nonpos_sum_table(typingctx, x, shift):
    """:func:`exp_nonpos_sum` by the table route, for a C-contiguous 1-D float64 ``x``."""
    if not _contiguous_f64(x):
        return None

    def codegen(context, builder, sig, args):
        xa, sh = args
        xarr = context.make_array(sig.args[0])(context, builder, xa)
        (n,) = cgutils.unpack_tuple(builder, xarr.shape, 1)
        vt = ir.VectorType(ir.DoubleType(), 8)
        i32 = ir.IntType(32)
        zero = ir.Constant(vt, [0.0] * 8)
        shv = splat(builder, sh, vt)
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(_UNROLL)]

        def step8(idx):
            vs = [builder.load(_vec_at(builder, xarr.data, i, vt), align=8) for i in idx]
            for acc, v in zip(accs[: len(vs)], vs, strict=True):  # one vector: the first sum
                builder.store(builder.fadd(builder.load(acc), _exp8_table(builder, v, shv)), acc)

        def tail(n8, rem):
            m = _tail_mask(builder, rem)
            v = _masked_load(builder, xarr.data, n8, m)
            e = builder.select(m, _exp8_table(builder, v, shv), zero)  # lanes past n add 0
            builder.store(builder.fadd(builder.load(accs[0]), e), accs[0])

        _table_loops(builder, n, step8, tail)
        # lanes of the accumulators, then the 8 lanes, added in a fixed order
        a = [builder.load(acc) for acc in accs]
        while len(a) > 1:
            a = [builder.fadd(a[k], a[k + 1]) for k in range(0, len(a), 2)]
        lanes = [builder.extract_element(a[0], ir.Constant(i32, k)) for k in range(8)]
        while len(lanes) > 1:
            lanes = [builder.fadd(lanes[k], lanes[k + 1]) for k in range(0, len(lanes), 2)]
        return lanes[0]

    return types.float64(x, types.float64), codegen


def _table_ok(*arrays) -> bool:
    """Whether the table route takes these Numba array types (and the CPU has it)."""
    return TABLE_EXP and _contiguous_f64(*arrays)


def _nonpos_into(x, out, shift):
    raise NotImplementedError  # jitted code only


@overload(_nonpos_into, inline="always")
def _nonpos_into_impl(x, out, shift):
    if _table_ok(x, out):
        return lambda x, out, shift: _nonpos_into_table(x, out, shift)
    return lambda x, out, shift: exp_nonpos_into_poly(x, out, shift)


def _nonpos_sum(x, shift):
    raise NotImplementedError  # jitted code only


@overload(_nonpos_sum, inline="always")
def _nonpos_sum_impl(x, shift):
    if _table_ok(x):
        return lambda x, shift: _nonpos_sum_table(x, shift)
    return lambda x, shift: exp_nonpos_sum_poly(x, shift)


@njit_serial
def exp_nonpos_into(x, out, shift):
    """``out[i] = exp(x[i] - shift)`` for 1-D float64 ``x`` and ``out`` where ``x[i] - shift
    <= 0``: softmax terms against a running or final maximum. Within 2 ulp of ``math.exp``
    (1 ulp measured against mpmath) for arguments from -708 to 0; exactly 0 below -708 and at
    ``-inf``; NaN gives NaN; the shift is the float64 subtraction. Arguments above 0 are
    outside its contract.

    Where :data:`TABLE_EXP` (AVX-512) and both arrays are C-contiguous, the table route:
    ``n = round(16 x / ln 2)``, ``r = x - n ln(2) / 16`` (Cody-Waite, ``|r| <= ln(2) / 32``),
    ``exp(x) = 2^(n >> 4) 2^((n & 15) / 16) exp(r)``, the middle factor looked up in a table
    of 16 (:data:`_TAB16`, one ``vpermi2pd`` for 8 lanes), ``exp(r) = 1 + r + r^2 q(r)`` with
    ``q`` of degree 4 (:data:`_POLY16`), the power of two added into the looked-up value's
    exponent, and one FMA ``t + t (exp(r) - 1)`` for the result. Explicit LLVM vector code,
    8 lanes, 4 vectors per step (their latency needs them), a masked step for the last 0-7
    elements. Six FMAs fewer per element than the polynomial route: 0.53 against 0.76 ns
    per element on the development host (one thread, in cache). Otherwise
    :func:`exp_nonpos_into_poly`. The routes differ by at most an ulp in a fifth of the
    results: a CPU takes one route for every call of the kernels, so their results do not
    depend on the thread count, but may differ in the last bits from a CPU of the other
    kind (as their reassociated sums already do)."""
    _nonpos_into(x, out, shift)


@njit_serial
def exp_nonpos_sum(x, shift):
    """``sum_i exp(x[i] - shift)`` for a 1-D float64 ``x`` with ``x[i] - shift <= 0``, each
    term that of :func:`exp_nonpos_into` (the same route), without storing the terms. The
    table route adds them in 4 x 8 lane sums (element ``i`` into lane ``i % 8`` of sum ``(i //
    8) % 4`` in the main loop; the last vectors into the first sum), then the four sums
    pairwise, then the 8 lanes pairwise: a fixed order for each length; 0.49 against 0.68 ns
    per element on the development host. The polynomial route:
    :func:`exp_nonpos_sum_poly`."""
    return _nonpos_sum(x, shift)
