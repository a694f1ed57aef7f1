"""Emulated low precision: rounding (against brute force) and the naive-kernel error."""

import numpy as np
import pytest

from reference import sparq_attention
from reference.precision import round_to
from tests._cases import random_case


def _nearest_bf16_brute(x32):
    # bfloat16 values are float32 patterns with 16 zero low bits: compare the two neighbours.
    out = np.empty_like(x32)
    for i, v in enumerate(x32):
        bits = int(np.float32(v).view(np.uint32))
        lo = bits & 0xFFFF0000
        hi = lo + 0x10000
        clo = float(np.uint32(lo).view(np.float32))
        chi = float(np.uint32(hi).view(np.float32)) if hi <= 0xFFFFFFFF else np.inf
        dlo, dhi = abs(float(v) - clo), abs(chi - float(v))
        if dlo < dhi or (dlo == dhi and (lo >> 16) % 2 == 0):
            out[i] = clo
        else:
            out[i] = chi
    return out


def test_bfloat16_rounding_matches_brute_force():
    rng = np.random.default_rng(40)
    x = np.concatenate([
        rng.normal(size=2000) * 10.0 ** rng.integers(-30, 30, 2000),
        # exact ties: a bfloat16 value plus half its ulp
        (1 + np.arange(1, 200) * 2.0**-7 + 2.0**-8) * rng.choice([-1, 1], 199),
    ]).astype(np.float32)  # fmt: skip
    np.testing.assert_array_equal(round_to(x, "bfloat16"), _nearest_bf16_brute(x))


@pytest.mark.parametrize(
    "precision,value,expected",
    [
        ("float16", 1 + 2**-11, 1.0),  # tie -> even
        ("float16", 1 + 3 * 2**-11, 1 + 2**-9),  # tie -> even (up)
        ("float16", 65520.0, np.inf),  # past the largest float16 (65504) at the midpoint
        ("bfloat16", 1 + 2**-8, 1.0),
        ("bfloat16", 1 + 3 * 2**-8, 1 + 2**-6),
        ("bfloat16", float(np.finfo(np.float32).max), np.inf),
        ("float32", 1 + 2**-24, 1.0),
        ("float64", 1 + 2**-40, 1 + 2**-40),
    ],
)
def test_round_to_hand_values(precision, value, expected):
    assert round_to(np.array([value]), precision)[0] == expected


@pytest.mark.parametrize("precision,lo,hi", [("float32", 1e-9, 1e-5), ("float16", 1e-4, 3e-2),
                                             ("bfloat16", 1e-3, 2e-1)])  # fmt: skip
def test_emulated_error_is_of_the_dtype_order(precision, lo, hi):
    # Unit roundoff: float32 6e-8, float16 4.9e-4, bfloat16 3.9e-3; errors compound over a
    # few rounding steps, so the emulation's max error lands within a decade or two of it.
    q, K, V, mask = random_case(41, B=2, H=8, Hkv=2, S=200, d=64, dtype=np.float32)
    kw = dict(r=16, k=32, local_window=4, mask=mask, return_steps=True)
    truth = sparq_attention(q, K, V, **kw)
    emu = sparq_attention(q, K, V, precision=precision, **kw)
    err = np.abs(emu.out - truth.out).max()
    assert lo < err < hi
    # stored tensors hold values of the emulated dtype
    for name in ("out", "alpha", "v_mean"):
        arr = getattr(emu, name)
        np.testing.assert_array_equal(round_to(arr, precision), arr)


def test_float64_emulation_is_the_truth():
    q, K, V, mask = random_case(42)
    a = sparq_attention(q, K, V, r=3, k=5, mask=mask, precision="float64", impl="twin")
    b = sparq_attention(q, K, V, r=3, k=5, mask=mask, impl="twin")
    np.testing.assert_array_equal(a, b)


def test_emulation_needs_the_twin():
    q, K, V, mask = random_case(43)
    with pytest.raises(ValueError, match="impl: the Numba kernel computes the float64 truth"):
        sparq_attention(q, K, V, r=3, k=5, precision="float16", impl="numba")
    with pytest.raises(ValueError, match="precision: expected one of"):
        sparq_attention(q, K, V, r=3, k=5, precision="fp8")


def test_emulation_ignores_masked_garbage_beyond_the_dtype_range():
    q, K, V, mask = random_case(44, B=3, H=4, Hkv=2, S=25, d=8)
    kw = dict(r=3, k=6, local_window=2, mask=mask, precision="float16", return_steps=True)
    ref = sparq_attention(q, K, V, **kw)
    bad = ~np.broadcast_to(mask[:, None, :, None], K.shape)
    K2, V2 = K.copy(), V.copy()
    K2[bad], V2[bad] = 1e9, 1e30  # inf once stored in float16, but never read
    got = sparq_attention(q, K2, V2, **kw)
    np.testing.assert_array_equal(got.out, ref.out)


def test_valid_entry_overflowing_the_emulated_dtype_is_an_error():
    q, K, V, mask = random_case(45)
    V = V.copy()
    V[0, 1, -1, 2] = 1e6  # valid (the current token), beyond float16's 65504
    with pytest.raises(
        ValueError, match=r"v_cache: value 1e\+06 at index \(0, 1, 16, 2\) overflows"
    ):
        sparq_attention(q, K, V, r=2, k=3, mask=mask, precision="float16")


def test_logit_overflow_from_finite_inputs_is_an_error():
    from reference import dense_attention

    q, K, V, mask = random_case(46)
    q, K = q * 1e200, K * 1e200  # finite, but q . k overflows float64
    with np.errstate(all="ignore"):
        # the kernels detect the overflow in the logits they compute; the twins refuse the
        # inputs up front by the bound ||q_h||_1 max|K| < 1e300
        for impl in ("numba", "twin"):
            with pytest.raises(ValueError, match="q, k_cache: .* logits (could )?overflow float64"):
                sparq_attention(q, K, V, r=8, k=3, mask=mask, impl=impl)
        for check_finite in (True, False):
            with pytest.raises(ValueError, match="q, k_cache: .* logits overflow float64"):
                dense_attention(q, K, V, mask=mask, check_finite=check_finite)
            with pytest.raises(ValueError, match="q, k_cache: .* logits overflow float64"):
                sparq_attention(q, K, V, r=8, k=3, mask=mask, check_finite=check_finite)


def test_huge_masked_garbage_does_not_trip_the_overflow_guard():
    q, K, V, mask = random_case(47)
    K = K.copy()
    K[~np.broadcast_to(mask[:, None, :, None], K.shape)] = 1e300
    ref = sparq_attention(q, K * np.broadcast_to(mask[:, None, :, None], K.shape), V, r=2, k=3,
                          mask=mask)  # fmt: skip
    np.testing.assert_array_equal(sparq_attention(q, K, V, r=2, k=3, mask=mask), ref)
