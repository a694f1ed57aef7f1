"""The two-threshold split step of the exact top-k's scan (``split8``, ``_append_two``).

Oracles: NumPy's own comparisons (``np.flatnonzero`` of ``x > hi`` and of
``~(x < lo) & ~(x > hi)``) for the indices and counts; the scalar step for the vector step
(which must agree in every slot it counts, whatever the CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from reference import _topk_exact as tx


def _expected(x, lo, hi):
    up = np.flatnonzero(x > hi)
    mid = np.flatnonzero(~(x < lo) & ~(x > hi))  # NaN lands here, as the docs say
    return up, mid


def _make_steps(step):
    @njit
    def steps(x, lo, hi, bi, kc):
        """``step`` over x (length a multiple of 8) in order, as _append_two's inner loop."""
        nd = 0
        nc = 0
        for t in range(0, x.shape[0], 8):
            r = step(x, t, lo, hi, bi, nd, kc + nc)
            nd += r & 0xFFFF
            nc += r >> 16
        return nd, nc

    return steps


_steps = _make_steps(tx.split8)  # the vector step where the CPU and LLVM allow
_steps_scalar = _make_steps(tx.split8_scalar)


def _row(rng, dtype, n):
    """Small integers (0..12 for unsigned rows, else -6..6), so that values tie with the
    thresholds; for floats also halves between them, infinities and NaN."""
    lo = 0 if np.dtype(dtype).kind == "u" else -6
    x = rng.integers(lo, lo + 13, size=n).astype(dtype)
    if np.dtype(dtype).kind == "f":
        x[rng.random(n) < 0.05] = np.inf
        x[rng.random(n) < 0.05] = -np.inf
        x[rng.random(n) < 0.05] = np.nan
        x += (rng.random(n) < 0.5) * np.asarray(0.5, dtype)
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint64])
@pytest.mark.parametrize("split", [_steps, _steps_scalar], ids=["dispatch", "scalar"])
def test_split_steps_match_numpy(dtype, split):
    rng = np.random.default_rng(11)
    for n in (8, 64, 1024):
        x = _row(rng, dtype, n)
        for lo, hi in ((1, 3), (2, 2), (-7, 7), (7, 8)):
            lo_, hi_ = x.dtype.type(max(lo, 0) if x.dtype.kind == "u" else lo), x.dtype.type(hi)
            bi = np.full(2 * n + 16, -1, dtype=np.int64)
            nd, nc = split(x, lo_, hi_, bi, n + 8)
            up, mid = _expected(x, lo_, hi_)
            assert (nd, nc) == (len(up), len(mid))
            assert np.array_equal(bi[:nd], up)
            assert np.array_equal(bi[n + 8 : n + 8 + nc], mid)


@pytest.mark.skipif(not tx.COMPRESS_OK, reason="no vector compress on this CPU / LLVM")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_step_agrees_with_scalar_step(dtype):
    rng = np.random.default_rng(12)
    for _ in range(50):
        x = _row(rng, dtype, 256)
        lo, hi = sorted(rng.integers(-7, 8, size=2))
        lo, hi = x.dtype.type(lo), x.dtype.type(hi)
        b1 = np.full(600, -1, dtype=np.int64)
        b2 = np.full(600, -1, dtype=np.int64)
        r1 = _steps(x, lo, hi, b1, 300)
        r2 = _steps_scalar(x, lo, hi, b2, 300)
        assert r1 == r2
        nd, nc = r1
        assert np.array_equal(b1[:nd], b2[:nd])
        assert np.array_equal(b1[300 : 300 + nc], b2[300 : 300 + nc])


def test_vector_step_on_unaligned_views():
    # a row that starts 1 element past an allocation (not on 8 or 64 bytes)
    rng = np.random.default_rng(13)
    base = rng.standard_normal(1 + 512)
    x = base[1:]
    bi = np.zeros(1100, dtype=np.int64)
    nd, nc = _steps(x, -0.5, 0.5, bi, 540)
    up, mid = _expected(x, -0.5, 0.5)
    assert np.array_equal(bi[:nd], up) and np.array_equal(bi[540 : 540 + nc], mid)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_append_two_matches_numpy(dtype):
    # the scan as the top-k calls it: branch-free steps while both regions have room, then
    # the branching tail (n not a multiple of the step); values read back by index
    rng = np.random.default_rng(14)
    n, k = 32768 + 37, 4096
    x = rng.standard_normal(n) * 100
    x = x.astype(dtype)
    xs = np.sort(x)[::-1]
    lo, hi = xs[int(1.1 * k)], xs[int(0.9 * k)]
    size = tx._buffer_size(n, k)
    bv = np.zeros(size, dtype=x.dtype)
    bi = np.zeros(size, dtype=np.int64)
    nd, nc, fits = tx._append_two(x, k, bv, bi, lo, hi, True)
    up, mid = _expected(x, lo, hi)
    assert fits and (nd, nc) == (len(up), len(mid))
    assert np.array_equal(bi[:nd], up) and np.array_equal(bi[k : k + nc], mid)
    assert np.array_equal(bv[:nd], x[up]) and np.array_equal(bv[k : k + nc], x[mid])


