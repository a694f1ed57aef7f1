"""Planned calls of ``sparq_attention`` (``check_finite=False``, no mask, no steps) and of
``dense_attention`` (no mask): a call that repeats the shapes, dtypes, layouts and options
of an earlier successful one skips the Python validation and set-up.

Oracles: the float64 NumPy twin (inputs widened by NumPy); the same call made with no plan
(the plans released first), for bit-identity and for the errors, which must be the same
with and without a plan.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest

import reference.sparq as rs
from reference import sparq_attention
from reference._workspace import MAX_PLANS, plans, release
from reference.sparq import sparq_attention_twin, transpose_keys
from tests._cases import random_case

ml_dtypes = pytest.importorskip("ml_dtypes")

DTYPES = [np.float64, np.float32, np.float16, ml_dtypes.bfloat16]
DTYPE_IDS = ["float64", "float32", "float16", "bfloat16"]
KW = dict(r=4, k=24, local_window=4, check_finite=False)


def _case(seed=31, dtype=np.float32, S=200, B=2, H=8, Hkv=2, d=16):
    q, K, V, _ = random_case(seed, B=B, H=H, Hkv=Hkv, S=S, d=d, pad=False)
    return tuple(x.astype(dtype) for x in (q, K, V))


def _unplanned(fn):
    """``fn()`` with no plan to take (the full path), and the plans released after."""
    release()
    try:
        return fn()
    finally:
        release()


@pytest.fixture
def no_full_path(monkeypatch):
    """Make the full path's kernel run fail: a call that returns took its plan."""

    def fail(*args, **kwargs):
        raise AssertionError("the full path ran")

    def arm():
        monkeypatch.setattr(rs, "_run_kernel", fail)

    return arm


