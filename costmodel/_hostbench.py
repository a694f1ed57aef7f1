"""Microbenchmarks behind :func:`costmodel.hardware.measure_host` (all Numba threads).

Each function times a small kernel that is *not* one of the kernels the host model predicts
(``reference.dense`` / ``reference.sparq``), on every Numba thread at once
(``numba.get_num_threads()``), and returns ``(rate, description)``; the description goes
into the profile's ``[sources]``. Kernels are compiled through ``reference._config`` so
that they use the project's Numba flags (fast-math limited to reassociation and
contraction); the first call compiles them (cached on disk afterwards) and is not timed.

Every rate is the best (shortest) of several repetitions: at least ``min_reps``, then more
while the time budget lasts (at most ``max_reps``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numba
import numpy as np
from numba import prange

from costmodel._tomlio import check_real
from reference import check_int
from reference._config import njit_parallel, njit_serial
from reference._vexp import exp_into

__all__ = [
    "best_time",
    "measure_stream",
    "measure_fma",
    "measure_exp",
    "measure_topk",
    "measure_gather",
]

#: float64 elements of each vector of the FMA microkernel (2 KiB: four query-like vectors and
#: DOT_ROWS data vectors, 16 KiB per thread, stay in L1)
DOT_WIDTH = 256
#: data vectors per thread, taken in turn (so no dot product repeats the previous one)
DOT_ROWS = 4
#: dot-product rounds per thread and repetition (4 * 256 * 50000 = 51.2M FMAs)
DOT_REPS = 50_000
#: float64 elements per exp block (x, out and scratch: 64 KiB per thread, L2-resident)
EXP_BLOCK = 2048
#: exp blocks per thread and repetition
EXP_REPS = 1000
#: top-k row length and k (k = n / 8)
TOPK_N = 32768
TOPK_K = TOPK_N // 8
#: rows per thread of one top-k call
TOPK_ROWS_PER_THREAD = 4
#: float32 elements per gathered row (512 bytes)
GATHER_ROW = 128
#: rows gathered per thread and repetition (32 MiB per thread)
GATHER_ROWS_PER_THREAD = 1 << 16


def best_time(
    fn: Callable[[], object], *, budget_s: float, min_reps: int = 5, max_reps: int = 50
) -> tuple[float, int]:
    """``(shortest time of fn(), repetitions)`` after one untimed warm-up call.

    ``budget_s`` is a finite number of seconds in ``[0, 60]``; ``1 <= min_reps <= max_reps
    <= 10000`` (ints), so every call ends."""
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    budget_s = check_real("budget_s", budget_s, strict_min=False, maximum=60.0)
    min_reps = check_int("min_reps", min_reps, lo=1, hi=10_000)
    max_reps = check_int("max_reps", max_reps, lo=min_reps, hi=10_000, hi_name="")
    fn()
    best = float("inf")
    reps = 0
    t_end = time.perf_counter() + budget_s
    while reps < min_reps or (time.perf_counter() < t_end and reps < max_reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        reps += 1
    return best, reps


# ---------------------------------------------------------------------------- kernels
# Loops run over range(n) of slices: a loop index Numba cannot prove non-negative makes it
# emit wrap-around code that turns a vectorised sum into gathers.


@njit_serial
def _sum(b):
    # A sink in the element type itself (float32; 16-bit patterns as uint16, wrapping): no
    # conversion in the loop, so the read, not the arithmetic, sets the pace.
    if b.shape[0] == 0:
        return 0.0
    s = b[0] - b[0]
    for i in range(b.shape[0]):
        s += b[i]
    return float(s)


@njit_parallel
def _stream_kernel(a, out):
    nt = out.shape[0]
    n = a.shape[0]
    chunk = (n + nt - 1) // nt
    for t in prange(nt):
        lo = min(n, t * chunk)
        hi = min(n, lo + chunk)
        out[t] = _sum(a[lo:hi])


def stream_read(*arrays: np.ndarray) -> float:
    """Read every byte of each array once with all Numba threads (float32 data summed as
    float32, anything 2 bytes wide as uint16); returns a value so nothing is optimised away."""
    nt = numba.get_num_threads()
    out = np.zeros(nt, dtype=np.float32)
    total = 0.0
    for x in arrays:
        flat = x.reshape(-1)
        _stream_kernel(flat.view(np.uint16) if x.dtype.itemsize == 2 else flat, out)
        total += float(out.sum())
    return total


@njit_serial
def _dot4_rounds(Q, X, reps):
    # Register-blocked float64 dot products: each round takes the next of the data vectors
    # X (DOT_ROWS, n) and dots it with the four vectors Q (4, n); each X element is loaded
    # once for four FMAs, each Q element once per FMA (five L1 loads per four FMAs; four
    # accumulators, vectorised across n with reassociation). The
    # sum over rounds keeps every round live (no round repeats its predecessor's operands).
    n = X.shape[1]
    nx = X.shape[0]
    q0, q1, q2, q3 = Q[0], Q[1], Q[2], Q[3]
    s = 0.0
    for it in range(reps):
        x = X[it % nx]
        a0 = a1 = a2 = a3 = 0.0
        for c in range(n):
            xc = x[c]
            a0 += q0[c] * xc
            a1 += q1[c] * xc
            a2 += q2[c] * xc
            a3 += q3[c] * xc
        s += a0 + a1 + a2 + a3
    return s


@njit_parallel
def _dot4_kernel(Q3, X3, reps, out):
    for t in prange(Q3.shape[0]):
        out[t] = _dot4_rounds(Q3[t], X3[t], reps)


@njit_parallel
def _exp_kernel(x2, out2, scratch2, reps, res):
    for t in prange(x2.shape[0]):
        s = 0.0
        for _ in range(reps):
            exp_into(x2[t], out2[t], scratch2[t])
            s += out2[t, 0]
        res[t] = s


@njit_serial
def _gather_rows(a2, idx):
    s = 0.0  # float64 over rows; each row summed by _sum
    for i in range(idx.shape[0]):
        s += _sum(a2[idx[i]])
    return s


@njit_parallel
def _gather_kernel(a2, idx2, out):
    for t in prange(idx2.shape[0]):
        out[t] = _gather_rows(a2, idx2[t])


# ------------------------------------------------------------------------ measurements
def measure_stream(a: np.ndarray, budget_s: float) -> tuple[float, str]:
    """Read bandwidth (bytes/s): a prange sum of float32 ``a``, one contiguous chunk per
    thread, best of at least 5 runs."""
    nt = numba.get_num_threads()
    out = np.zeros(nt, dtype=np.float32)
    t, reps = best_time(lambda: _stream_kernel(a, out), budget_s=budget_s)
    desc = (
        f"measured: Numba prange sum of {a.nbytes / 2**20:.0f} MiB float32 (one chunk per "
        f"thread) on {nt} threads, best of {reps}"
    )
    return a.nbytes / t, desc


def dot4_inputs(rng: np.random.Generator, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Operands of the FMA microkernel: ``Q3`` (threads, 4, DOT_WIDTH) and ``X3`` (threads,
    DOT_ROWS, DOT_WIDTH), float64 in [0, 1) (no overflow, no subnormals)."""
    return rng.random((threads, 4, DOT_WIDTH)), rng.random((threads, DOT_ROWS, DOT_WIDTH))