def test_vector_step_is_chosen_by_llvm_version_and_target_features(monkeypatch):
    # the vector step needs LLVM >= 19 and AVX-512 on the CPU the kernels compile for:
    # with NUMBA_CPU_NAME set, only the features named with it count (not the host's)
    import numba

    class _Llvm:
        def __init__(self, version):
            self.llvm_version_info = version

        def get_host_cpu_features(self):
            raise AssertionError("the host's features must not be asked for here")

    monkeypatch.setattr(numba.config, "CPU_NAME", "generic")
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "")
    monkeypatch.setattr(tx, "_llvm", _Llvm((22, 1, 0)))
    assert tx._compress_ok() is False
    monkeypatch.setattr(numba.config, "CPU_NAME", "znver4")
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+avx2,+avx512f,+avx512bw")
    assert tx._compress_ok() is True
    monkeypatch.setattr(tx, "_llvm", _Llvm((18, 1, 8)))
    assert tx._compress_ok() is False


def test_float32_row_with_float64_thresholds_compares_in_float64():
    # a float64 threshold between two float32 values must not be rounded onto one of them
    x = np.array([1.0, np.nextafter(np.float32(1.0), np.float32(2.0))] * 4, dtype=np.float32)
    hi = float(x[0]) + 0.75 * (float(x[1]) - float(x[0]))  # not a float32: rounds to x[1]
    bi = np.zeros(32, dtype=np.int64)
    nd, nc = _steps(x, 0.0, hi, bi, 16)
    up, mid = _expected(x.astype(np.float64), 0.0, hi)
    assert (nd, nc) == (len(up), len(mid)) == (4, 4)
    assert np.array_equal(bi[:nd], up) and np.array_equal(bi[16 : 16 + nc], mid)


# --- the value selection of the sampled thresholds and of the band (part8, _value_at_rank,
# _take_band). Oracles: NumPy's comparisons and sort, and a brute-force rank order.


def _make_parts(step):
    @njit
    def parts(x, p, dg, dl):
        """``step`` over x (length a multiple of 8) in order, as _value_at_rank's loop."""
        ng = 0
        nl = 0
        for t in range(0, x.shape[0], 8):
            r = step(x, t, p, dg, ng, dl, nl)
            ng += r & 0xFFFF
            nl += r >> 16
        return ng, nl

    return parts


_parts = _make_parts(tx.part8)
_parts_scalar = _make_parts(tx.part8_scalar)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint64])
@pytest.mark.parametrize("part", [_parts, _parts_scalar], ids=["dispatch", "scalar"])
def test_partition_steps_match_numpy(dtype, part):
    rng = np.random.default_rng(15)
    for n in (8, 64, 1024):
        x = _row(rng, dtype, n)
        if x.dtype.kind == "f":
            x = x[~np.isnan(x)]  # (no NaN reaches the partition)
            x = x[: x.size - x.size % 8]
        for p in (0, 3, 6, 12):
            p = x.dtype.type(p)
            dg = np.full(x.size + 8, 99, dtype=x.dtype)
            dl = np.full(x.size + 8, 99, dtype=x.dtype)
            ng, nl = part(x, p, dg, dl)
            assert np.array_equal(dg[:ng], x[x > p]) and np.array_equal(dl[:nl], x[x < p])
            # the steps write 8 slots from each count, never past the elements they split
            assert np.all(dg[x.size :] == 99) and np.all(dl[x.size :] == 99)


def _value_rows(rng, dtype):
    """Rows of every length from 1 to 40 and some longer ones, with repeated values, signed
    zeros and infinities (floats), sorted and reversed runs."""
    rows = []
    for n in list(range(1, 41)) + [100, 1000, 4103]:
        x = rng.integers(-4, 5, n) if n % 3 else rng.integers(-(10**6), 10**6, n)
        x = x.astype(dtype) if np.dtype(dtype).kind != "u" else (x + 10**6).astype(dtype)
        if n % 5 == 0:
            x = np.sort(x)
        if n % 7 == 0:
            x = np.sort(x)[::-1].copy()
        if np.dtype(dtype).kind == "f":
            x[rng.random(n) < 0.1] = -0.0
            x[rng.random(n) < 0.05] = np.inf
            x[rng.random(n) < 0.05] = -np.inf
        rows.append(x)
    rows.append(np.full(777, 3, dtype=dtype))  # all equal
    return rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint64])
