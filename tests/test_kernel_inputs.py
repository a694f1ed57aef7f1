"""The kernels at realistic-size settings: caches read in their own dtype, K stored twice,
check_finite, the vector exp, the 16-bit decoders, thread invariance for every dtype.

Oracles: ``math.exp``; NumPy's float16 -> float32 conversion and ml_dtypes' bfloat16 ->
float32 conversion over all 65536 bit patterns; the float64 NumPy twins (inputs widened to
float64 by NumPy, not by the code under test); the call without ``k_cache_t``.
"""

from __future__ import annotations

import math
import tracemalloc

import numba
import numpy as np
import pytest

from reference import _vexp, dense_attention, dense_attention_twin, sparq_attention
from reference._config import cpu_features
from reference._rows import opaque_int, widen_into
from reference._vexp import (
    exp_into,
    exp_nonpos_into,
    exp_nonpos_into_poly,
    exp_nonpos_sum,
    exp_nonpos_sum_poly,
)
from reference.sparq import transpose_keys
from tests._cases import random_case

ml_dtypes = pytest.importorskip("ml_dtypes")

DTYPES = [np.float64, np.float32, np.float16, ml_dtypes.bfloat16]
DTYPE_IDS = ["float64", "float32", "float16", "bfloat16"]


def widened(*arrays):
    """float64 copies made by NumPy (the oracle's route, not the kernels')."""
    return [np.asarray(a).astype(np.float64) for a in arrays]


# --- the vector exp --------------------------------------------------------------------------


def test_exp_matches_math_exp_over_the_whole_range():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        np.linspace(-760.0, 720.0, 200_001),
        rng.uniform(-746.0, 710.0, 200_000),
        rng.uniform(-1e-3, 1e-3, 10_000),
        np.array([0.0, -0.0, 709.782712893384, 709.7827128933841, -708.3964185322641,
                  -745.1332191019411, -745.1332191019412, -745.2, 1e-300, -1e-300]),
        # far outside the clamp: exp overflows to inf or underflows to 0
        np.array([1e3, -1e3, 1e10, -1e10, 1e300, -1e300, 1.7976931348623157e308,
                  -1.7976931348623157e308, 2.0**1023, -(2.0**1023)]),
    ])  # fmt: skip
    out = np.empty_like(x)
    exp_into(x, out)
    ref = []
    for v in x.tolist():
        try:
            ref.append(math.exp(v))
        except OverflowError:
            ref.append(math.inf)
    ref = np.array(ref)
    normal = np.isfinite(ref) & (ref >= np.finfo(np.float64).tiny)
    ulps = np.abs(out[normal] - ref[normal]) / np.spacing(ref[normal])
    assert ulps.max() <= 2.0
    sub = np.isfinite(ref) & ~normal  # subnormal or zero results: within 2 subnormal ulps
    assert np.abs(out[sub] - ref[sub]).max() <= 2 * 5e-324
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))


def test_exp_shift_is_the_float64_subtraction():
    # exp_into(x, out, m) must equal exp_into of the shifted copy x - m bit for bit
    # (the kernels rely on it to skip the copy); -inf - m stays -inf (exp 0), NaN stays NaN.
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(size=5000) * 50, [-np.inf, np.nan, 3.0]])
    for m in (0.0, 7.25, -3.5, 1e3):
        a, b = np.empty_like(x), np.empty_like(x)
        exp_into(x, a, m)
        exp_into(x - m, b)
        np.testing.assert_array_equal(a, b)


def test_exp_special_values_and_in_place():
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -1.0])
    out = np.empty_like(x)
    exp_into(x, out)
    assert out[0] == 0.0 and out[1] == np.inf and np.isnan(out[2]) and out[3] == 1.0
    y = x.copy()
    exp_into(y, y)  # in place is allowed (just not vectorised)
    np.testing.assert_array_equal(y, out)


# exp_nonpos_into / exp_nonpos_sum take the table route on AVX-512 CPUs and the polynomial
# route elsewhere (and for strided arrays); every test below runs the polynomial route by
# name as well, so that both are checked on any host.
NONPOS = [(exp_nonpos_into, exp_nonpos_sum), (exp_nonpos_into_poly, exp_nonpos_sum_poly)]
NONPOS_IDS = ["host-route", "polynomial-route"]


@pytest.mark.parametrize(("exp_nonpos_into", "exp_nonpos_sum"), NONPOS, ids=NONPOS_IDS)
def test_exp_nonpos_matches_math_exp_on_its_domain(exp_nonpos_into, exp_nonpos_sum):
    # exp_nonpos_into (softmax terms, arguments <= 0): within 2 ulp of math.exp where the
    # argument is at least -708 (normal results), exactly 0 below it and at -inf, NaN
    # stays NaN, exp(0) = exp(-0) = 1; the shift is the float64 subtraction, as exp_into's.
    rng = np.random.default_rng(6)
    x = np.concatenate([
        np.linspace(-708.0, 0.0, 200_001),
        rng.uniform(-708.0, 0.0, 200_000),
        -np.abs(rng.uniform(0.0, 1e-3, 10_000)),
        np.array([0.0, -0.0, -1e-300, -708.0, -np.log(2) / 2, -np.log(2) / 2 * (1 + 2**-52)]),
    ])  # fmt: skip
    out = np.empty_like(x)
    exp_nonpos_into(x, out, 0.0)
    ref = np.array([math.exp(v) for v in x.tolist()])
    assert (ref >= np.finfo(np.float64).tiny).all()
    ulps = np.abs(out - ref) / np.spacing(ref)
    assert ulps.max() <= 2.0
    low = np.array([-708.0000000000001, -708.1, -745.2, -1e300, -np.inf, np.nan, 0.0])
    o2 = np.empty_like(low)
    exp_nonpos_into(low, o2, 0.0)
    np.testing.assert_array_equal(o2[:5], 0.0)
    assert np.isnan(o2[5]) and o2[6] == 1.0
    for m in (0.0, 7.25, -3.5, 1e3):  # shifted: the same bits as the shifted copy
        y = np.concatenate([m - np.abs(rng.normal(size=5000)) * 50, [-np.inf, np.nan, m]])
        a, b = np.empty_like(y), np.empty_like(y)
        exp_nonpos_into(y, a, m)
        exp_nonpos_into(y - m, b, 0.0)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("exp_nonpos_into", "exp_nonpos_sum"), NONPOS, ids=NONPOS_IDS)