def measure_fma(budget_s: float, rng: np.random.Generator | None = None) -> tuple[float, str]:
    """float64 FMA/s of dot products blocked by four, all threads: per thread, four
    256-element vectors dotted with one of ``DOT_ROWS`` others in turn (the other vector's
    element is loaded once for four FMAs: five L1 loads per four FMAs; 16 KiB per thread,
    L1-resident), ``DOT_REPS`` rounds."""
    nt = numba.get_num_threads()
    Q3, X3 = dot4_inputs(np.random.default_rng(0) if rng is None else rng, nt)
    out = np.zeros(nt, dtype=np.float64)
    t, reps = best_time(lambda: _dot4_kernel(Q3, X3, DOT_REPS, out), budget_s=budget_s)
    desc = (
        f"measured: float64 dot products, 4 L1-resident {DOT_WIDTH}-element vectors against "
        f"each of {DOT_ROWS} others in turn (blocked by 4: 5 L1 loads per 4 FMAs), "
        f"{nt} threads, best of {reps}"
    )
    return nt * 4 * DOT_WIDTH * DOT_REPS / t, desc


def measure_exp(budget_s: float, rng: np.random.Generator) -> tuple[float, str]:
    """exp/s: ``reference._vexp.exp_into`` on L2-resident float64 blocks, all threads."""
    nt = numba.get_num_threads()
    x2 = -30.0 * rng.random((nt, EXP_BLOCK))  # softmax-like arguments (score - max <= 0)
    out2 = np.empty_like(x2)
    scratch2 = np.empty((nt, 2 * EXP_BLOCK), dtype=np.float64)
    res = np.zeros(nt, dtype=np.float64)
    t, reps = best_time(lambda: _exp_kernel(x2, out2, scratch2, EXP_REPS, res), budget_s=budget_s)
    desc = (
        f"measured: reference._vexp.exp_into on {EXP_BLOCK}-element float64 blocks "
        f"(L2-resident), {nt} threads, best of {reps}"
    )
    return nt * EXP_BLOCK * EXP_REPS / t, desc


def measure_topk(budget_s: float, rng: np.random.Generator) -> tuple[float, str]:
    """Exact top-k throughput (input bytes/s): ``reference.topk`` of float64 rows of
    32768 with ``k = n / 8``, ``4 x threads`` rows per call (the rows are split over the
    threads)."""
    from reference.selection import topk

    nt = numba.get_num_threads()
    rows = TOPK_ROWS_PER_THREAD * nt
    x = rng.normal(size=(rows, TOPK_N))
    t, reps = best_time(lambda: topk(x, TOPK_K), budget_s=budget_s)
    desc = (
        f"measured: reference.topk of {rows} float64 rows of {TOPK_N}, k {TOPK_K}, input "
        f"bytes/s, {nt} threads, best of {reps}"
    )
    return x.nbytes / t, desc


def measure_gather(a: np.ndarray, budget_s: float, rng: np.random.Generator) -> tuple[float, str]:
    """Gather bandwidth (bytes/s): every thread sums random 512-byte rows (128 float32) of
    ``a`` viewed as rows."""
    nt = numba.get_num_threads()
    a2 = a[: a.size // GATHER_ROW * GATHER_ROW].reshape(-1, GATHER_ROW)
    idx2 = rng.integers(0, a2.shape[0], size=(nt, GATHER_ROWS_PER_THREAD), dtype=np.int64)
    out = np.zeros(nt, dtype=np.float32)
    t, reps = best_time(lambda: _gather_kernel(a2, idx2, out), budget_s=budget_s)
    row_bytes = GATHER_ROW * a.itemsize
    desc = (
        f"measured: random {row_bytes}-byte rows ({GATHER_ROW} float32) of a "
        f"{a2.nbytes / 2**20:.0f} MiB array, summed, {GATHER_ROWS_PER_THREAD} rows per "
        f"thread, {nt} threads, best of {reps}"
    )
    return idx2.size * row_bytes / t, desc
