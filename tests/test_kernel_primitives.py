"""Small building blocks of the kernels, each against the plainest oracle: the bit-map sort
of kept positions against ``numpy.sort``, the ``llvm.maxnum`` reduction against Python's
``max``, the finite scan against ``numpy.isfinite`` at the scan-chunk boundary."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from reference._checks import _SCAN_CHUNK, _any_nonfinite
from reference._rows import max_of, maxnum
from reference.sparq import _sort_positions

# --- the bit-map sort of kept positions -------------------------------------------------------


def _check_sort(sel_in, n_sel, S, rng):
    """Sort ``sel_in[:n_sel]`` with a scratch map holding garbage, of the size the kernel
    gives it (the row's float64 scores viewed as bytes); entries past n_sel stay."""
    sel = sel_in.copy()
    mark = rng.integers(0, 256, size=8 * S, dtype=np.uint8)  # stale bytes of an earlier row
    _sort_positions(sel, n_sel, mark)
    np.testing.assert_array_equal(sel[:n_sel], np.sort(sel_in[:n_sel]))
    np.testing.assert_array_equal(sel[n_sel:], sel_in[n_sel:])


@pytest.mark.parametrize("S", [1, 2, 7, 63, 64, 65, 130, 1000])
def test_sort_positions_matches_numpy_sort(S):
    rng = np.random.default_rng(S)
    spare = 5  # capacity beyond n_sel, filled with values the sort must not touch
    tail = rng.integers(-9, 2 * S + 9, size=spare)
    cases = [np.empty(0, dtype=np.int64), np.array([0]), np.array([S - 1]), rng.permutation(S)]
    cases.append(np.array([S - 1, 0]) if S > 1 else np.array([0]))
    for n_sel in sorted({1, S // 3, S // 2, S - 1, S}):
        if n_sel < 1:
            continue
        for _ in range(4):
            cases.append(rng.choice(S, size=n_sel, replace=False))
        if n_sel >= 2:  # both ends kept, the rest random
            mid = rng.choice(np.arange(1, S - 1), size=n_sel - 2, replace=False)
            cases.append(rng.permutation(np.concatenate([[0, S - 1], mid])))
    for c in cases:
        c = np.asarray(c, dtype=np.int64)
        _check_sort(np.concatenate([c, tail]).astype(np.int64), len(c), S, rng)


# --- llvm.maxnum and its reduction ------------------------------------------------------------


@numba.njit
def _maxnum2(a, b):
    return maxnum(a, b)


def test_max_of_matches_python_max():
    rng = np.random.default_rng(7)
    for n in list(range(0, 40)) + [63, 64, 65, 255, 256, 1001]:
        for _ in range(3):
            x = rng.normal(size=n) * 10.0 ** rng.integers(-300, 300, size=n)
            if n:  # +-inf at random places (sometimes none)
                x[rng.random(n) < 0.1] = np.inf
                x[rng.random(n) < 0.1] = -np.inf
            for m in (-np.inf, float(rng.normal()), np.inf, -1e308):
                assert max_of(x, m) == max([m, *x.tolist()]), (n, m)
            if n:
                i = int(rng.integers(n))
                assert _maxnum2(x[i], x[n - 1 - i]) == max(x[i], x[n - 1 - i])


def test_max_of_empty_returns_the_initial_value():
    empty = np.empty(0)
    for m in (-np.inf, -2.5, 0.0, 3.0, np.inf):
        assert max_of(empty, m) == m


def test_max_of_signed_zeros_compare_equal_to_zero():
    for x in ([0.0, -0.0], [-0.0, 0.0], [-0.0, -0.0], [0.0], [-0.0] * 9, [-1.0, -0.0, 0.0, -3.0]):
        for m in (-np.inf, -0.0, 0.0, -5.0):
            got = max_of(np.array(x), m)
            assert got == 0.0, (x, m, got)
    assert _maxnum2(0.0, -0.0) == 0.0 and _maxnum2(-0.0, 0.0) == 0.0


# --- the finite scan at the chunk boundary ----------------------------------------------------


@pytest.mark.parametrize("n", [_SCAN_CHUNK - 1, _SCAN_CHUNK, _SCAN_CHUNK + 1, 2 * _SCAN_CHUNK + 1])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_any_nonfinite_at_the_scan_chunk_size(n, dtype):
    # one serial pass up to _SCAN_CHUNK elements, the chunked parallel scan beyond: the
    # non-finite value at either end of the array must be seen by both routes
    rng = np.random.default_rng(n)
    x = rng.normal(size=n).astype(dtype)
    assert _any_nonfinite(x) is False
    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, n - 1):
            y = x.copy()
            y[where] = bad
            assert _any_nonfinite(y) is True, (bad, where)
            assert not np.isfinite(y).all()


def test_prefetch_locality_by_cpu():
    # Zen 5 keeps the prefetches into the L1; every other CPU requests into the L2
    # (docs/performance-history.md has the measurements behind both).
    from reference._config import prefetch_locality

    assert prefetch_locality("znver5") == 3
    for name in ("znver4", "znver3", "skylake-avx512", "generic", ""):
        assert prefetch_locality(name) == 2


def test_gather_requests_by_cpu():
    # AMD Zen requests each kept row four times, every other CPU once (docs/performance-history.md
    # has the measurements behind both); the kernels take the host's value. (That the
    # setting never changes a result: tests/test_kernel_inputs.py, both settings.)
    from reference import _rows
    from reference._config import _host_cpu_name, gather_requests

    for name in ("znver4", "znver5", "znver3"):
        assert gather_requests(name) == 4
    for name in ("emeraldrapids", "sapphirerapids", "skylake-avx512", "generic", ""):
        assert gather_requests(name) == 1
    assert _rows.GATHER_REQUESTS == gather_requests(_host_cpu_name())


@pytest.mark.skipif(
    __import__("platform").machine() not in ("x86_64", "AMD64"), reason="x86 instruction names"
)
def test_row_prefetch_compiles_to_the_configured_instruction():
    from reference._config import PREFETCH_LOCALITY
    from reference._rows import prefetch_row

    fresh = numba.njit(prefetch_row.py_func)  # the cached dispatcher cannot show its code
    fresh(np.zeros((4, 128), dtype=np.float32), 1)
    asm = "".join(fresh.inspect_asm().values())
    want = {3: "prefetcht0", 2: "prefetcht1", 1: "prefetcht2", 0: "prefetchnta"}[PREFETCH_LOCALITY]
    others = {"prefetcht0", "prefetcht1", "prefetcht2", "prefetchnta"} - {want}
    assert want in asm
    assert not any(o in asm for o in others)


# --- the V pass: one FMA per (row, head, element), in position order ------------------------


def _fma_chain(w, X):
    """``y[h, c]``: starting from 0, ``y = fl(y + w[h, t] * X[t, c])`` for t in order, each
    step rounded once (an FMA), computed exactly with fractions and rounded by ``float``."""
    from fractions import Fraction

    G, n = w.shape
    y = np.zeros((G, X.shape[1]))
    for h in range(G):
        for c in range(X.shape[1]):
            acc = 0.0
            for t in range(n):
                acc = float(Fraction(acc) + Fraction(float(w[h, t])) * Fraction(float(X[t, c])))
            y[h, c] = acc
    return y


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("G", [1, 3, 4, 5, 8])
def test_v_pass_is_one_fma_per_row_in_position_order(dtype, G):
    # The documented accumulation order of ``softmax weights @ V`` for every head, in a block
    # of four or left over, and every cache dtype: y[h, c] = fma(w[h, t], v[t, c], y[h, c])
    # for the positions in the order given. n = 11 covers the blocks of four rows and the
    # rows left over; d = 19 a vector loop and its scalar tail.
    from reference._rows import _v_pass

    rng = np.random.default_rng(41 + G)
    n, d, S = 11, 19, 23
    V = rng.standard_normal((S, d))
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        Vc = V.astype(ml_dtypes.bfloat16)
        X, Vk = Vc.astype(np.float64), Vc.view(np.int16)
    else:
        Vc = V.astype(dtype)
        X = Vc.astype(np.float64)
        Vk = Vc.view(np.uint16) if dtype == "float16" else Vc
    positions = np.sort(rng.choice(S, size=n, replace=False)).astype(np.int64)
    w = rng.random((G, n))
    y = np.full((G, d), np.nan)  # the pass zeroes it first
    _v_pass(Vk, positions, n, w, y, 16, 1)
    want = _fma_chain(w, X[positions])
    np.testing.assert_array_equal(y.view(np.uint64), want.view(np.uint64))


# --- scratch on cache lines -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.bool_])
@pytest.mark.parametrize("per_thread", [1, 5, 8, 13, 4096])
def test_workspace_rows_start_on_cache_lines(dtype, per_thread):
    from reference._workspace import LINE_BYTES, release, workspace

    release()
    try:
        for rows in (1, 3):
            w = workspace(f"test_{rows}", per_thread, dtype, rows=rows)
            assert w.flags.c_contiguous and w.dtype == np.dtype(dtype)
            assert w.shape[0] == rows and w.shape[1] >= per_thread
            if rows == 1:
                assert w.shape[1] == per_thread  # shared scratch: reshaped by its callers
            for r in range(rows):
                assert w[r].ctypes.data % LINE_BYTES == 0, (rows, r)
    finally:
        release()