def test_exp_nonpos_sum_is_the_sum_of_its_terms(exp_nonpos_into, exp_nonpos_sum):
    # exp_nonpos_sum(x, m) against math.fsum of math.exp(x - m): each term within 2 ulp and
    # a float64 sum of n terms, so within (2 + n) eps of the exact sum. Arguments near -700
    # (terms ~1e-304, scaled by 2^-1010) would lose ~1e-10 relative if the range reduction
    # were reassociated with the sum; -inf (masked) and arguments below -708 add nothing;
    # the terms are exp_nonpos_into's (their sum in order is within the same bound).
    rng = np.random.default_rng(7)
    eps = np.finfo(np.float64).eps
    for x, m in [
        (-np.abs(rng.normal(size=10_000)) * 3, 0.0),
        (rng.uniform(-701.0, -699.0, 3000), 0.0),
        (np.concatenate([rng.normal(size=4097) + 5.0, [6.0 + 5.0]]), 11.0),
        (np.array([-np.inf, -708.5, -1e300, 0.0, -np.inf]), 0.0),
        (np.array([-np.inf, -np.inf]), 0.0),
    ]:
        got = exp_nonpos_sum(x, m)
        want = math.fsum(math.exp(v - m) if v - m >= -708.0 else 0.0 for v in x.tolist())
        assert abs(got - want) <= (2 + x.size) * eps * want, (got, want)
        terms = np.empty_like(x)
        exp_nonpos_into(x, terms, m)
        assert abs(got - math.fsum(terms.tolist())) <= x.size * eps * want
    assert exp_nonpos_sum(np.array([-np.inf, -800.0]), 0.0) == 0.0
    assert np.isnan(exp_nonpos_sum(np.array([-1.0, np.nan]), 0.0))


def test_exp_nonpos_every_length_and_layout():
    # the table route's loops (4 vectors of 8 a step, then single vectors, then a masked
    # step for the last 0-7 elements) at every length 0-80: each term within 2 ulp of
    # math.exp, the elements past the end neither read into the sum nor written; a strided
    # view and an in-place call give the terms of the contiguous call within 2 ulp
    rng = np.random.default_rng(11)
    eps = np.finfo(np.float64).eps
    base = -np.abs(rng.normal(size=200)) * 4.0
    for n in range(81):
        x = base[:n].copy()
        out = np.full(n + 9, 7.0)
        exp_nonpos_into(x, out[:n], 0.25)
        ref = np.array([math.exp(v - 0.25) for v in x.tolist()])
        assert (np.abs(out[:n] - ref) <= 2 * np.spacing(ref)).all(), n
        np.testing.assert_array_equal(out[n:], 7.0)  # nothing written past the end
        # a NaN just past the end must not be read into the sum
        padded = np.concatenate([x, [np.nan] * 8])
        got = exp_nonpos_sum(padded[:n], 0.25)
        want = math.fsum(ref.tolist())
        assert abs(got - want) <= (2 + n) * eps * max(want, 1e-300), n
    x = base.copy()
    a = np.empty_like(x)
    exp_nonpos_into(x, a, 0.0)
    strided = np.empty(2 * x.size)
    strided[::2] = x
    b = np.empty_like(x)
    exp_nonpos_into(strided[::2], b, 0.0)
    assert (np.abs(a - b) <= 2 * np.spacing(a)).all()
    y = x.copy()
    exp_nonpos_into(y, y, 0.0)  # in place
    np.testing.assert_array_equal(y, a)


def test_exp_table_holds_the_correctly_rounded_sixteenths():
    # 2^(j/16) from mpmath at 50 digits, rounded once to float64
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(50):
        want = [float(mpmath.power(2, mpmath.mpf(j) / 16)) for j in range(16)]
    assert list(_vexp._TAB16) == want


def test_exp_routes_agree_within_an_ulp():
    # the two routes, each within 1 ulp of the correctly rounded exp (mpmath), so within 2
    # of each other; measured: within 1 of each other
    rng = np.random.default_rng(12)
    x = np.concatenate([-rng.uniform(0.0, 708.0, 50_000), -np.abs(rng.normal(size=50_000))])
    a, b = np.empty_like(x), np.empty_like(x)
    exp_nonpos_into(x, a, 0.0)
    exp_nonpos_into_poly(x, b, 0.0)
    assert (np.abs(a - b) <= np.spacing(b)).all()


def test_cpu_features_follow_a_named_cpu(monkeypatch):
    # with NUMBA_CPU_NAME set, only the features named with it count (the host is not asked)
    class _NoHost:
        def get_host_cpu_features(self):
            raise AssertionError("the host's features must not be asked for here")

    monkeypatch.setattr(numba.config, "CPU_NAME", "znver4")
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+avx2,+avx512f")
    assert cpu_features(_NoHost()) == frozenset({"+avx2", "+avx512f"})
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "")
    assert cpu_features(_NoHost()) == frozenset()


def test_opaque_int_returns_its_argument():
    # the optimisation barrier of the V pass's prefetch distances changes no value
    @numba.njit
    def through(x, y):
        return opaque_int(x), opaque_int(np.int64(16)), opaque_int(y)

    for x in (0, 1, -3, 2**62, -(2**63)):
        assert through(x, np.int32(-7)) == (x, 16, -7)


# --- 16-bit decoders -------------------------------------------------------------------------