def test_value_at_rank_is_the_sorted_value(dtype):
    rng = np.random.default_rng(16)
    for x in _value_rows(rng, dtype):
        n = x.size
        want = np.sort(x)[::-1]  # (-0.0 and 0.0 compare equal: either may stand at a rank)
        w = np.empty((3, n + 8), dtype=x.dtype)
        ranks = range(n) if n <= 40 else sorted(set(rng.integers(0, n, 12)) | {0, n - 1})
        for rank in ranks:
            for limit in (-1, 0, 1):  # 0 and 1: the heapsort fallback at once or next round
                got = tx._value_at_rank(x, n, rank, w, limit)
                assert got == want[rank], (n, rank, limit)


def test_value_at_rank_leaves_its_source_unchanged():
    rng = np.random.default_rng(17)
    x = rng.standard_normal(5000)
    keep = x.copy()
    w = np.empty((3, 5008))
    for rank in (0, 2500, 4999):
        tx._value_at_rank(x, 5000, rank, w)
    assert np.array_equal(x, keep)


def _brute_best(values, indices, m):
    """The m best (value desc, index asc) of the pairs, as a set of indices."""
    order = sorted(range(len(values)), key=lambda t: (-float(values[t]), int(indices[t])))
    return {int(indices[t]) for t in order[:m]}


@pytest.mark.skipif(not tx.COMPRESS_OK, reason="no vector compress on this CPU / LLVM")
def test_value_at_rank_compiles_the_vector_partition():
    # where the CPU has it, the selection's partition is the vector compress (a fresh
    # compilation: cached code cannot be inspected)
    f = njit(tx._value_at_rank.py_func)
    for dtype, name in ((np.float64, "v8f64"), (np.float32, "v8f32")):
        x = np.arange(100, dtype=dtype)
        w = np.empty((3, 100), dtype=dtype)
        assert f(x, 100, 10, w, -1) == 89
        ir = "".join(f.inspect_llvm().values())
        assert f"llvm.experimental.vector.compress.{name}" in ir


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint64])
def test_take_band_edge_cases(dtype):
    # nothing to take (nd = k), the whole band taken (nc = k - nd), and a band cut inside a
    # run of ties; the elements above the band are never touched
    k = 6
    for nd, band, want in (
        (6, [5, 4, 3], []),
        (2, [3, 9, 1, 7], [3, 9, 1, 7]),
        (3, [4, 7, 4, 4, 2, 4], [7, 4, 4]),  # the first two 4s in index order
    ):
        nc = len(band)
        bv = np.full(k + nc + 1, 77, dtype=dtype)
        bi = np.full(k + nc + 1, -1, dtype=np.int64)
        bv[:nd] = 100
        bi[:nd] = np.arange(nd) + 1000
        bv[k : k + nc] = band
        bi[k : k + nc] = np.arange(nc) * 10  # index order
        w = np.empty((3, nc), dtype=dtype)
        tx._take_band(bv, bi, k, nd, nc, w)
        assert np.array_equal(bv[:nd], np.full(nd, 100, dtype=dtype))
        assert np.array_equal(bi[:nd], np.arange(nd) + 1000)
        got = sorted(zip(bi[nd:k].tolist(), bv[nd:k].tolist(), strict=True))
        best = sorted(range(nc), key=lambda t: (-band[t], t))[: k - nd]
        assert got == sorted((10 * t, band[t]) for t in best)
        assert sorted(v for _, v in got) == sorted(want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_take_band_keeps_the_rank_order_best(dtype):
    # A band whose values tie heavily at the cut (quantised, signed zeros): every value
    # above the cut and the lowest indices of those at it, as the rank order says.
    rng = np.random.default_rng(18)
    for _ in range(40):
        k = int(rng.integers(8, 400))
        nd = int(rng.integers(0, k))
        nc = int(rng.integers(k - nd, 2 * k + 1))
        size = k + nc + 1
        bv = np.full(size, 77, dtype=dtype)
        bi = np.full(size, -1, dtype=np.int64)
        band = rng.integers(-3, 4, nc).astype(dtype)
        if np.dtype(dtype).kind == "f":
            band[rng.random(nc) < 0.2] = -0.0
        bv[k : k + nc] = band
        bi[k : k + nc] = np.sort(rng.choice(10 * size, nc, replace=False))  # index order
        bi[:nd] = np.arange(nd) + 10 * size  # the elements above the band, untouched
        band_i = bi[k : k + nc].copy()
        w = np.empty((3, nc + 8), dtype=dtype)
        tx._take_band(bv, bi, k, nd, nc, w)
        need = k - nd
        assert set(bi[nd:k].tolist()) == _brute_best(band, band_i, need)
        assert np.array_equal(bi[:nd], np.arange(nd) + 10 * size)
        pos = {int(j): t for t, j in enumerate(band_i)}
        assert all(bv[nd + t] == band[pos[int(bi[nd + t])]] for t in range(need))
