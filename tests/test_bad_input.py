"""Bad input to the attention functions: clear errors naming the argument."""

import numpy as np
import pytest

from reference import dense_attention, sparq_attention
from tests._cases import random_case


def _case():
    return random_case(0, B=2, H=4, Hkv=2, S=9, d=8)


def _call(fn, **over):
    q, K, V, mask = _case()
    kw = dict(q=q, k_cache=K, v_cache=V, mask=mask)
    if fn is sparq_attention:
        kw.update(r=2, k=3)
    kw.update(over)
    return fn(kw.pop("q"), kw.pop("k_cache"), kw.pop("v_cache"), **kw)


FNS = [dense_attention, sparq_attention]


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize(
    "over,exc,words",
    [
        (dict(q=np.zeros((2, 4))), ValueError, "q: expected a 3-D"),
        (dict(k_cache=np.zeros((2, 2, 9))), ValueError, "k_cache: expected a 4-D"),
        (dict(v_cache=np.zeros((2, 2, 8, 8))), ValueError, "equal shapes"),
        (dict(k_cache=np.zeros((2, 3, 9, 8)), v_cache=np.zeros((2, 3, 9, 8))), ValueError,
         "multiple of the KV heads"),
        (dict(k_cache=np.zeros((3, 2, 9, 8)), v_cache=np.zeros((3, 2, 9, 8))), ValueError,
         "expected batch 2"),
        (dict(k_cache=np.zeros((2, 2, 9, 4)), v_cache=np.zeros((2, 2, 9, 4))), ValueError,
         "expected head dim 8"),
        (dict(q=np.zeros((2, 4, 8), dtype=np.int64)), TypeError, "q: expected a float16"),
        (dict(v_cache=np.zeros((2, 2, 9, 8), dtype=np.complex128)), TypeError, "v_cache"),
        (dict(mask=np.ones((2, 9), dtype=np.int8)), TypeError, "mask: expected a bool"),
        (dict(mask=np.ones((2, 8), dtype=bool)), ValueError, "mask: expected shape"),
        (dict(mask=np.array([[True] * 9, [False] * 9])), ValueError, "rows [1] are all False"),
    ],
)  # fmt: skip
def test_shapes_dtypes_mask(fn, over, exc, words):
    with pytest.raises(exc, match=None) as info:
        _call(fn, **over)
    assert words in str(info.value)


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("name", ["q", "k_cache", "v_cache"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_rejected_naming_the_array(fn, name, bad):
    q, K, V, mask = _case()
    arrays = dict(q=q, k_cache=K, v_cache=V)
    arrays[name] = arrays[name].copy()
    arrays[name].flat[5] = bad
    with pytest.raises(ValueError, match=name):
        _call(fn, **arrays)


@pytest.mark.parametrize(
    "over,exc,words",
    [
        (dict(r=0), ValueError, "r: expected an int >= 1"),
        (dict(r=9), ValueError, "r: expected an int <= the head dim d = 8"),
        (dict(r=2.0), TypeError, "r: expected an int"),
        (dict(r=True), TypeError, "r: expected an int, got bool"),
        (dict(k=0), ValueError, "k: expected an int >= 1"),
        (dict(k=3, local_window=4), ValueError, "local_window: expected an int <= k = 3"),
        (dict(local_window=-1), ValueError, "local_window: expected an int >= 0"),
        (dict(temperature="l2"), ValueError, "temperature: expected one of"),
        (dict(group_score="max"), ValueError, "group_score"),
        (dict(selection="token"), ValueError, "selection"),
        (dict(impl="cuda"), ValueError, "impl"),
        (dict(reallocate=1), TypeError, "reallocate: expected a bool"),
        (dict(v_mean=np.zeros((2, 4, 8))), ValueError, "v_mean: expected shape"),
        (dict(v_mean=np.full((2, 2, 8), np.nan)), ValueError, "v_mean: contains NaN"),
    ],
)
def test_sparq_parameters(over, exc, words):
    with pytest.raises(exc) as info:
        _call(sparq_attention, **over)
    assert words in str(info.value)


def test_validated_parameters_are_not_reused_for_equal_values_of_another_type():
    # Valid parameter sets are cached by value and type: after a call with r=1 and
    # reallocate=True, r=True (== 1) and reallocate=1 (== True) are still rejected, and an
    # unhashable argument still gets the argument's own error.
    _call(sparq_attention, r=1, reallocate=True)
    for over, words in [
        (dict(r=True), "r: expected an int, got bool"),
        (dict(r=1, reallocate=1), "reallocate: expected a bool"),
        (dict(r=[1]), "r: expected an int, got list"),
    ]:
        with pytest.raises(TypeError) as info:
            _call(sparq_attention, **over)
        assert words in str(info.value)


def test_numpy_integer_parameters_accepted():
    out = _call(sparq_attention, r=np.int64(2), k=np.int32(3))
    assert out.shape == (2, 4, 8)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_found_in_a_later_chunk_with_its_index(bad):
    # The finite check works in chunks of 65536 elements; the first bad element is reported.
    K = np.zeros((1, 1, 600, 128))  # 76800 elements: two chunks
    K[0, 0, 590, 3] = bad
    K[0, 0, 599, 0] = bad
    with pytest.raises(
        ValueError, match=r"k_cache: contains .* \(first at index \(0, 0, 590, 3\)\)"
    ):
        dense_attention(np.zeros((1, 1, 128)), K, np.zeros_like(K) + 0.0)


def test_non_native_byte_order_is_accepted():
    q, K, V, mask = _case()
    a = sparq_attention(q.astype(">f4"), K.astype(">f8"), V.astype(">f2"), r=2, k=3, mask=mask)
    b = sparq_attention(q.astype("<f4"), K, V.astype("<f2"), r=2, k=3, mask=mask)
    np.testing.assert_array_equal(a, b)