@pytest.mark.parametrize("view, dtype", [(np.uint16, np.float16), (np.int16, "bfloat16")])
def test_widen_is_exact_for_every_bit_pattern(view, dtype):
    # float16 bits reach the kernels as uint16, bfloat16 bits as int16
    pat = np.arange(65536, dtype=np.uint16)
    got = np.empty(65536)
    widen_into(pat.view(view), got)
    dt = np.float16 if dtype is np.float16 else ml_dtypes.bfloat16
    with np.errstate(invalid="ignore"):  # ml_dtypes flags its NaN patterns when casting
        ref = pat.view(dt).astype(np.float64)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got.view(np.uint64)[~nan], ref.view(np.uint64)[~nan])


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32],
                         ids=["float16", "bfloat16", "float32"])  # fmt: skip
@pytest.mark.parametrize("g", [1, 2, 3, 5, 6, 8])
def test_a_cache_and_its_float64_copy_agree_to_rounding(dtype, g):
    # Widening is exact and the kernels sum in an order that does not depend on the cache
    # dtype (the V pass of the heads left over from blocks of four walks one row at a time
    # for 4- and 8-byte caches and four rows at once for 16-bit ones, with the same FMAs in
    # the same order): a low-precision cache and its float64 copy select the same positions
    # and agree to rounding. Compiled in one process they have been bit-identical; not
    # asserted, because a specialisation loaded from another process's disk cache may have
    # a vectorised loop's tail compiled differently (seen: approximate logits 1 ulp apart).
    q, K, V, mask = random_case(300 + g, B=2, H=2 * g, Hkv=2, S=203, d=24, holes=True)
    K, V = K.astype(dtype), V.astype(dtype)
    K64, V64 = widened(K, V)
    tol = dict(rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(
        dense_attention(q, K, V, mask=mask), dense_attention(q, K64, V64, mask=mask), **tol
    )
    a = sparq_attention(q, K, V, r=5, k=60, local_window=4, mask=mask, return_steps=True)
    b = sparq_attention(q, K64, V64, r=5, k=60, local_window=4, mask=mask, return_steps=True)
    for f in ("components", "positions"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    for f in ("out", "y", "approx_logits", "alpha"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), err_msg=f, **tol)


# --- kernels vs the twins in every input dtype -----------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("g", range(1, 9))
def test_kernels_match_twins_in_every_dtype(dtype, g):
    q, K, V, mask = random_case(100 + g, B=2, H=2 * g, Hkv=2, S=131, d=24, holes=True)
    q, K, V = (x.astype(dtype) for x in (q, K, V))
    q64, K64, V64 = widened(q, K, V)
    np.testing.assert_allclose(
        dense_attention(q, K, V, mask=mask), dense_attention_twin(q64, K64, V64, mask),
        rtol=1e-12, atol=1e-13,
    )  # fmt: skip
    for opts in ({}, {"group_score": "probs"}, {"selection": "head"}):
        a = sparq_attention(q, K, V, r=5, k=17, local_window=4, mask=mask, return_steps=True,
                            **opts)  # fmt: skip
        b = sparq_attention(q64, K64, V64, r=5, k=17, local_window=4, mask=mask,
                            return_steps=True, impl="twin", **opts)  # fmt: skip
        np.testing.assert_array_equal(a.components, b.components)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_allclose(a.approx_logits, b.approx_logits, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a.alpha, b.alpha, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a.out, b.out, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("layout", ["strided", "fortran", "byteswapped", "fortran-byteswapped"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_non_contiguous_and_byteswapped_inputs(layout, dtype):
    if "byteswapped" in layout and dtype is ml_dtypes.bfloat16:
        pytest.skip("NumPy has no byte-swapped bfloat16 (newbyteorder gives a void dtype)")
    q, K, V, mask = random_case(7, B=2, H=4, Hkv=2, S=57, d=16)
    q, K, V = (x.astype(dtype) for x in (q, K, V))
    ref_d = dense_attention(q, K, V, mask=mask)
    ref_s = sparq_attention(q, K, V, r=4, k=9, local_window=2, mask=mask)
    if layout == "strided":
        big = np.zeros(K.shape[:-1] + (2 * K.shape[-1],), dtype=dtype)
        big[..., ::2] = K
        K2 = big[..., ::2]
        bigv = np.zeros_like(big)
        bigv[..., ::2] = V
        V2 = bigv[..., ::2]
    elif layout == "fortran":
        K2, V2 = np.asfortranarray(K), np.asfortranarray(V)
    else:
        K2 = K.astype(K.dtype.newbyteorder(">" if K.dtype.isnative else "<"))
        V2 = V.astype(V.dtype.newbyteorder(">" if V.dtype.isnative else "<"))
        if layout == "fortran-byteswapped":
            K2, V2 = np.asfortranarray(K2), np.asfortranarray(V2)
    assert not K2.flags.c_contiguous or not K2.dtype.isnative
    np.testing.assert_array_equal(dense_attention(q, K2, V2, mask=mask), ref_d)
    np.testing.assert_array_equal(
        sparq_attention(q, K2, V2, r=4, k=9, local_window=2, mask=mask), ref_s
    )


@pytest.mark.parametrize("fn", ["dense", "sparq"])
def test_a_fortran_byteswapped_cache_is_copied_once(fn):
    # K and V Fortran-ordered and big-endian: each is copied once, in its own dtype (byte
    # order and layout in one copy), so the call's peak is about K + V. Two copies each (a
    # byte-order copy that keeps the layout, then a C-order copy) peaked at 1.5x that.
    rng = np.random.default_rng(8)
    q = rng.normal(size=(1, 4, 64))
    K, V = (np.asfortranarray(rng.normal(size=(1, 2, 8192, 64)).astype(">f4")) for _ in "kv")
    call = (lambda: dense_attention(q, K, V)) if fn == "dense" else (
        lambda: sparq_attention(q, K, V, r=8, k=512))  # fmt: skip
    call()  # compiled and workspaces made before the measurement
    tracemalloc.start()
    try:
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.25 * (K.nbytes + V.nbytes), peak / (K.nbytes + V.nbytes)


@pytest.mark.parametrize("S", [1, 2, 3, 255, 1023, 1025])
def test_odd_lengths(S):
    q, K, V, mask = random_case(S, B=1, H=8, Hkv=2, S=S, d=8, pad=False)
    np.testing.assert_allclose(dense_attention(q, K, V), dense_attention_twin(q, K, V),
                               rtol=1e-12, atol=1e-13)  # fmt: skip
    k = max(1, S // 4)
    a = sparq_attention(q, K, V, r=3, k=k, local_window=min(k, 2), return_steps=True)
    b = sparq_attention(q, K, V, r=3, k=k, local_window=min(k, 2), return_steps=True,
                        impl="twin")  # fmt: skip
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_allclose(a.out, b.out, rtol=1e-11, atol=1e-12)


# --- K stored twice --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_k_cache_t_is_bit_identical(dtype):
    q, K, V, mask = random_case(11, B=2, H=8, Hkv=2, S=1500, d=32, holes=True)
    q, K, V = (x.astype(dtype) for x in (q, K, V))
    kt = transpose_keys(K)
    assert kt.shape == (2, 2, 32, 1500) and kt.dtype == K.dtype and kt.flags.c_contiguous
    bucketed = {"topk": "bucketed", "num_buckets": 46, "k_per_bucket": 2}
    for opts in ({}, bucketed, {"selection": "head"}, {"r": 16}, {"r": 3}):
        opts = {"r": 6, **opts}  # r = 16: four sweeps of four components; 3: singles only
        a = sparq_attention(q, K, V, k=100, local_window=8, mask=mask, return_steps=True,
                            **opts)  # fmt: skip
        b = sparq_attention(q, K, V, k=100, local_window=8, mask=mask, return_steps=True,
                            k_cache_t=kt, **opts)  # fmt: skip
        for f in ("out", "components", "approx_logits", "positions", "alpha", "v_mean", "y"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_nonfinite_k_cache_t_is_named_with_check_finite(dtype, bad):
    # check_finite=True (the default) scans all of k_cache_t: a non-finite entry is named
    # with its index, whether or not step 1 or the spot check reads it.
    q, K, V, _ = random_case(13, B=2, H=4, Hkv=2, S=300, d=16)
    K, V = K.astype(dtype), V.astype(dtype)
    kt = transpose_keys(K)
    kt[1, 0, 5, 123] = bad
    what = "NaN" if bad != bad else r"\+/-inf"
    with pytest.raises(ValueError, match=rf"^k_cache_t: contains {what} \(first at index "
                       r"\(1, 0, 5, 123\)\)"):  # fmt: skip
        sparq_attention(q, K, V, r=4, k=32, k_cache_t=kt)


def test_wrong_k_cache_t_is_rejected():
    q, K, V, mask = random_case(12, B=2, H=4, Hkv=2, S=40, d=8)
    K32 = K.astype(np.float32)
    V32 = V.astype(np.float32)
    kt = transpose_keys(K32)
    call = dict(r=2, k=5, mask=mask)
    with pytest.raises(ValueError, match=r"k_cache_t: expected shape \(B, Hkv, d, S\)"):
        sparq_attention(q, K32, V32, k_cache_t=K32, **call)
    with pytest.raises(TypeError, match="k_cache_t: expected k_cache's dtype float32"):
        sparq_attention(q, K32, V32, k_cache_t=kt.astype(np.float64), **call)
    with pytest.raises(ValueError, match="k_cache_t: expected a C-contiguous"):
        sparq_attention(q, K32, V32, k_cache_t=np.asfortranarray(kt), **call)
    with pytest.raises(ValueError, match="k_cache_t: expected k_cache transposed"):
        sparq_attention(q, K32, V32, k_cache_t=np.ascontiguousarray(K32.reshape(kt.shape)),
                        **call)  # fmt: skip
    with pytest.raises(ValueError, match="k_cache_t: expected k_cache transposed"):
        sparq_attention(q, K32, V32, k_cache_t=transpose_keys(K32 + 1), **call)
    with pytest.raises(TypeError, match="k_cache_t: expected a numpy array"):
        sparq_attention(q, K32, V32, k_cache_t=kt.tolist(), **call)
    with pytest.raises(ValueError, match="impl"):
        sparq_attention(q, K32, V32, k_cache_t=kt, impl="twin", **call)


def _qkv(seed, B, H, Hkv, S, d, dtype):
    """Standard normal q (float64) and K, V in ``dtype``."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, H, d))
    K = rng.normal(size=(B, Hkv, S, d)).astype(dtype)
    V = rng.normal(size=(B, Hkv, S, d)).astype(dtype)
    return q, K, V


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_stale_k_cache_t_is_rejected_at_the_newest_position(dtype):
    # A copy that was not updated with the current token differs only at each batch row's
    # last valid position: the spot check always compares the run of positions ending there.
    # Row 0 is valid up to S - 1; row 1 is right-padded (valid up to 700), so its newest
    # token is not at S - 1.
    B, H, Hkv, S, d = 2, 4, 2, 1000, 16
    q, K, V = _qkv(31, B, H, Hkv, S, d, dtype)
    mask = np.ones((B, S), dtype=bool)
    mask[1, 701:] = False
    call = dict(r=4, k=32, mask=mask)
    sparq_attention(q, K, V, k_cache_t=transpose_keys(K), **call)  # in sync: accepted
    for b, h, j in ((0, 1, S - 1), (1, 0, 700), (1, 1, 690)):
        stale = transpose_keys(K)
        stale[b, h, 3, j] += 1  # one element of one position
        want = rf"differ at b={b}, h={h}, j={j};"
        with pytest.raises(ValueError, match=want):
            sparq_attention(q, K, V, k_cache_t=stale, **call)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_k_cache_t_differences_in_every_checked_run_are_found(dtype):
    # The runs after the newest one start where _spot_starts says (a fixed draw per shape);
    # a difference in any of them, at any component (the first and the last included), is
    # found, and with differences in two runs the run checked first is the one named.
    from reference.sparq import KT_SPOT_RUN, _spot_starts

    B, H, Hkv, S, d = 1, 4, 2, 4096, 16
    q, K, V = _qkv(33, B, H, Hkv, S, d, dtype)
    starts = _spot_starts(B, Hkv, S)
    call = dict(r=4, k=64)
    for h in range(Hkv):
        for t in range(starts.shape[2]):
            for c, off in ((0, 0), (d - 1, KT_SPOT_RUN - 1), (7, 5)):
                j = int(starts[0, h, t]) + off
                if j >= S - KT_SPOT_RUN:  # inside the newest run: tested above
                    continue
                bad = transpose_keys(K)
                bad[0, h, c, j] += 1
                with pytest.raises(ValueError, match=rf"differ at b=0, h={h}, j={j};"):
                    sparq_attention(q, K, V, k_cache_t=bad, **call)
        # two differing runs: the earlier in check order (newest, then in order) is named
        j_first = int(starts[0, h, 0]) + 3
        j_later = int(starts[0, h, -1]) + 2
        if j_first != j_later and max(j_first, j_later) < S - KT_SPOT_RUN:
            bad = transpose_keys(K)
            bad[0, h, 2, j_first] += 1
            bad[0, h, 9, j_later] += 1
            with pytest.raises(ValueError, match=rf"differ at b=0, h={h}, j={j_first};"):
                sparq_attention(q, K, V, k_cache_t=bad, **call)


def test_short_k_cache_t_is_checked_at_every_position():
    # S <= 16: the run that ends at the last valid position covers every position, so a
    # difference anywhere (brute force over positions and components) is found and named.
    rng = np.random.default_rng(32)
    q = rng.normal(size=(1, 2, 4))
    K = rng.normal(size=(1, 1, 10, 4)).astype(np.float32)
    V = rng.normal(size=(1, 1, 10, 4)).astype(np.float32)
    for j in range(10):
        for c in range(4):
            bad = transpose_keys(K)
            bad[0, 0, c, j] = -bad[0, 0, c, j] - 1.0
            with pytest.raises(ValueError, match=rf"differ at b=0, h=0, j={j};"):
                sparq_attention(q, K, V, r=2, k=4, k_cache_t=bad)


# --- check_finite ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ["k_cache", "v_cache"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_names_the_array_and_element(dtype, name, bad):
    q, K, V, mask = random_case(13, B=2, H=4, Hkv=2, S=30, d=8)
    mask[:, :5] = False
    arrays = {"k_cache": K.copy(), "v_cache": V.copy()}
    where = (1, 0, 2, 3)  # a masked row: only a full scan can see it
    arrays[name][where] = bad
    K2, V2 = (arrays[n].astype(dtype) for n in ("k_cache", "v_cache"))
    kind = "NaN" if np.isnan(bad) else r"\+/-inf"
    msg = rf"{name}: contains {kind} \(first at index \(1, 0, 2, 3\)\)"
    with pytest.raises(ValueError, match=msg):
        dense_attention(q, K2, V2, mask=mask)
    with pytest.raises(ValueError, match=msg):
        sparq_attention(q, K2, V2, r=2, k=5, mask=mask)
    # check_finite=False: masked rows are never read, so nothing is reported
    dense_attention(q, K2, V2, mask=mask, check_finite=False)
    vm = V.mean(axis=2)
    sparq_attention(q, K2, V2, r=2, k=5, mask=mask, v_mean=vm, check_finite=False)


#: (H, Hkv): group sizes G = 2 (one-head sweeps only), 4 (four-head sweeps only) and 5 (a
#: block of four heads and one more) of the SparQ kernel's step 3
GROUPS = [(4, 2), (8, 2), (10, 2)]
GROUP_IDS = ["G2", "G4", "G5"]


def _kt_kw(K, twice):
    """``k_cache_t`` of ``K`` when K is stored twice, else no keyword."""
    return dict(k_cache_t=transpose_keys(K)) if twice else {}


@pytest.mark.parametrize("twice", [False, True], ids=["K-once", "K-twice"])
@pytest.mark.parametrize(("H", "Hkv"), GROUPS, ids=GROUP_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
def test_non_finite_in_a_read_entry_is_reported_without_the_full_scan(dtype, H, Hkv, twice):
    q, K, V, mask = random_case(14, B=1, H=H, Hkv=Hkv, S=64, d=8, pad=False)
    K = K.astype(dtype)
    V = V.astype(dtype)
    K2 = K.copy()
    K2[0, 1, 63, :] = np.nan  # the current token: always kept, always read
    for check_finite in (True, False):
        with pytest.raises(ValueError, match=r"k_cache: contains NaN \(first at index \(0, 1, 63"):
            dense_attention(q, K2, V, check_finite=check_finite)
        with pytest.raises(ValueError, match=r"k_cache: contains NaN \(first at index \(0, 1, 63"):
            sparq_attention(q, K2, V, r=2, k=5, local_window=1, check_finite=check_finite,
                            **_kt_kw(K2, twice))  # fmt: skip
    # an older position, in every component: step 3 reads it in whichever columns it keeps
    for bad, kind in ((np.nan, "NaN"), (np.inf, r"\+/-inf"), (-np.inf, r"\+/-inf")):
        K3 = K.copy()
        K3[0, 1, 20, :] = bad
        msg = rf"k_cache: contains {kind} \(first at index \(0, 1, 20"
        with pytest.raises(ValueError, match=msg):
            sparq_attention(q, K3, V, r=2, k=5, local_window=1, check_finite=False,
                            **_kt_kw(K3, twice))  # fmt: skip
    V2 = V.copy()
    V2[0, 0, 63, 3] = np.inf
    with pytest.raises(ValueError, match=r"v_cache: contains \+/-inf"):
        sparq_attention(q, K, V2, r=2, k=5, local_window=1, v_mean=np.zeros((1, 2, 8)),
                        check_finite=False, **_kt_kw(K, twice))  # fmt: skip


@pytest.mark.parametrize("twice", [False, True], ids=["K-once", "K-twice"])
@pytest.mark.parametrize(("H", "Hkv"), GROUPS, ids=GROUP_IDS)
def test_logit_overflow_in_a_read_k_column_is_reported(H, Hkv, twice):
    # finite inputs whose q . k overflows float64 at one older position of KV head 1 (every
    # component 1e300, |q| ~ 1e10): the kernel's own check of the step-3 logits must see it
    # (the float64 kernels compute no up-front bound), with or without check_finite
    q, K, V, mask = random_case(19, B=1, H=H, Hkv=Hkv, S=64, d=8, pad=False)
    q = q * 1e10
    K = K.copy()
    K[0, 1, 20, :] = 1e300
    with np.errstate(all="ignore"):
        for check_finite in (False, True):
            with pytest.raises(ValueError, match=r"^q, k_cache: the attention logits overflow"):
                sparq_attention(q, K, V, r=2, k=5, local_window=1, check_finite=check_finite,
                                **_kt_kw(K, twice))  # fmt: skip


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize(("H", "Hkv"), [(8, 4), (8, 2), (10, 2)], ids=GROUP_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bit_identical_across_thread_counts_for_every_dtype(dtype, H, Hkv):
    # G = 2, 4 and 5 query heads per KV head (one-head and four-head sweeps); K stored twice
    # (return_steps with k_cache_t) and once
    from reference import get_num_threads, set_num_threads

    q, K, V, mask = random_case(18, B=3, H=H, Hkv=Hkv, S=300, d=16, holes=True)
    q, K, V = (x.astype(dtype) for x in (q, K, V))
    kt = transpose_keys(K)
    before = get_num_threads()
    runs = []
    try:
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            set_num_threads(n)
            st = sparq_attention(q, K, V, r=4, k=40, local_window=4, mask=mask,
                                 return_steps=True, k_cache_t=kt)  # fmt: skip
            out = sparq_attention(q, K, V, r=4, k=40, local_window=4, mask=mask)
            runs.append((dense_attention(q, K, V, mask=mask), st.out, st.positions, out))
    finally:
        set_num_threads(before)
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------- query alignment, line size
def _offset_view(x: np.ndarray, offset: int) -> np.ndarray:
    """A C-contiguous copy of ``x`` whose data starts ``offset`` bytes past a 64-byte line."""
    buf = np.empty(x.nbytes + 128, dtype=np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    out = buf[start : start + x.nbytes].view(x.dtype).reshape(x.shape)
    out[...] = x
    return out


@pytest.mark.parametrize("offset", [0, 8, 16, 48])
def test_aligned_copy_starts_on_a_line_and_keeps_the_values(offset):
    from reference._checks import Q_ALIGN, KernelInputs, aligned_copy

    rng = np.random.default_rng(40 + offset)
    x = _offset_view(rng.standard_normal((2, 3, 16)), offset)
    y = aligned_copy(x)
    assert y.ctypes.data % Q_ALIGN == 0 and y.flags.c_contiguous
    assert y.dtype == x.dtype and y.shape == x.shape and np.array_equal(y, x)
    assert (y is x) == (offset == 0)  # an aligned array is used as it is, not copied
    # the kernels' query rows start on a line whatever the caller's alignment
    K = rng.standard_normal((2, 1, 8, 16))
    xi = KernelInputs(x, K, K, None)
    assert xi.q.ctypes.data % Q_ALIGN == 0 and np.array_equal(xi.q, x)


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_query_copy_is_exact_aligned_and_checked_for_every_dtype_and_layout(dtype, layout):
    # the kernels' float64 query (one jitted widening pass) against NumPy's own widening
    from reference._checks import Q_ALIGN, as_query

    rng = np.random.default_rng(41)
    base = rng.standard_normal((3, 5, 2, 12)).astype(dtype)
    q = {
        "C": np.ascontiguousarray(base[:, :, 0]),
        "F": np.asfortranarray(base[:, :, 0]),
        "strided": base[:, :, 1, ::2],
    }[layout]
    got = as_query(q)
    assert got.dtype == np.float64 and got.shape == q.shape and got.flags.c_contiguous
    assert got.ctypes.data % Q_ALIGN == 0
    np.testing.assert_array_equal(got, widened(q)[0])
    for bad, word in ((np.nan, "NaN"), (np.inf, "inf")):
        q2 = q.copy()
        q2[2, 1, 3] = bad
        with pytest.raises(ValueError, match=rf"q: contains .*{word}.*\(2, 1, 3\)"):
            as_query(q2)


def test_mask_none_is_all_valid_and_shared_by_calls_of_one_shape():
    from reference._checks import KernelInputs

    rng = np.random.default_rng(42)
    q = rng.standard_normal((2, 4, 8))
    K = rng.standard_normal((2, 2, 30, 8))
    a, b = KernelInputs(q, K, K, None), KernelInputs(q, K, K, None)
    assert a.mask.shape == (2, 30) and a.mask.dtype == np.bool_ and a.mask.all()
    assert a.mask is b.mask  # built once per shape
    assert KernelInputs(q[:1], K[:1], K[:1], None).mask.shape == (1, 30)


@pytest.mark.parametrize("offset", [8, 16, 32])
def test_outputs_do_not_depend_on_query_alignment(offset):
    # the same query values at another address give bit-identical outputs (the kernels
    # read an aligned copy of q; the float64 twin is the oracle for the values elsewhere)
    rng = np.random.default_rng(50 + offset)
    q = rng.standard_normal((2, 4, 32))
    K = rng.standard_normal((2, 2, 300, 32)).astype(np.float32)
    V = rng.standard_normal((2, 2, 300, 32)).astype(np.float32)
    q_off = _offset_view(q, offset)
    assert np.array_equal(dense_attention(q, K, V), dense_attention(q_off, K, V))
    a = sparq_attention(q, K, V, r=8, k=40, return_steps=True)
    b = sparq_attention(q_off, K, V, r=8, k=40, return_steps=True)
    for f in ("out", "positions", "alpha", "approx_logits"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f


def test_line_elems_is_the_line_over_the_element_size():
    # one prefetch per 64-byte line: 8 float64, 16 float32, 32 16-bit elements per line
    from reference._config import njit_serial
    from reference._rows import CACHE_LINE_BYTES, line_elems

    @njit_serial
    def f(a):
        return line_elems(a)

    assert CACHE_LINE_BYTES == 64
    for dt, n in ((np.float64, 8), (np.float32, 16), (np.uint16, 32), (np.int16, 32)):
        assert f(np.zeros((2, 4), dtype=dt)) == n, dt


@pytest.mark.parametrize("G", [1, 3, 4, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_gather_requests_do_not_change_attend_positions(G, dtype):
    # SparQ's step 7 is attend_positions with its kept rows requested ahead (GATHER_AHEAD,
    # GATHER_REQUESTS: four times on AMD Zen, once elsewhere, so this host's setting and
    # the other one are both checked): prefetches only, so the output is bit-identical to
    # the default's, whatever the number of kept rows (around the step of 4) and the
    # distance.
    from reference._rows import GATHER_AHEAD, GATHER_REQUESTS, attend_positions

    assert GATHER_REQUESTS >= 1 and GATHER_AHEAD % GATHER_REQUESTS == 0
    rng = np.random.default_rng(70 + G)
    d, S = 32, 300
    K = rng.standard_normal((S, d)).astype(dtype)
    V = rng.standard_normal((S, d)).astype(dtype)
    if dtype == np.float16:  # the kernels' encoding of float16 caches
        K, V = K.view(np.uint16), V.view(np.uint16)
    qg = rng.standard_normal((G, d))
    for n_pos in (1, 3, 4, 5, 17, 48, S):
        pos = np.sort(rng.choice(S, n_pos, replace=False)).astype(np.int64)
        y_ref = np.full((G, d), np.nan)
        st_ref = np.zeros(1, dtype=np.int64)
        attend_positions(qg, K, V, pos, n_pos, 0.125, y_ref, st_ref, np.empty(G * n_pos))
        for ahead, requests in ((GATHER_AHEAD, GATHER_REQUESTS), (16, 4), (16, 1), (3, 2), (0, 1)):
            y = np.full((G, d), np.nan)
            st = np.zeros(1, dtype=np.int64)
            attend_positions(qg, K, V, pos, n_pos, 0.125, y, st, np.empty(G * n_pos), ahead,
                             requests)  # fmt: skip
            assert st[0] == st_ref[0] == 0
            assert np.array_equal(y, y_ref), (n_pos, ahead, requests)


def test_prefetch_ahead_requests_each_row_requests_times_within_range(monkeypatch):
    # The schedule of prefetch_ahead, run as plain Python with prefetch_row and
    # prefetch_row_near recorded: called at every step of 4 rows (and once per row for a
    # tail of fewer than 4), it requests row positions[u] once at each of its distances
    # (written out by hand below) for every u at least that far from the start, never an
    # index at or past n_pos, and nothing with ``ahead`` 0. With several requests the
    # nearest distance goes through prefetch_row_near (into the L1), the others through
    # prefetch_row; a single request through prefetch_row. (A prefetch has no visible
    # effect on results, so the kernels' bit-identity tests cannot see this.)
    import reference._rows as rows

    far, near = [], []
    monkeypatch.setattr(rows, "prefetch_row", lambda A, j: far.append(int(j)))
    monkeypatch.setattr(rows, "prefetch_row_near", lambda A, j: near.append(int(j)))
    positions = np.arange(1000, 1023, dtype=np.int64) * 3  # 23 rows: a tail of 3
    n = positions.size
    distances = {  # (ahead, requests) -> (far distances, near distances)
        (16, 4): ([16, 12, 8], [4]),
        (8, 1): ([8], []),
        (6, 3): ([6, 4], [2]),
        (3, 5): ([3, 3, 3, 3], [3]),  # more requests than rows ahead: the same distance
        (0, 1): ([], []),
        (0, 4): ([], []),
    }
    for (ahead, requests), (far_d, near_d) in distances.items():
        far.clear()
        near.clear()
        t = 0
        while t < n:
            count = 4 if t + 4 <= n else 1
            rows.prefetch_ahead.py_func(None, positions, t, count, n, ahead, requests)
            t += count
        want_far = sorted(int(positions[u]) for a in far_d for u in range(a, n))
        want_near = sorted(int(positions[u]) for a in near_d for u in range(a, n))
        assert sorted(far) == want_far, (ahead, requests)
        assert sorted(near) == want_near, (ahead, requests)


def test_prefetch_localities_in_the_generated_code():
    # The compiled requests carry their localities: the code of prefetch_ahead holds
    # llvm.prefetch calls with the nearest request's locality (3, into the L1) and with the
    # host's (PREFETCH_LOCALITY), and no other (the schedule test above pins which request
    # takes which).
    import re

    from reference._config import GATHER_NEAR_LOCALITY, PREFETCH_LOCALITY, njit_serial
    from reference._rows import prefetch_ahead

    @njit_serial(cache=False)
    def requests(A, positions, requests):
        prefetch_ahead(A, positions, 0, 4, positions.shape[0], 8, requests)

    A = np.zeros((64, 16), dtype=np.float32)
    positions = np.arange(0, 64, 2, dtype=np.int64)
    requests(A, positions, 4)
    ir = "".join(requests.inspect_llvm().values())
    localities = {
        int(x) for x in re.findall(r"@llvm\.prefetch\.p0\([^)]*i32 0, i32 (\d), i32 1\)", ir)
    }
    assert localities == {GATHER_NEAR_LOCALITY, PREFETCH_LOCALITY}
    assert GATHER_NEAR_LOCALITY == 3


@pytest.mark.parametrize("G", [3, 4, 5, 8])
def test_step3_group_score_is_summed_in_its_blocks(G):
    # With ``gsum`` step 3 writes the group score of logits, score[j] = ((0 + s0) + s1) + ...,
    # block by block: bit for bit the sum step 4 would make afterwards, on a row longer than
    # a block, K once and twice (G a multiple of 4: each four heads' block copied out and
    # added in one pass; otherwise head by head). The logits and their maxima are those of
    # the call without the group score (which copies them out head by head), and the same
    # with K once and twice; the maxima are NumPy's.
    from reference.sparq import _STEP3_BLOCK_KT, _approx_logits_row

    rng = np.random.default_rng(95)
    d, S = 16, _STEP3_BLOCK_KT + 700
    K = rng.standard_normal((S, d)).astype(np.float32)
    comps = np.array([0, 3, 5, 9, 12], dtype=np.int64)
    qs = rng.standard_normal((G, comps.size))
    maskrow = np.ones(S, dtype=bool)
    got = {}
    for k_twice in (False, True):
        for gsum in (False, True):
            s = np.full((G, S), np.nan)
            smax = np.full(G, -np.inf)
            score = np.full(S, np.nan)
            _approx_logits_row(
                qs, K, np.ascontiguousarray(K.T) if k_twice else K, k_twice, comps, maskrow,
                s, smax, score, gsum, np.zeros(G), False,
            )  # fmt: skip
            got[k_twice, gsum] = (s, smax)
            if gsum:
                want = np.zeros(S)
                for h in range(G):
                    want = want + s[h]
                assert np.array_equal(score, want), k_twice
            else:
                assert np.isnan(score).all()  # not written
            np.testing.assert_array_equal(smax, s.max(axis=1))
    for key, (s, smax) in got.items():
        assert np.array_equal(s, got[False, False][0]), key
        assert np.array_equal(smax, got[False, False][1]), key


@pytest.mark.parametrize("G", [4, 8])
def test_step3_group_score_checks_the_logits_not_their_sum(G):
    # Finite logits whose group score overflows (4 x 1e308) are no error, as before the
    # score was summed in step 3 (the score is then inf there); a NaN in a key column read
    # by step 3 is one (NaN returned), whichever head's block holds it.
    from reference.sparq import _approx_logits_row

    d, S = 8, 5000
    K = np.ones((S, d))
    comps = np.array([0, 1, 2, 3], dtype=np.int64)
    qs = np.full((G, 4), 0.25)
    K[1234, :4] = 1e308  # each head's logit there: 4 x 0.25e308 = 1e308, finite
    maskrow = np.ones(S, dtype=bool)
    for k_twice in (False, True):
        s = np.empty((G, S))
        score = np.empty(S)
        chk = _approx_logits_row(
            qs, K, np.ascontiguousarray(K.T) if k_twice else K, k_twice, comps, maskrow, s,
            np.full(G, -np.inf), score, True, np.zeros(G), False,
        )  # fmt: skip
        assert chk == 0.0 and np.isfinite(s).all() and s[0, 1234] == 1e308
        assert score[1234] == np.inf and np.isfinite(np.delete(score, 1234)).all()
        K2 = K.copy()
        K2[4321, 2] = np.nan
        chk = _approx_logits_row(
            qs, K2, np.ascontiguousarray(K2.T) if k_twice else K2, k_twice, comps, maskrow,
            s, np.full(G, -np.inf), score, True, np.zeros(G), False,
        )  # fmt: skip
        assert np.isnan(chk), k_twice
        # one head's logits overflow to inf (its query components 1e308: 4 x 1e308), the
        # others finite: the last head of the last block of four heads
        qs2 = qs.copy()
        qs2[G - 1] = 1e308
        chk = _approx_logits_row(
            qs2, K, np.ascontiguousarray(K.T) if k_twice else K, k_twice, comps, maskrow, s,
            np.full(G, -np.inf), score, True, np.zeros(G), False,
        )  # fmt: skip
        assert np.isnan(chk), k_twice
        assert np.isinf(s[G - 1]).any() and np.isfinite(s[: G - 1]).all()


@pytest.mark.parametrize("G", [1, 3, 4, 5])
def test_step3_softmax_normalisers_with_a_running_max(G):
    # With ``norm`` step 3 also sums exp(s - max) per head, segment by segment against the
    # running max (rescaling the sum when the max rises). Checked against NumPy's sum
    # against the final max, on logits that rise from segment to segment (so the max rises
    # several times), with masked positions, a first segment masked throughout (max -inf so
    # far) and S not a multiple of a segment; the logits and maxima are the same to the bit
    # with and without it, and every output is the same to the bit with K once or twice
    # (their blocks differ, the segments do not).
    from reference.sparq import _STEP3_BLOCK, _STEP3_BLOCK_KT, NORM_SEG, _approx_logits_row

    assert NORM_SEG % _STEP3_BLOCK_KT == 0 and NORM_SEG % _STEP3_BLOCK == 0
    rng = np.random.default_rng(90 + G)
    d, r = 16, 4
    S = 2 * NORM_SEG + 300
    K = rng.standard_normal((S, d)).astype(np.float32)
    K *= np.linspace(0.2, 3.0, S, dtype=np.float32)[:, None]  # logits grow with position
    KT = np.ascontiguousarray(K.T)
    comps = np.array([1, 4, 7, 11], dtype=np.int64)
    qs = np.abs(rng.standard_normal((G, r)))
    for mask_first in (False, True):
        maskrow = rng.random(S) > 0.2
        if mask_first:
            maskrow[:NORM_SEG] = False
        maskrow[-1] = True
        outs = {}
        for k_twice in (False, True):
            for norm in (False, True):
                s = np.full((G, S), np.nan)
                smax = np.full(G, -np.inf)
                score = np.full(S, np.nan)
                ssum = np.zeros(G)
                chk = _approx_logits_row(
                    qs, K, KT if k_twice else K, k_twice, comps, maskrow, s, smax, score,
                    False, ssum, norm,
                )  # fmt: skip
                assert chk == 0.0
                outs[k_twice, norm] = (s, smax, ssum)
        s0, m0, z0 = outs[True, False]
        s1, m1, z1 = outs[True, True]
        assert np.array_equal(s0, s1) and np.array_equal(m0, m1)
        assert np.all(z0 == 0.0)
        want = np.exp(s1 - s1.max(axis=1, keepdims=True)).sum(axis=1)
        np.testing.assert_allclose(z1, want, rtol=1e-13)
        assert np.all(np.isneginf(s1[:, ~maskrow]))
        for a, b in zip(outs[False, True], outs[True, True], strict=True):
            assert np.array_equal(a, b)
