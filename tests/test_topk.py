"""Exact top-k (reference.topk, topk_row, topk_twin).

Oracles: hand-computed cases; a pure-Python sort by (-value, index) over Python ints or
floats (independent of NumPy's lexsort used by the twin); the float64 twin for the bulk
randomised comparisons (itself checked against the pure-Python oracle here).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from reference import _topk_exact
from reference._config import get_num_threads, set_num_threads
from reference.selection import (
    topk,
    topk_buffer_size,
    topk_row,
    topk_row_into,
    topk_row_twin,
    topk_set_into,
    topk_twin,
)

DTYPES = [
    np.float16,
    np.float32,
    np.float64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint32,
    np.uint64,
]


def brute_order(row, largest=True) -> list[int]:
    """All positions ranked: by value (desc if largest), ties to the lower index."""
    vals = [v.item() for v in row]  # Python int / float: exact comparisons
    if largest:
        return sorted(range(len(vals)), key=lambda i: (-vals[i], i))
    return sorted(range(len(vals)), key=lambda i: (vals[i], i))


def random_array(rng, shape, dtype, ties=False):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        if ties:
            x = rng.integers(-3, 4, size=shape).astype(dtype)
        else:
            x = rng.standard_normal(shape).astype(dtype)
        # sprinkle infinities
        mask = rng.random(shape) < 0.05
        x[mask] = rng.choice(np.array([-np.inf, np.inf], dtype=dtype), size=int(mask.sum()))
        return x
    info = np.iinfo(dtype)
    if ties:
        lo, hi = max(info.min, -3), min(info.max, 3)
        return rng.integers(lo, hi + 1, size=shape, dtype=dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


# ----------------------------------------------------------------------------- hand cases


def test_hand_case_largest_and_smallest():
    x = np.array([3.0, 1.0, 3.0, 2.0, 5.0])
    v, i = topk(x, 3)
    assert i.tolist() == [4, 0, 2]  # 5, then the two 3s: lower index first
    assert v.tolist() == [5.0, 3.0, 3.0]
    v, i = topk(x, 2, largest=False)
    assert i.tolist() == [1, 3]
    assert v.tolist() == [1.0, 2.0]
    v, i = topk(x, 3, largest=False)
    assert i.tolist() == [1, 3, 0]  # 1, 2, then the first 3


def test_hand_case_2d_axis0():
    x = np.array([[1, 9], [7, 2], [7, 8]], dtype=np.int32)
    v, i = topk(x, 2, axis=0)
    assert i.tolist() == [[1, 0], [2, 2]]
    assert v.tolist() == [[7, 9], [7, 8]]
    assert v.dtype == np.int32 and i.dtype == np.int64


def test_twin_matches_pure_python_oracle():
    rng = np.random.default_rng(11)
    for dtype in DTYPES:
        for ties in (False, True):
            x = random_array(rng, (37,), dtype, ties)
            for largest in (True, False):
                want = brute_order(x, largest)[:10]
                _, got = topk_twin(x, 10, largest=largest)
                assert got.tolist() == want, (dtype, ties, largest)


def test_topk_row_twin_is_the_row_twin():
    rng = np.random.default_rng(12)
    x = rng.integers(0, 4, 50).astype(np.float64)
    assert topk_row_twin(x, 7).tolist() == brute_order(x)[:7]


# ------------------------------------------------------------------- kernel vs oracles


@given(data=st.data())
def test_kernel_matches_twin(data):
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    ndim = data.draw(st.integers(1, 3), label="ndim")
    shape = tuple(data.draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim)))
    axis = data.draw(st.integers(-ndim, ndim - 1), label="axis")
    n = data.draw(st.sampled_from([1, 2, 7, 33, 300, 1100]), label="n")
    shape = shape[: axis % ndim] + (n,) + shape[axis % ndim + 1 :]
    k = data.draw(st.integers(0, n), label="k")
    largest = data.draw(st.booleans(), label="largest")
    ties = data.draw(st.booleans(), label="ties")
    x = random_array(rng, shape, dtype, ties)
    v, i = topk(x, k, axis=axis, largest=largest)
    tv, ti = topk_twin(x, k, axis=axis, largest=largest)
    assert i.shape == ti.shape and v.dtype == x.dtype
    np.testing.assert_array_equal(i, ti)
    np.testing.assert_array_equal(v, tv)
    np.testing.assert_array_equal(v, np.take_along_axis(x, i, axis=axis))


def _sample_positions(n, k):
    """(ns, stride) of the exact kernel's strided sample for a row of n at this k (the
    positions a "sample_trap" row fills with its largest values)."""
    ns = _topk_exact._sample_size.py_func(n, k)
    return ns, n // ns


@pytest.mark.parametrize(
    "order", ["random", "ascending", "descending", "sawtooth", "ties", "sample_trap"]
)
@pytest.mark.parametrize("k", [1, 16, 64, 300, 1024])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_large_rows_all_code_paths(order, k, dtype):
    # n = 40000 rows exercise the buffer compaction, the sampled first threshold (k >= 64)
    # and, with "sample_trap" (the sampled positions hold the largest values), the
    # fallback when the sampled threshold lets fewer than k elements through.
    n = 40000
    rng = np.random.default_rng(1000 + k)
    if order == "random":
        x = rng.permutation(n)
    elif order == "ascending":
        x = np.arange(n)
    elif order == "descending":
        x = np.arange(n)[::-1].copy()
    elif order == "sawtooth":
        x = np.arange(n) % 977
    elif order == "ties":
        x = rng.integers(0, 5, n)
    else:
        x = rng.permutation(n)
        ns, stride = _sample_positions(n, k)  # the sample of the exact kernel
        x[: ns * stride : stride] = n + np.arange(ns)
    x = np.stack([x, x[::-1]]).astype(dtype)
    for largest in (True, False):
        _, i = topk(x, k, largest=largest)
        for r in range(2):
            assert i[r].tolist() == brute_order(x[r], largest)[:k], (order, r, largest)


@pytest.mark.parametrize("order", ["random", "ties", "sample_trap"])
@pytest.mark.parametrize("k", [1, 64, 1024, 5000])
def test_topk_set_into_is_the_ranked_set(order, k):
    # The unordered variant (SparQ's kernel uses it when it needs the kept positions in
    # index order only) keeps exactly the brute-force top k, ties to the lower index, on
    # every code path: streaming buffer, sampled threshold and its fallback.
    n = 40000
    rng = np.random.default_rng(77 + k)
    if order == "random":
        x = rng.normal(size=n)
    elif order == "ties":
        x = rng.integers(0, 5, n).astype(np.float64)
    else:
        x = rng.permutation(n).astype(np.float64)
        ns, stride = _sample_positions(n, k)
        x[: ns * stride : stride] = n + np.arange(ns)
    x[rng.integers(0, n, 3)] = np.inf
    cap = topk_buffer_size(n, k)
    bv, bi = np.empty(cap), np.empty(cap, dtype=np.int64)
    got = np.empty(k, dtype=np.int64)
    topk_set_into(x, k, got, bv, bi)
    assert sorted(got.tolist()) == sorted(brute_order(x)[:k])
    ranked = np.empty(k, dtype=np.int64)
    topk_row_into(x, k, ranked, bv, bi)
    assert ranked.tolist() == brute_order(x)[:k]
    x[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        topk_set_into(x, k, got, bv, bi)


def test_values_are_input_elements_bitwise():
    x = np.array([0.0, -0.0, 1.5, -0.0, 0.0], dtype=np.float32)
    v, i = topk(x, 5)
    assert i.tolist() == [2, 0, 1, 3, 4]  # -0.0 == 0.0: a tie, lower index first
    assert np.signbit(v).tolist() == np.signbit(x[i]).tolist()


def test_float16_values_stay_float16():
    x = np.array([1.0, 65504.0, -65504.0, 0.5], dtype=np.float16)
    v, i = topk(x, 2)
    assert v.dtype == np.float16 and v.tolist() == [65504.0, 1.0] and i.tolist() == [1, 0]


# --------------------------------------------------------------------- special values


def test_integers_beyond_2_to_53_are_ranked_exactly():
    base = 2**62
    x = np.array([base + 1, base, base + 3, base + 2, base + 3], dtype=np.int64)
    # As float64 all five are equal; exact ranking must still separate them.
    assert len(set(x.astype(np.float64).tolist())) == 1
    assert topk(x, 5)[1].tolist() == [2, 4, 3, 0, 1]
    assert topk(x, 2, largest=False)[1].tolist() == [1, 0]


def test_integer_extremes():
    i64 = np.iinfo(np.int64)
    x = np.array([0, i64.min, i64.max, -1, i64.min, i64.max], dtype=np.int64)
    assert topk(x, 3)[1].tolist() == [2, 5, 0]
    assert topk(x, 3, largest=False)[1].tolist() == [1, 4, 3]
    u64 = np.iinfo(np.uint64)
    xu = np.array([u64.max, 0, u64.max - 1, 0, u64.max], dtype=np.uint64)
    assert topk(xu, 2)[1].tolist() == [0, 4]
    assert topk(xu, 3, largest=False)[1].tolist() == [1, 3, 2]
    v, _ = topk(xu, 1)
    assert v.dtype == np.uint64 and int(v[0]) == 2**64 - 1


def test_infinities():
    x = np.array([-np.inf, 1.0, np.inf, -np.inf, np.inf])
    assert topk(x, 5)[1].tolist() == [2, 4, 1, 0, 3]
    assert topk(x, 2, largest=False)[1].tolist() == [0, 3]
    allneg = np.full((2, 6), -np.inf)
    assert topk(allneg, 3)[1].tolist() == [[0, 1, 2], [0, 1, 2]]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_nan_is_rejected(dtype):
    x = np.zeros((3, 200), dtype=dtype)
    x[1, 150] = np.nan
    for k in (0, 1, 5, 200):
        with pytest.raises(ValueError, match=r"x: expected no NaN.*row 1"):
            topk(x, k)
    with pytest.raises(ValueError, match="NaN"):
        topk_twin(x, 3)
    with pytest.raises(ValueError, match="NaN"):
        topk(x, 2, largest=False)


# ------------------------------------------------------------------------ properties


@given(data=st.data())
def test_invariant_under_strictly_increasing_transform(data):
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = data.draw(st.integers(1, 400))
    k = data.draw(st.integers(0, n))
    x = rng.integers(-50, 50, size=(3, n))  # ties on purpose
    a = data.draw(st.integers(1, 1000))
    b = data.draw(st.integers(-(10**6), 10**6))
    y = a * x + b  # strictly increasing, exact in int64
    z = np.exp2(x.astype(np.float64) / 8)  # strictly increasing and exact here
    i = topk(x, k)[1]
    np.testing.assert_array_equal(topk(y, k)[1], i)
    np.testing.assert_array_equal(topk(z, k)[1], i)
    # and a strictly decreasing one swaps largest and smallest
    np.testing.assert_array_equal(topk(-y, k, largest=False)[1], i)


def test_sorted_false_returns_the_sorted_order():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 500))
    for k in (0, 3, 100):
        a = topk(x, k, sorted=False)
        b = topk(x, k, sorted=True)
        np.testing.assert_array_equal(a[1], b[1])


def test_k_zero_and_empty():
    x = np.ones((2, 5, 3))
    v, i = topk(x, 0, axis=1)
    assert v.shape == (2, 0, 3) and i.shape == (2, 0, 3) and i.dtype == np.int64
    v, i = topk(np.zeros((0, 4)), 2)
    assert v.shape == (0, 2)
    v, i = topk(np.zeros((3, 0)), 0)
    assert v.shape == (3, 0)
    v, i = topk([4, 1, 7], 3)  # array_like
    assert i.tolist() == [2, 0, 1]


def test_bit_identical_across_thread_counts():
    rng = np.random.default_rng(9)
    x = rng.integers(0, 20, size=(64, 3000)).astype(np.float32)
    before = get_num_threads()
    try:
        set_num_threads(1)
        one = topk(x, 100)
        set_num_threads(2)
        two = topk(x, 100)
    finally:
        set_num_threads(before)
    np.testing.assert_array_equal(one[1], two[1])
    np.testing.assert_array_equal(one[0], two[0])


# ------------------------------------------------------------------------ row function


@njit
def _call_row(x, k):
    out = np.empty(k, dtype=np.int64)
    topk_row(x, k, out)
    return out


def test_topk_row_contract_from_numba_and_python():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, 500).astype(np.float64)
    x[7] = -np.inf
    for k in (0, 1, 17, 500):
        assert _call_row(x, k).tolist() == brute_order(x)[:k]
        out = np.empty(k, dtype=np.int64)
        topk_row(x, k, out)
        assert out.tolist() == brute_order(x)[:k]
    x[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _call_row(x, 4)


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args,kw,exc,words",
    [
        ((np.zeros(5), 6), {}, ValueError, r"k: expected 0 <= k <= n = 5 .*got 6"),
        ((np.zeros(5), -1), {}, ValueError, r"k: expected 0 <= k <= n = 5"),
        ((np.zeros(5), 2.0), {}, TypeError, r"k: expected an int, got float"),
        ((np.zeros(5), True), {}, TypeError, r"k: expected an int, got bool"),
        ((np.zeros((2, 5)), 1), {"axis": 2}, ValueError, r"axis: expected -2 <= axis < 2"),
        ((np.zeros((2, 5)), 1), {"axis": 1.0}, TypeError, r"axis: expected an int"),
        ((np.zeros(5, dtype=bool), 1), {}, TypeError, r"x: expected a real numeric.*got bool"),
        ((np.zeros(5, dtype=complex), 1), {}, TypeError, r"x: expected a real numeric"),
        ((np.array(["a", "b"]), 1), {}, TypeError, r"x: expected a real numeric"),
        ((np.zeros(5, dtype=np.longdouble), 1), {}, TypeError, r"x: expected a real numeric"),
        ((np.float64(3.0), 1), {}, ValueError, r"x: expected at least 1 dimension"),
    ],
)
def test_bad_input(args, kw, exc, words):
    if args[0].dtype == np.longdouble and np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(exc, match=words):
        topk(*args, **kw)
    with pytest.raises(exc):
        topk_twin(*args, **kw)


def test_strided_and_big_endian_inputs():
    rng = np.random.default_rng(21)
    y = rng.integers(0, 9, size=(6, 60)).astype(np.float64)[:, ::3]  # non-contiguous
    np.testing.assert_array_equal(topk(y, 4)[1], [brute_order(r)[:4] for r in y])
    np.testing.assert_array_equal(topk(y.T, 2, axis=0)[1].T, [brute_order(r)[:2] for r in y])
    xb = np.array([3, 1, 3, 7], dtype=">i4")
    v, i = topk(xb, 3)
    assert i.tolist() == [3, 0, 2] and v.dtype == xb.dtype and v.tolist() == [7, 3, 3]
    fb = np.array([0.5, -1.0, 2.0], dtype=">f8")
    assert topk(fb, 2, largest=False)[1].tolist() == [1, 0]


def test_topk_row_twin_is_exact_for_int64_beyond_2_53():
    # 2^53 + 1 and 2^53 are the same float64: a float64 cast would call them a tie and
    # return the lower index first; the integers differ, so the larger must come first.
    from reference.selection import topk_row_twin

    x = np.array([2**53, 2**53 + 1, -5], dtype=np.int64)
    assert topk_row_twin(x, 2).tolist() == [1, 0]
    assert topk_row_twin(np.array([1.0, 3.0, 3.0, -0.0, 0.0]), 5).tolist() == [1, 2, 0, 3, 4]