@pytest.mark.parametrize("vmean", [False, True], ids=["v_mean-recomputed", "v_mean-given"])
@pytest.mark.parametrize("twice", [False, True], ids=["K-once", "K-twice"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_a_planned_call_is_taken_and_bit_identical(dtype, twice, vmean, no_full_path):
    release()
    q, K, V = _case(dtype=dtype)
    kw = dict(KW)
    if twice:
        kw["k_cache_t"] = transpose_keys(K)
    if vmean:
        kw["v_mean"] = V.astype(np.float64).mean(axis=2)
    q2 = q[:, ::-1].copy()  # new values in the same shapes: the plan reads them
    want = _unplanned(lambda: sparq_attention(q2, K, V, **kw))  # q2 on the full path
    first = sparq_attention(q, K, V, **kw)  # full path, then planned
    assert len(plans()) == 1
    steps = sparq_attention(q, K, V, return_steps=True, **kw)  # never planned
    no_full_path()
    second = sparq_attention(q2, K, V, **kw)
    again = sparq_attention(q, K, V, **kw)
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(steps.out, first)
    np.testing.assert_array_equal(second, want)
    w64 = [np.asarray(x).astype(np.float64) for x in (q2, K, V)]
    twin_kw = {key: v for key, v in kw.items() if key not in ("k_cache_t", "check_finite")}
    twin = sparq_attention_twin(*w64, **twin_kw).out
    np.testing.assert_allclose(second, twin, rtol=1e-11, atol=1e-12)


def _message(fn):
    with pytest.raises((ValueError, TypeError)) as e:
        fn()
    return type(e.value), str(e.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
def test_a_planned_call_raises_what_the_full_path_raises(dtype):
    q, K, V = _case(seed=32, dtype=dtype)
    kt = transpose_keys(K)
    vm = V.astype(np.float64).mean(axis=2)
    kw = dict(KW, k_cache_t=kt, v_mean=vm)
    bad_q_nan, bad_q_inf = q.copy(), q.copy()
    bad_q_nan[1, 5, 3] = np.nan
    bad_q_inf[0, 2, 0] = np.inf
    bad_vm = vm.copy()
    bad_vm[1, 0, 7] = np.nan
    bad_vm_inf = vm.copy()
    bad_vm_inf[0, 1, 2] = -np.inf
    stale = kt.copy()
    stale[1, 0, :, -1] += 1  # the newest token not copied
    bad_k = K.copy()
    bad_k[0, 1, -1, 2] = np.nan  # read by every call (the local window)
    big_q = q.astype(np.float64) * 1e10
    huge_k = K.astype(np.float64)
    huge_k[0, 1, 20, :] = 1e300

    def call(qq=q, KK=K, **over):
        return lambda: sparq_attention(qq, KK, V, **dict(kw, **over))

    cases = {
        "q NaN": call(bad_q_nan),
        "q inf": call(bad_q_inf),
        "v_mean NaN": call(v_mean=bad_vm),
        "v_mean -inf": call(v_mean=bad_vm_inf),
        "k_cache_t stale": call(k_cache_t=stale),
        "k_cache NaN": call(KK=bad_k, k_cache_t=transpose_keys(bad_k)),
        "reallocate 1": call(reallocate=1),
        "r float": call(r=4.0),
        "k_cache_t F-order": call(k_cache_t=np.asfortranarray(kt)),
        "v_mean shape": call(v_mean=vm[:, :1]),
        "k_cache_t dtype": call(k_cache_t=kt.astype(np.float64)),
    }
    with np.errstate(all="ignore"):
        for name, fn in cases.items():
            want = _unplanned(lambda fn=fn: _message(fn))
            sparq_attention(q, K, V, **kw)  # plans this shape
            assert len(plans()) == 1, name
            assert _message(fn) == want, name
        # the logit overflow, in float64 caches (the 1e300 needs them): a finite q plans
        kw64 = dict(KW, k_cache_t=transpose_keys(huge_k))
        V64 = V.astype(np.float64)
        overflow = lambda: _message(lambda: sparq_attention(big_q, huge_k, V64, **kw64))  # noqa: E731
        want = _unplanned(overflow)
        assert want[1].startswith("q, k_cache: the attention logits overflow")
        sparq_attention(q.astype(np.float64), huge_k, V64, **kw64)
        assert len(plans()) == 1
        assert overflow() == want


def test_a_planned_shape_with_new_layouts_and_dtypes_takes_the_full_path():
    q, K, V = _case(seed=33)
    kt = transpose_keys(K)
    vm = V.astype(np.float64).mean(axis=2)
    kw = dict(KW, k_cache_t=kt, v_mean=vm)
    release()
    want = sparq_attention(q, K, V, **kw)
    variants = {
        "K and V Fortran-ordered": (q, np.asfortranarray(K), np.asfortranarray(V), kw),
        "K and V big-endian": (q, K.astype(">f4"), V.astype(">f4"), dict(kw, k_cache_t=None)),
        "v_mean float32": (q, K, V, dict(kw, v_mean=vm.astype(np.float32))),
        "v_mean Fortran-ordered": (q, K, V, dict(kw, v_mean=np.asfortranarray(vm))),
        "q float64, Fortran-ordered": (np.asfortranarray(q.astype(np.float64)), K, V, kw),
        "q as a list": (q.tolist(), K, V, kw),
        "reallocate numpy bool": (q, K, V, dict(kw, reallocate=np.bool_(True))),
    }
    for name, (qq, KK, VV, kk) in variants.items():
        if name == "v_mean float32":  # another v_mean: its own run is the reference
            ref = _unplanned(lambda a=(qq, KK, VV), kk=kk: sparq_attention(*a, **kk))
        elif name == "K and V big-endian":  # without k_cache_t (refused big-endian)
            ref = sparq_attention(q, K, V, **kk)
        else:
            ref = want
        for _ in range(2):  # the second call finds the plan the first made, if any
            np.testing.assert_array_equal(sparq_attention(qq, KK, VV, **kk), ref, err_msg=name)


def test_plans_are_bounded_and_dropped_with_the_scratch_they_view():
    release()
    sparq_attention(*_case(seed=34, S=400), **KW)  # scratch for every S below
    for S in range(100, 100 + MAX_PLANS + 3):
        q, K, V = _case(seed=34, S=S)
        sparq_attention(q, K, V, **KW)
        assert len(plans()) <= MAX_PLANS
    assert len(plans()) == MAX_PLANS
    q, K, V = _case(seed=34, S=5000)  # larger scratch: the old arrays and their plans go
    sparq_attention(q, K, V, **KW)
    assert len(plans()) == 1
    q, K, V = _case(seed=34, S=120)  # fits the new scratch: planned beside it
    first = sparq_attention(q, K, V, **KW)
    assert len(plans()) == 2
    np.testing.assert_array_equal(sparq_attention(q, K, V, **KW), first)


def test_a_plan_serves_every_thread_count(no_full_path):
    from reference import get_num_threads, set_num_threads

    q, K, V = _case(seed=35, B=3, H=8, Hkv=4)
    kw = dict(KW, k_cache_t=transpose_keys(K))
    before = get_num_threads()
    release()
    outs = []
    try:
        set_num_threads(1)
        outs.append(sparq_attention(q, K, V, **kw))  # planned at one thread
        no_full_path()
        for n in range(1, numba.config.NUMBA_NUM_THREADS + 1):
            set_num_threads(n)
            outs.append(sparq_attention(q, K, V, **kw))
    finally:
        set_num_threads(before)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_plans_belong_to_their_python_thread():
    sparq_attention(*_case(seed=36), **KW)
    if numba.threading_layer() == "workqueue":  # not safe for calls from several threads
        pytest.skip("Numba's workqueue threading layer")
    cases = [_case(seed=36 + i, dtype=dt) for i, dt in enumerate((np.float32, np.float16))]
    want = [_unplanned(lambda c=c: sparq_attention(*c, **KW)) for c in cases]
    got = [[], []]

    def work(i):
        for _ in range(6):
            got[i].append(sparq_attention(*cases[i], **KW))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert len(got[i]) == 6
        for o in got[i]:
            np.testing.assert_array_equal(o, want[i])


# --- dense_attention -------------------------------------------------------------------------


@pytest.mark.parametrize("check_finite", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_a_planned_dense_call_is_taken_and_bit_identical(dtype, check_finite, monkeypatch):
    import reference.dense as rd
    from reference import dense_attention, dense_attention_twin

    q, K, V = _case(seed=41, dtype=dtype, S=5000)  # two parts of 4096
    q2 = q[:, ::-1].copy()
    want = _unplanned(lambda: dense_attention(q2, K, V, check_finite=check_finite))
    first = dense_attention(q, K, V, check_finite=check_finite)
    assert len(plans()) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the full path ran")

    monkeypatch.setattr(rd, "KernelInputs", fail)
    np.testing.assert_array_equal(dense_attention(q2, K, V, check_finite=check_finite), want)
    np.testing.assert_array_equal(dense_attention(q, K, V, check_finite=check_finite), first)
    twin = dense_attention_twin(*[np.asarray(x).astype(np.float64) for x in (q2, K, V)])
    np.testing.assert_allclose(want, twin, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=["float64", "float16"])
def test_a_planned_dense_call_raises_what_the_full_path_raises(dtype):
    from reference import dense_attention

    q, K, V = _case(seed=42, dtype=dtype, S=300)
    bad_q = q.copy()
    bad_q[1, 3, 2] = np.nan
    inf_q = q.copy()
    inf_q[0, 0, 0] = -np.inf
    bad_k = K.copy()
    bad_k[1, 0, 17, 5] = np.inf
    bad_v = V.copy()
    bad_v[0, 1, 250, 0] = np.nan
    cases = {
        "q NaN": lambda: dense_attention(bad_q, K, V, check_finite=False),
        "q -inf": lambda: dense_attention(inf_q, K, V, check_finite=False),
        "k_cache inf": lambda: dense_attention(q, bad_k, V, check_finite=False),
        "v_cache NaN": lambda: dense_attention(q, K, bad_v, check_finite=False),
        "check_finite 0": lambda: dense_attention(q, K, V, check_finite=0),
        "v_cache other shape": lambda: dense_attention(q, K, V[:, :1], check_finite=False),
    }
    if dtype == np.float64:  # the overflow needs float64 caches
        big_q = q * 1e10
        huge_k = K.copy()
        huge_k[0, 1, 20, :] = 1e300
        cases["logit overflow"] = lambda: dense_attention(big_q, huge_k, V, check_finite=False)
    with np.errstate(all="ignore"):
        for name, fn in cases.items():
            want = _unplanned(lambda fn=fn: _message(fn))
            dense_attention(q, K, V, check_finite=False)  # plans this shape
            assert len(plans()) == 1, name
            assert _message(fn) == want, name


class _Unhashable:
    """An option whose hash raises something other than TypeError."""

    def __hash__(self):
        raise RuntimeError("no hash")


def test_odd_option_objects_get_the_full_paths_errors():
    from reference import dense_attention

    q, K, V = _case(seed=43)
    sparq_attention(q, K, V, **KW)  # plans this shape
    dense_attention(q, K, V, check_finite=False)
    two = np.array(["float64"] * 2)
    odd = _Unhashable()  # (one object: its repr, in the messages, has its address)
    calls = {
        "precision 0-d": lambda: sparq_attention(q, K, V, precision=np.array("float64"), **KW),
        "precision 1-d": lambda: sparq_attention(q, K, V, precision=two, **KW),
        "impl 0-d array": lambda: sparq_attention(q, K, V, impl=np.array("numba"), **KW),
        "r unhashable": lambda: sparq_attention(q, K, V, **dict(KW, r=odd)),
        "check_finite unhashable": lambda: dense_attention(q, K, V, check_finite=odd),
    }  # fmt: skip
    for name, fn in calls.items():
        want = _unplanned(lambda fn=fn: _message(fn))
        sparq_attention(q, K, V, **KW)
        dense_attention(q, K, V, check_finite=False)
        assert len(plans()) == 2, name
        assert _message(fn) == want, name
    assert "precision: expected one of" in _message(calls["precision 1-d"])[1]


def test_scratch_rows_follow_numbas_pool_not_a_lowered_config(monkeypatch):
    # the pool is sized when Numba is imported; lowering the config value afterwards must
    # not shrink the scratch below the workers that still run (they would write past it)
    from numba.np.ufunc import parallel

    from reference._workspace import max_threads

    q, K, V = _case(seed=44, B=4, H=16, Hkv=8, S=600)
    want = _unplanned(lambda: sparq_attention(q, K, V, **KW))
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 1)
    assert max_threads() == parallel.NUM_THREADS
    got = _unplanned(lambda: [sparq_attention(q, K, V, **KW) for _ in range(2)])
    for g in got:
        np.testing.assert_array_equal(g, want)
