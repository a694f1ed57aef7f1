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

:func:`exp_nonpos_into` is the same computation for arguments that are at most 0 (softmax
terms against their maximum): without the overflow clamp and the split scaling (``2^n`` is
a normal number for every ``n`` it meets) and with every result below ``exp(-708)`` set to
0, it runs about 0.78 of the time of :func:`exp_into` on the development host, and
:func:`exp_nonpos_sum` sums such terms in the same loop, without storing them (0.81 of the
time of :func:`exp_nonpos_into` and a summing pass).

All three take their polynomial from one scalar function (:func:`_exp_poly`), compiled
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

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from reference._config import FASTMATH_CHAIN, njit_serial

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
    """``exp(xi)`` for ``xi <= 0``: see :func:`exp_nonpos_into`."""
    nf, p = _exp_poly(max(xi, _X_NONPOS_LOW))
    v = p * _bits_as_f64((np.int64(nf) + 1023) << 52)
    # NaN stays NaN (selected, not computed: the conversion of a NaN to an integer is
    # undefined); below the threshold (and -inf) exactly 0
    return xi if xi != xi else (0.0 if xi < _X_NONPOS_LOW else v)


@njit_serial(fastmath=set(FASTMATH_CHAIN))
def exp_nonpos_into(x, out, shift):
    """``out[i] = exp(x[i] - shift)`` for 1-D float64 ``x`` and ``out`` (distinct arrays)
    where ``x[i] - shift <= 0``: softmax terms against a running or final maximum.

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
def exp_nonpos_sum(x, shift):
    """``sum_i exp(x[i] - shift)`` for a 1-D float64 ``x`` with ``x[i] - shift <= 0``, each
    term that of :func:`exp_nonpos_into`, added in one vectorised loop (reassociated within
    the vector width: lane sums, then added up) without storing the terms."""
    tot = 0.0
    for i in range(x.shape[0]):
        tot += _exp_nonpos(x[i] - shift)
    return tot
