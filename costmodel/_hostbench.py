"""Microbenchmarks behind :func:`costmodel.hardware.measure_host` (all Numba threads; the
one-thread read and gathers through :func:`on_one_thread`).

Each rate function times a small kernel that is *not* one of the kernels the host model
predicts (``reference.dense`` / ``reference.sparq``; the exp and top-k microkernels call the
same ``exp_nonpos_into``, ``exp_nonpos_sum`` and ``topk_set_into`` routines those kernels call, on
their own data: :func:`measure_exp` the exps the kernels store, :func:`measure_exp_sum` the
ones SparQ's softmax sums add up without storing them), on every Numba thread at once
(``numba.get_num_threads()``: the thread count the kernels run with; :func:`on_one_thread`
runs one on a single thread), and returns
``(rate, description)``; the description goes into the profile's ``[sources]``. The one
exception is :func:`measure_calls`, which times the public entry points themselves at a
tiny shape, for their fixed cost per call only. Kernels are
compiled through ``reference._config`` so that they use the project's Numba flags
(fast-math limited to reassociation and contraction); the first call compiles them (cached
on disk afterwards) and is not timed.

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
from reference._checks import Q_ALIGN, aligned_copy
from reference._config import FASTMATH_CHAIN, njit_parallel, njit_serial
from reference._rows import (
    GATHER_AHEAD,
    GATHER_REQUESTS,
    STREAM_AHEAD,
    _k_pass,
    _v_pass,
    max_of,
    prefetch_ahead,
    prefetch_row,
    widen,
)
from reference._vexp import exp_nonpos_into, exp_nonpos_sum
from reference.selection import topk_set_into
from reference.sparq import (
    _ACC_PAD,
    _GATHER_AHEAD,
    _STEP3_BLOCK,
    _finish_block4,
    _finite_probe,
    _sort_positions,
    _sweep_h4c4,
)

__all__ = [
    "best_time",
    "measure_stream",
    "measure_fma",
    "measure_exp",
    "measure_exp_sum",
    "measure_topk",
    "measure_gather",
    "measure_widen",
    "measure_div",
    "measure_overlap",
    "measure_widen_overlap",
    "measure_gather_overlap",
    "measure_calls",
    "measure_column_copy",
    "on_one_thread",
]

#: float64 elements of each vector of the FMA microkernel (2 KiB: four query-like vectors and
#: DOT_ROWS data vectors, 16 KiB per thread, stay in L1)
DOT_WIDTH = 256
#: data vectors per thread, taken in turn (so no dot product repeats the previous one)
DOT_ROWS = 4
#: rows of DOT_WIDTH float32 (1 KiB) that the overlap microkernel's streaming loop requests
#: ahead: the bytes ahead of the kernels' passes over every row (STREAM_AHEAD rows of 512)
FUSED_AHEAD = STREAM_AHEAD // 2
#: dot-product rounds per thread and repetition (4 * 256 * 50000 = 51.2M FMAs)
DOT_REPS = 50_000
#: float64 elements per exp block (x and out: 32 KiB per thread, in L1 or L2)
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
#: float32 elements per row of the second gather measurement (256 bytes: a float16 or
#: bfloat16 row at d = 128)
GATHER_ROW_SHORT = 64
#: rows gathered per thread and repetition (32 MiB per thread)
GATHER_ROWS_PER_THREAD = 1 << 16
#: the gathered rows come in groups of GATHER_KEPT distinct rows of a random window of
#: GATHER_WINDOW consecutive rows, each group in ascending order: the pattern of SparQ's kept
#: rows (k = S / 8 of a (batch, KV head)'s S = 32768 rows, listed in index order). On a Zen 4
#: host random rows in random order gathered 20-25% faster than such groups in one
#: comparison (25-30 against 20-23 GB/s, 512-byte rows) and as fast in a round-robin of the
#: two: the pattern is the kernels', whatever it costs
GATHER_WINDOW = 32768
GATHER_KEPT = GATHER_WINDOW // 8
#: elements of each of a thread's WIDEN_BLOCKS widen / division blocks (L1-resident: at most
#: 32 KiB in all)
WIDEN_BLOCK = 2048
#: blocks per thread, taken in turn (so no pass repeats the previous one's work)
WIDEN_BLOCKS = 2
#: passes over a block per thread and repetition (41M elements)
WIDEN_REPS = 20_000
#: the cache dtypes the reference reads, as the widen microkernel stores them (16-bit
#: patterns as uint16 / int16, the kernels' encodings)
WIDEN_DTYPES = ("float32", "float16", "bfloat16")


def _times(n: int) -> str:
    """``"once"``, ``"twice"`` or ``"n times"`` (the descriptions' request counts)."""
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _threads_text(n: int) -> str:
    """``"1 thread"`` or ``"n threads"`` (the descriptions' thread counts)."""
    return "1 thread" if n == 1 else f"{n} threads"


def on_one_thread(measure: Callable[..., tuple], *args, **kwargs) -> tuple:
    """``measure(*args, **kwargs)`` with Numba's thread count set to one for the call (the
    caller's count restored after, also on an error): a ``measure_*`` microbenchmark, which
    sizes its work by ``numba.get_num_threads()``, then measures what one thread reaches."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return measure(*args, **kwargs)
    finally:
        numba.set_num_threads(before)


def best_time(
    fn: Callable[[], object],
    *,
    budget_s: float,
    min_reps: int = 5,
    max_reps: int = 50,
    before: Callable[[], object] | None = None,
) -> tuple[float, int]:
    """``(shortest time of fn(), repetitions)`` after one untimed warm-up call.

    ``budget_s`` is a finite number of seconds in ``[0, 60]``; ``1 <= min_reps <= max_reps
    <= 10000`` (ints), so every call ends. ``before``, if given, runs untimed before every
    timed call (e.g. a read that evicts the caches)."""
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    if before is not None and not callable(before):
        raise TypeError(f"before: expected a callable or None, got {type(before).__name__}")
    budget_s = check_real("budget_s", budget_s, strict_min=False, maximum=60.0)
    min_reps = check_int("min_reps", min_reps, lo=1, hi=10_000)
    max_reps = check_int("max_reps", max_reps, lo=min_reps, hi=10_000, hi_name="")
    fn()
    best = float("inf")
    reps = 0
    t_end = time.perf_counter() + budget_s
    while reps < min_reps or (time.perf_counter() < t_end and reps < max_reps):
        if before is not None:
            before()
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
    # A sink in the element type itself (8-byte words as uint64, wrapping; see stream_view):
    # no conversion in the loop, so the read, not the arithmetic, sets the pace.
    if b.shape[0] == 0:
        return 0.0
    s = b[0] - b[0]
    for i in range(b.shape[0]):
        s += b[i]
    return float(s)


@njit_serial
def _chunk(n, nt, t):
    """Bounds ``(lo, hi)`` of thread ``t``'s contiguous share of ``n`` elements."""
    chunk = (n + nt - 1) // nt
    lo = min(n, t * chunk)
    return lo, min(n, lo + chunk)


@njit_parallel
def _stream_kernel(a, out):
    nt = out.shape[0]
    for t in prange(nt):
        lo, hi = _chunk(a.shape[0], nt, t)
        out[t] = _sum(a[lo:hi])


def stream_view(x: np.ndarray) -> np.ndarray:
    """The bytes of the contiguous array ``x`` as the 1-D array the streaming read sums:
    8-byte words (uint64) when the size and the address allow it, else the elements
    themselves (anything 2 bytes wide as uint16). Summing 16-bit patterns as such made the
    read compute-bound on the development host (Numba adds them in 64-bit lanes: 47 GB/s
    where the same bytes as uint64 or float32 read at 61 GB/s); uint64 words need no
    conversion and no floating point (no subnormal inputs), whatever the dtype."""
    flat = x.reshape(-1)
    if flat.nbytes % 8 == 0 and flat.ctypes.data % 8 == 0:
        return flat.view(np.uint64)
    return flat.view(np.uint16) if x.dtype.itemsize == 2 else flat


def stream_read(*arrays: np.ndarray) -> float:
    """Read every byte of each array once with all Numba threads (:func:`stream_view`);
    returns a value so nothing is optimised away."""
    nt = numba.get_num_threads()
    out = np.zeros(nt, dtype=np.float32)
    total = 0.0
    for x in arrays:
        _stream_kernel(stream_view(x), out)
        total += float(out.sum())
    return total


@njit_serial
def _dot4(q0, q1, q2, q3, x):
    # The four dot products of one round, summed: each element of x is widened (a no-op for
    # float64) and loaded once for four FMAs (four accumulators, vectorised across the
    # elements with reassociation).
    a0 = a1 = a2 = a3 = 0.0
    for c in range(x.shape[0]):
        xc = widen(x[c])
        a0 += q0[c] * xc
        a1 += q1[c] * xc
        a2 += q2[c] * xc
        a3 += q3[c] * xc
    return a0 + a1 + a2 + a3


@njit_serial
def _dot4_rounds(Q, X, reps):
    # Register-blocked float64 dot products: each round takes the next of the data vectors
    # X (DOT_ROWS, n) and dots it with the four vectors Q (4, n) (_dot4: five L1 loads per
    # four FMAs). The sum over rounds keeps every round live (no round repeats its
    # predecessor's operands).
    nx = X.shape[0]
    q0, q1, q2, q3 = Q[0], Q[1], Q[2], Q[3]
    s = 0.0
    for it in range(reps):
        s += _dot4(q0, q1, q2, q3, X[it % nx])
    return s


@njit_parallel
def _dot4_kernel(Q3, X3, reps, out):
    for t in prange(Q3.shape[0]):
        out[t] = _dot4_rounds(Q3[t], X3[t], reps)


@njit_parallel
def _exp_kernel(x2, out2, reps, res):
    for t in prange(x2.shape[0]):
        s = 0.0
        for _ in range(reps):
            exp_nonpos_into(x2[t], out2[t], 0.0)
            s += out2[t, 0]
        res[t] = s


@njit_parallel
def _exp_sum_kernel(x2, reps, res):
    # the sums accumulated into res, so no call is optimised away
    for t in prange(x2.shape[0]):
        s = 0.0
        for _ in range(reps):
            s += exp_nonpos_sum(x2[t], 0.0)
        res[t] = s


@njit_serial
def _gather_rows(a2, idx):
    # Each step first requests rows ahead as the kernels' passes over kept rows do
    # (reference._rows.prefetch_ahead: GATHER_AHEAD rows on and nearer, every line, at the
    # kernels' prefetch locality; each row GATHER_REQUESTS times).
    s = 0.0  # float64 over rows; each row summed by _sum
    n = idx.shape[0]
    for i in range(n):
        prefetch_ahead(a2, idx, i, 1, n, GATHER_AHEAD, GATHER_REQUESTS)
        s += _sum(a2[idx[i]])
    return s


@njit_parallel
def _gather_kernel(a2, idx2, out):
    for t in prange(idx2.shape[0]):
        out[t] = _gather_rows(a2, idx2[t])


@njit_serial
def _widen_rounds(X, reps):
    # Widen every element of an L1-resident block (the blocks of X in turn) to float64 and
    # add it up (vectorised with reassociation): the conversion a kernel pays per cache
    # element it reads, without the FMAs (priced by the dot-product microkernel) and without
    # the trip to memory.
    s = 0.0
    nb = X.shape[0]
    for it in range(reps):
        x = X[it % nb]
        a = 0.0
        for c in range(x.shape[0]):
            a += widen(x[c])
        s += a
    return s


@njit_parallel
def _widen_kernel(X, reps, out):
    for t in prange(X.shape[0]):
        out[t] = _widen_rounds(X[t], reps)


@njit_serial
def _div_rounds(x, y, th, reps):
    # y = x / t over an L1-resident block, a new t each pass (vectorised division, as when
    # logits are scaled by a temperature that must divide, not multiply by its reciprocal).
    s = 0.0
    n = x.shape[0]
    for it in range(reps):
        t = th + it
        for c in range(n):
            y[c] = x[c] / t
        s += y[it % n]
    return s


@njit_parallel
def _div_kernel(X, Y, reps, out):
    for t in prange(X.shape[0]):
        out[t] = _div_rounds(X[t], Y[t], 1.0 + 0.5 * t, reps)


@njit_serial
def _fused_rounds(a2, Q, X, stream):
    # Dot products of four L1-resident float64 vectors Q with DOT_WIDTH-element float32
    # segments, each element widened once for four FMAs: with ``stream`` the segments are
    # the consecutive rows of a2 (a streaming read feeding the FMAs, as a matrix-vector
    # product with four vectors reads its matrix), each loop step first requesting the row
    # FUSED_AHEAD rows on (every line of it, at the kernels' prefetch locality: the software
    # prefetch of the kernels' passes over every row, reference._rows.prefetch_row, the
    # same bytes ahead); without it one of the L1-resident float32 rows X in turn (the same
    # in-core work, no trip to memory).
    n = a2.shape[0]
    nx = X.shape[0]
    q0, q1, q2, q3 = Q[0], Q[1], Q[2], Q[3]
    s = 0.0
    for i in range(n):
        if stream:
            if i + FUSED_AHEAD < n:
                prefetch_row(a2, i + FUSED_AHEAD)
            x = a2[i]
        else:
            x = X[i % nx]
        s += _dot4(q0, q1, q2, q3, x)
    return s


@njit_parallel
def _fused_kernel(a2, Q3, X3, stream, out):
    nt = out.shape[0]
    for t in prange(nt):
        lo, hi = _chunk(a2.shape[0], nt, t)
        out[t] = _fused_rounds(a2[lo:hi], Q3[t], X3[t], stream)


#: blocks of GATHER_KEPT kept rows per thread of the gather-overlap microkernel (the kernel's
#: rows per thread at 8 KV heads on two threads)
GOVERLAP_BLOCKS = 4


@njit_serial
def _gather_passes_rounds(K, V, idx, Q, L, W, Y, Kc, Vc, pos_c, gather):
    # SparQ's step-7 passes as the kernel runs them over each block of kept rows: the K pass
    # (reference._rows._k_pass: the logits of the four heads Q, four rows a step) and the V
    # pass (_v_pass: the rows weighted by W summed into Y), every row requested ahead as
    # the kernel requests its kept rows (GATHER_AHEAD, GATHER_REQUESTS); the softmax between
    # them left out. With ``gather`` the blocks of idx (GATHER_KEPT positions each) of K and
    # V, rows gathered from memory; without it the positions pos_c of the cache-resident
    # rows Kc and Vc (the same in-core work, no trip to memory). Returns a checksum: the
    # sum over blocks of every logit and every output.
    n = pos_c.shape[0]
    s = 0.0
    for b in range(idx.shape[0] // n):
        if gather:
            ix = idx[b * n : (b + 1) * n]
            _k_pass(Q, K, ix, n, 1.0, L, GATHER_AHEAD, GATHER_REQUESTS)
            _v_pass(V, ix, n, W, Y, GATHER_AHEAD, GATHER_REQUESTS)
        else:
            _k_pass(Q, Kc, pos_c, n, 1.0, L, GATHER_AHEAD, GATHER_REQUESTS)
            _v_pass(Vc, pos_c, n, W, Y, GATHER_AHEAD, GATHER_REQUESTS)
        s += L.sum() + Y.sum()
    return s


@njit_parallel
def _gather_passes_kernel(K, V, idx2, Q3, L3, W3, Y3, Kc3, Vc3, pos_c, gather, out):
    for t in prange(idx2.shape[0]):
        out[t] = _gather_passes_rounds(
            K, V, idx2[t], Q3[t], L3[t], W3[t], Y3[t], Kc3[t], Vc3[t], pos_c, gather
        )


@njit_parallel
def _gather_kv_kernel(K, V, idx2, out):
    # the rows of both passes gathered alone (measure_gather's loop over K's rows, then V's)
    for t in prange(idx2.shape[0]):
        out[t] = _gather_rows(K, idx2[t]) + _gather_rows(V, idx2[t])


# ------------------------------------------------------------------------ measurements
def measure_stream(a: np.ndarray, budget_s: float) -> tuple[float, str]:
    """Read bandwidth (bytes/s): a prange sum of ``a``'s bytes (:func:`stream_view`), one
    contiguous chunk per thread, best of at least 5 runs."""
    nt = numba.get_num_threads()
    out = np.zeros(nt, dtype=np.float32)
    words = stream_view(a)
    t, reps = best_time(lambda: _stream_kernel(words, out), budget_s=budget_s)
    desc = (
        f"measured: Numba prange sum of {a.nbytes / 2**20:.0f} MiB as 8-byte words (one chunk "
        f"per thread) on {_threads_text(nt)}, best of {reps}"
    )
    return a.nbytes / t, desc


def dot4_inputs(rng: np.random.Generator, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Operands of the FMA microkernel: ``Q3`` (threads, 4, DOT_WIDTH) and ``X3`` (threads,
    DOT_ROWS, DOT_WIDTH), float64 in [0, 1) (no overflow, no subnormals), each starting on a
    cache line (``reference._checks.Q_ALIGN``), as the kernels' query rows do: on an
    AVX-512 host, loads that straddle two lines run the dot products at about half the rate
    (54 against 99 G FMA/s on the development host)."""
    return (
        aligned_copy(rng.random((threads, 4, DOT_WIDTH))),
        aligned_copy(rng.random((threads, DOT_ROWS, DOT_WIDTH))),
    )


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
        f"{_threads_text(nt)}, best of {reps}"
    )
    return nt * 4 * DOT_WIDTH * DOT_REPS / t, desc


def measure_exp(budget_s: float, rng: np.random.Generator) -> tuple[float, str]:
    """exp/s: ``reference._vexp.exp_nonpos_into`` (the exps the kernels store: softmax
    weights) on cache-resident float64 blocks, all threads."""
    nt = numba.get_num_threads()
    x2 = -30.0 * rng.random((nt, EXP_BLOCK))  # softmax-like arguments (score - max <= 0)
    out2 = np.empty_like(x2)
    res = np.zeros(nt, dtype=np.float64)
    t, reps = best_time(lambda: _exp_kernel(x2, out2, EXP_REPS, res), budget_s=budget_s)
    desc = (
        f"measured: reference._vexp.exp_nonpos_into on {EXP_BLOCK}-element float64 blocks "
        f"(in cache), {nt} threads, best of {reps}"
    )
    return nt * EXP_BLOCK * EXP_REPS / t, desc


def measure_exp_sum(budget_s: float, rng: np.random.Generator) -> tuple[float, str]:
    """exp/s of the exps summed, not stored: ``reference._vexp.exp_nonpos_sum`` (SparQ's
    softmax sums) on cache-resident float64 blocks of ``EXP_BLOCK`` arguments in
    ``[-30, 0]``, ``EXP_REPS`` sums per thread, all threads."""
    nt = numba.get_num_threads()
    x2 = -30.0 * rng.random((nt, EXP_BLOCK))  # softmax-like arguments (score - max <= 0)
    res = np.zeros(nt, dtype=np.float64)
    t, reps = best_time(lambda: _exp_sum_kernel(x2, EXP_REPS, res), budget_s=budget_s)
    desc = (
        f"measured: reference._vexp.exp_nonpos_sum (the exps summed, not stored) on "
        f"{EXP_BLOCK}-element float64 blocks of arguments in [-30, 0] (in cache), {nt} "
        f"threads, best of {reps}"
    )
    return nt * EXP_BLOCK * EXP_REPS / t, desc


@njit_parallel
def _select_kernel(x, k, out, bv, bi, mark):
    # Each row: the k largest (reference.selection.topk_set_into), then listed in index
    # order (reference.sparq._sort_positions): the selection SparQ's kernel makes.
    for t in prange(x.shape[0]):
        tid = numba.get_thread_id()
        topk_set_into(x[t], k, out[t], bv[tid], bi[tid])
        _sort_positions(out[t], k, mark[tid])


def measure_topk(budget_s: float, rng: np.random.Generator) -> tuple[float, str]:
    """Exact top-k throughput (input bytes/s) of the selection SparQ's kernel makes: the
    ``k = n / 8`` largest of float64 rows of 32768 (``reference.selection.topk_set_into``),
    listed in index order; ``4 x threads`` rows per call, split over the threads. (The ranked
    ``reference.topk`` also sorts the k by value, which SparQ's kernel skips.)"""
    from reference.selection import topk_buffer_size

    nt = numba.get_num_threads()
    rows = TOPK_ROWS_PER_THREAD * nt
    x = rng.normal(size=(rows, TOPK_N))
    cap = topk_buffer_size(TOPK_N, TOPK_K)
    out = np.empty((rows, TOPK_K), dtype=np.int64)
    bv, bi = np.empty((nt, cap)), np.empty((nt, cap), dtype=np.int64)
    mark = np.empty((nt, TOPK_N), dtype=np.uint8)
    t, reps = best_time(lambda: _select_kernel(x, TOPK_K, out, bv, bi, mark), budget_s=budget_s)
    desc = (
        f"measured: the k largest of {rows} float64 rows of {TOPK_N} "
        f"(reference.selection.topk_set_into, k {TOPK_K}) listed in index order, input "
        f"bytes/s, {nt} threads, best of {reps}"
    )
    return x.nbytes / t, desc


def gather_index(
    rng: np.random.Generator, n_rows: int, threads: int, per_thread: int = GATHER_ROWS_PER_THREAD
) -> np.ndarray:
    """Rows of the gather microkernel, (threads, per_thread) int64: each thread's rows in
    groups of ``GATHER_KEPT`` distinct rows of a window of ``GATHER_WINDOW`` consecutive rows
    at a random start (``min(...)`` of ``n_rows`` where it has fewer), ascending within the
    group."""
    w = min(GATHER_WINDOW, n_rows)
    kk = min(GATHER_KEPT, w)
    out = np.empty((threads, per_thread), dtype=np.int64)
    for t in range(threads):
        for g0 in range(0, per_thread, kk):
            m = min(kk, per_thread - g0)
            start = int(rng.integers(0, n_rows - w + 1))
            out[t, g0 : g0 + m] = start + np.sort(rng.choice(w, m, replace=False))
    return out


def measure_gather(
    a: np.ndarray,
    budget_s: float,
    rng: np.random.Generator,
    row: int = GATHER_ROW,
    flush: np.ndarray | None = None,
) -> tuple[float, str]:
    """Gather bandwidth (bytes/s): every thread sums rows of ``row`` float32 (512 bytes by
    default) of ``a`` viewed as rows, in the pattern of SparQ's kept rows
    (:func:`gather_index`), requesting rows ahead before it sums each, as the kernels do
    (``reference._rows.prefetch_ahead``: each row ``GATHER_REQUESTS`` times, from
    ``GATHER_AHEAD`` rows ahead). With ``flush`` (an array larger than the last-level
    cache), every timed repetition follows an untimed read of it, so the rows come from
    memory with cold caches and translations, as a decode step's gathers meet them (on the
    Zen 5 host, back to back, the repetitions had gathered at 52-54 GB/s where, each after
    a read of 128 MiB, they gathered at 34-39 and SparQ's step 7 at 29)."""
    nt = numba.get_num_threads()
    a2 = a[: a.size // row * row].reshape(-1, row)
    idx2 = gather_index(rng, a2.shape[0], nt)
    out = np.zeros(nt, dtype=np.float32)
    before, cold = None, ""
    if flush is not None:
        words, fout = stream_view(flush), np.zeros(nt, dtype=np.float32)
        before = lambda: _stream_kernel(words, fout)  # noqa: E731
        cold = f", each after a read of {flush.nbytes / 2**20:.0f} MiB (caches cold)"
    t, reps = best_time(lambda: _gather_kernel(a2, idx2, out), budget_s=budget_s, before=before)
    row_bytes = row * a.itemsize
    desc = (
        f"measured: {row_bytes}-byte rows ({row} float32) of a {a2.nbytes / 2**20:.0f} MiB "
        f"array, in ascending groups of {GATHER_KEPT} of a random window of {GATHER_WINDOW} "
        f"rows, summed, each requested {_times(GATHER_REQUESTS)} from {GATHER_AHEAD} rows "
        f"ahead, "
        f"{GATHER_ROWS_PER_THREAD} rows per "
        f"thread, {_threads_text(nt)}{cold}, best of {reps}"
    )
    return idx2.size * row_bytes / t, desc


def widen_blocks(dtype: str, rng: np.random.Generator, threads: int) -> np.ndarray:
    """Operand of the widen microkernel: (threads, WIDEN_BLOCKS, WIDEN_BLOCK) values in
    [0, 1) stored as ``dtype`` (one of :data:`WIDEN_DTYPES`) in the kernels' encoding."""
    if dtype not in WIDEN_DTYPES:
        raise ValueError(f"dtype: expected one of {list(WIDEN_DTYPES)}, got {dtype!r}")
    x = rng.random((threads, WIDEN_BLOCKS, WIDEN_BLOCK), dtype=np.float32)
    if dtype == "float32":
        return aligned_copy(x)
    if dtype == "float16":
        return aligned_copy(x.astype(np.float16).view(np.uint16))
    return aligned_copy((x.view(np.uint32) >> 16).astype(np.uint16).view(np.int16))  # bf16 bits


def measure_widen(dtype: str, budget_s: float, rng: np.random.Generator) -> tuple[float, str]:
    """Elements per second widened to float64 and added (``reference._rows.widen``, the
    kernels' conversion; ``dtype`` one of :data:`WIDEN_DTYPES`), ``WIDEN_BLOCKS``
    L1-resident blocks of ``WIDEN_BLOCK`` elements in turn, all threads."""
    nt = numba.get_num_threads()
    X = widen_blocks(dtype, rng, nt)
    out = np.zeros(nt, dtype=np.float64)
    t, reps = best_time(lambda: _widen_kernel(X, WIDEN_REPS, out), budget_s=budget_s)
    desc = (
        f"measured: {dtype} elements widened to float64 and summed, {WIDEN_BLOCKS} "
        f"L1-resident blocks of {WIDEN_BLOCK} in turn, {nt} threads, best of {reps}"
    )
    return nt * WIDEN_BLOCK * WIDEN_REPS / t, desc


#: the sweep microkernel, per thread: SWEEP_ROWS float32 rows of SWEEP_BLOCK positions (the
#: kept components' rows of one block, in cache), SWEEP_BLOCKS blocks of float64 logits
#: written (32768 positions, four heads: 1 MiB a thread, as SparQ's kernel writes a row's)
SWEEP_ROWS = 16
SWEEP_BLOCK = 4096
SWEEP_BLOCKS = 8
#: positions per sweep call (a constant count, as the kernel's chunks, which the vectoriser
#: unrolls)
SWEEP_CHUNK = 64


@njit_serial(fastmath=set(FASTMATH_CHAIN))
def _sweep_row(X, q, acc, s, score):
    """Step 3 of SparQ on rows in cache: for each of the blocks of ``s`` (4, SWEEP_BLOCKS *
    SWEEP_BLOCK), ``acc`` (4, SWEEP_BLOCK + pad) zeroed, the 16 rows of ``X`` swept into it four
    at a time for the four heads of ``q`` (4, 16) (``reference.sparq._sweep_h4c4``, the
    kernel's sweep), then finished as the kernel finishes a block of a row with no masked
    position: copied into the block of ``s`` and summed into the group score ``score``
    (``_finish_block4``), each head's maximum taken, the score checked for non-finite
    values (``_finite_probe``). Returns the maximum."""
    chunk = np.uint64(SWEEP_CHUNK)
    nch = np.uint64(SWEEP_BLOCK) // chunk
    m = -np.inf
    chk = 0.0
    for b in range(SWEEP_BLOCKS):
        j0 = np.uint64(b * SWEEP_BLOCK)
        for i in range(4):
            for jj in range(SWEEP_BLOCK):
                acc[i, jj] = 0.0
        for u in range(0, SWEEP_ROWS, 4):
            for ci in range(nch):
                jb = ci * chunk
                _sweep_h4c4(q, 0, u, X, u, u + 1, u + 2, u + 3, jb, chunk, acc, jb)
        _finish_block4(acc, s, 0, j0, np.uint64(SWEEP_BLOCK), score, True)
        for i in range(4):
            m = max_of(acc[i, :SWEEP_BLOCK], m)
        chk += _finite_probe(score[j0 : j0 + SWEEP_BLOCK])
    return m + chk


@njit_parallel
def _sweep_kernel(X3, q, acc3, s3, sc2, reps, out):
    for t in prange(X3.shape[0]):
        m = 0.0
        for _ in range(reps):
            m = _sweep_row(X3[t], q, acc3[t], s3[t], sc2[t])
        out[t] = m


def sweep_inputs(rng: np.random.Generator, threads: int):
    """Operands of the sweep microkernel: ``X3`` (threads, SWEEP_ROWS, SWEEP_BLOCK) float32,
    ``q`` (4, SWEEP_ROWS) float64, ``acc3`` (threads, 4, SWEEP_BLOCK + pad: the kernel's
    padded rows), ``s3`` (threads, 4, SWEEP_BLOCKS * SWEEP_BLOCK) and ``sc2`` (threads,
    SWEEP_BLOCKS * SWEEP_BLOCK)."""
    n = SWEEP_BLOCKS * SWEEP_BLOCK
    X3 = aligned_copy(rng.standard_normal((threads, SWEEP_ROWS, SWEEP_BLOCK), dtype=np.float32))
    q = rng.standard_normal((4, SWEEP_ROWS))
    acc3 = aligned_copy(np.zeros((threads, 4, SWEEP_BLOCK + _ACC_PAD)))
    s3 = aligned_copy(np.zeros((threads, 4, n)))
    return X3, q, acc3, s3, aligned_copy(np.zeros((threads, n)))


def measure_sweep(budget_s: float, rng: np.random.Generator) -> tuple[float, str]:
    """float64 FMAs per second (all threads) of SparQ's step-3 sweeps on rows in cache, with
    the logits written out as the kernel writes them (:func:`_sweep_row`)."""
    nt = numba.get_num_threads()
    X3, q, acc3, s3, sc2 = sweep_inputs(rng, nt)
    out = np.zeros(nt)
    t, reps = best_time(lambda: _sweep_kernel(X3, q, acc3, s3, sc2, 1, out), budget_s=budget_s)
    fmas = nt * 4 * SWEEP_ROWS * SWEEP_BLOCKS * SWEEP_BLOCK
    desc = (
        f"measured: SparQ's step-3 sweep (4 heads, {SWEEP_ROWS} components four at a time) "
        f"over {SWEEP_ROWS} float32 rows of {SWEEP_BLOCK} positions in cache, "
        f"{SWEEP_BLOCKS} blocks of float64 logits written ("
        f"{4 * 8 * SWEEP_BLOCKS * SWEEP_BLOCK / 2**20:.0f} MiB) with their group score, "
        "their maximum taken, "
        f"{nt} threads, best of {reps}"
    )
    return fmas / t, desc


#: rows of 128 float32 (512 KiB) per thread of the column-copy microkernel, and the
#: components copied out of each (SparQ's r in the benchmark's rows)
COPY_ROWS = 1024
COPY_COLS = 16
#: passes over a thread's rows per repetition (262 144 elements a thread)
COPY_REPS = 16


@njit_serial
def _copy_columns_rounds(K, comps, raw, blk, reps):
    # SparQ's step 3 with K stored once, before its sweeps: for each block of positions, the
    # r components of every S-major row copied out one element at a time (each row
    # requested a few rows ahead), then the block widened to float64 in a second pass.
    # Written here, not taken from the kernel; the loops are the kernel's.
    S = K.shape[0]
    r = comps.shape[0]
    block = raw.shape[1]
    s = 0.0
    for _ in range(reps):
        for j0 in range(0, S, block):
            n = min(block, S - j0)
            for jj in range(n):
                if j0 + jj + _GATHER_AHEAD < S:
                    prefetch_row(K, j0 + jj + _GATHER_AHEAD)
                krow = K[j0 + jj]
                for u in range(r):
                    raw[u, jj] = krow[comps[u]]
            for u in range(r):
                ru = raw[u]
                bu = blk[u]
                for jj in range(n):
                    bu[jj] = widen(ru[jj])
            s += blk[0, 0]
    return s


@njit_parallel
def _copy_columns_kernel(K3, comps, raw3, blk3, reps, out):
    for t in prange(K3.shape[0]):
        out[t] = _copy_columns_rounds(K3[t], comps, raw3[t], blk3[t], reps)


def measure_column_copy(budget_s: float, rng: np.random.Generator) -> tuple[float, str]:
    """Elements per second (all threads) copied out of S-major float32 rows in cache and
    widened, as SparQ's step 3 does with K stored once before its sweeps
    (:func:`_copy_columns_rounds`: ``COPY_COLS`` components of each of ``COPY_ROWS`` rows a
    thread, in blocks of the kernel's size)."""
    nt = numba.get_num_threads()
    K3 = rng.standard_normal((nt, COPY_ROWS, GATHER_ROW)).astype(np.float32)
    comps = np.sort(rng.choice(GATHER_ROW, size=COPY_COLS, replace=False)).astype(np.int64)
    raw3 = np.zeros((nt, COPY_COLS, _STEP3_BLOCK), dtype=np.float32)
    blk3 = np.zeros((nt, COPY_COLS, _STEP3_BLOCK))
    out = np.zeros(nt)
    t, reps = best_time(
        lambda: _copy_columns_kernel(K3, comps, raw3, blk3, COPY_REPS, out), budget_s=budget_s
    )
    desc = (
        f"measured: {COPY_COLS} components of each of {COPY_ROWS} float32 rows of "
        f"{GATHER_ROW} per thread (in cache) copied out one element at a time into blocks of "
        f"{_STEP3_BLOCK} positions, each row requested {_GATHER_AHEAD} rows ahead, each block "
        f"then widened to float64 (SparQ's step 3 with K stored once, before its sweeps), "
        f"{COPY_REPS} passes a repetition, {nt} threads, best of {reps}"
    )
    return nt * COPY_ROWS * COPY_COLS * COPY_REPS / t, desc


#: rows of K and of V per thread of the exact-attention microkernel (128 float32 each: 128
#: KiB of K and 128 KiB of V, in the L2 of the hosts measured), and the query heads (the
#: kernel's blocks of four; ``measure_attend(heads=1)`` times the path of the heads left
#: over)
ATTEND_ROWS = 256
ATTEND_HEADS = 4


@njit_serial
def _attend_rounds(Q, K, V, pos, L, W, Y, reps, ahead, requests):
    # SparQ's step 7 on kept rows in cache, as the kernel runs it: the K pass (logits of
    # the heads, _dot4x4 four rows a step for a block of four, one head and row at a time
    # otherwise) and the V pass (the weighted rows summed into the heads' outputs), every
    # row requested ahead as the kernel requests its
    # kept rows (GATHER_AHEAD, GATHER_REQUESTS). The softmax between them is left out (the
    # model prices its exps on their own); the weights W are fixed.
    n = pos.shape[0]
    s = 0.0
    for _ in range(reps):
        _k_pass(Q, K, pos, n, 0.125, L, ahead, requests)
        _v_pass(V, pos, n, W, Y, ahead, requests)
        s += Y[0, 0] + L[0, 0]
    return s


@njit_parallel
def _attend_kernel(Q3, K3, V3, pos, L3, W3, Y3, reps, ahead, requests, out):
    for t in prange(K3.shape[0]):
        out[t] = _attend_rounds(
            Q3[t], K3[t], V3[t], pos, L3[t], W3[t], Y3[t], reps, ahead, requests
        )


def measure_attend(
    budget_s: float,
    rng: np.random.Generator,
    heads: int = ATTEND_HEADS,
    dense: bool = False,
    dtype: str = "float32",
) -> tuple[float, str]:
    """float64 FMAs per second (all threads) of SparQ's step-7 passes over kept rows in
    cache (:func:`_attend_rounds`: ``reference._rows._k_pass`` and ``_v_pass`` with the
    kernel's row requests, ``heads`` query heads, float32 rows of 128, each element widened
    once for its ``heads`` FMAs): four, a block of the kernel's, or one, its path for the
    heads left over. With ``dense``, the same passes with dense attention's requests (each
    row once, ``STREAM_AHEAD`` rows ahead). ``dtype``: the rows' dtype, ``"float32"`` or
    ``"float16"`` (passed to the passes as its bits, as the kernels take it)."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype: expected 'float32' or 'float16', got {dtype!r}")
    nt = numba.get_num_threads()
    G, n, d = heads, ATTEND_ROWS, GATHER_ROW
    Q3 = aligned_copy(rng.standard_normal((nt, G, d)))

    def rows():
        x = rng.standard_normal((nt, n, d), dtype=np.float32)
        return aligned_copy(x if dtype == "float32" else x.astype(np.float16).view(np.uint16))

    K3, V3 = rows(), rows()
    pos = np.arange(n, dtype=np.int64)
    L3 = np.zeros((nt, G, n))
    W3 = np.full((nt, G, n), 1.0 / n)
    Y3 = np.zeros((nt, G, d))
    out = np.zeros(nt)
    # about 1 ms a call on the development host (four heads): the launch a small share
    reps = 32 * ATTEND_HEADS // G
    ahead, requests = (STREAM_AHEAD, 1) if dense else (GATHER_AHEAD, GATHER_REQUESTS)
    t, m = best_time(
        lambda: _attend_kernel(Q3, K3, V3, pos, L3, W3, Y3, reps, ahead, requests, out),
        budget_s=budget_s,
    )
    fmas = nt * reps * 2 * G * n * d
    whose = (
        "dense attention's K and V passes" if dense else "SparQ's step-7 passes"
    ) + f" (reference._rows._k_pass and _v_pass, {G} head{'s' if G != 1 else ''})"
    how = (
        f"once from {STREAM_AHEAD} rows ahead, as dense attention requests its rows"
        if dense
        else f"{_times(GATHER_REQUESTS)} from {GATHER_AHEAD} rows ahead, as the kernel "
        "requests its kept rows"
    )
    desc = (
        f"measured: {whose} over {n} {dtype} rows of K and of V of {d} in cache (each row "
        f"requested {how}; the softmax between the passes left out), {nt} threads, best of {m}"
    )
    return fmas / t, desc


def measure_div(budget_s: float, rng: np.random.Generator) -> tuple[float, str]:
    """float64 divisions per second (``y = x / t`` over an L1-resident block of
    ``WIDEN_BLOCK``, a new ``t`` each pass), all threads."""
    nt = numba.get_num_threads()
    X = aligned_copy(1.0 + rng.random((nt, WIDEN_BLOCK)))
    Y = aligned_copy(np.empty_like(X))
    out = np.zeros(nt, dtype=np.float64)
    t, reps = best_time(lambda: _div_kernel(X, Y, WIDEN_REPS, out), budget_s=budget_s)
    desc = (
        f"measured: float64 x / t over an L1-resident block of {WIDEN_BLOCK}, a new t each "
        f"pass, {nt} threads, best of {reps}"
    )
    return nt * WIDEN_BLOCK * WIDEN_REPS / t, desc


def overlap_rows(rng: np.random.Generator, threads: int) -> np.ndarray:
    """The L1-resident float32 rows of the overlap microkernel's in-core-only loop:
    (threads, DOT_ROWS, DOT_WIDTH) in [0, 1), on a cache line."""
    return aligned_copy(rng.random((threads, DOT_ROWS, DOT_WIDTH), dtype=np.float32))


def overlap_rounds(fns, budget_s: float, min_rounds: int = 5):
    """Rounds of the three timings of an overlap measurement, ``fns`` = (one kind of work
    alone, e.g. a read; the other alone, e.g. the in-core work; both in one loop), each
    called once untimed first: at least ``min_rounds`` rounds, more while ``budget_s``
    lasts, at most 50. Returns ``(rounds, sorted ratios, raw median ratio, the median
    clipped to [0, 1], median times)``, each round's ratio
    ``(t_a + t_b - t_both) / min(t_a, t_b)``."""
    for f in fns:  # compile / warm up
        f()
    rounds = []
    t_end = time.perf_counter() + budget_s
    while len(rounds) < min_rounds or (time.perf_counter() < t_end and len(rounds) < 50):
        ts = []
        for f in fns:
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        rounds.append(ts)
    ratios = sorted((ta + tb - tab) / min(ta, tb) for ta, tb, tab in rounds)
    raw = float(np.median(ratios))
    return rounds, ratios, raw, min(1.0, max(0.0, raw)), np.median(np.array(rounds), axis=0)


def measure_overlap(a: np.ndarray, budget_s: float, rng: np.random.Generator) -> tuple[float, str]:
    """Fraction of the shorter of a streaming read and the in-core work it feeds (widening,
    FMAs) that the host hides behind the longer when one loop does both (``[0, 1]``; 0: the
    times add up, 1: the longer alone), and its description. ``a`` (1-D float32) is read
    from its first cache-line boundary on, as whole rows of ``DOT_WIDTH``.

    Three timings on all threads, taken one after another in each round: ``t_read``, the
    prange sum of the bytes of those rows (as :func:`measure_stream`); ``t_core``, dot
    products of four L1-resident float64 vectors with ``DOT_WIDTH``-element float32 rows
    that stay in L1 (each element widened once for four FMAs), as many as ``a`` has
    rows; ``t_both``, the same dot products with the consecutive rows of ``a`` instead (a
    streaming matrix-vector product with four vectors), each step requesting the row
    ``FUSED_AHEAD`` rows on, as the kernels' passes over every row do. Each round gives
    ``(t_read + t_core - t_both) / min(t_read, t_core)``; the result is the median over the
    rounds (at least 5, more while the budget lasts, at most 50), clipped to ``[0, 1]``
    (the description keeps the unclipped median). Rounds, not best-of times per loop: on a
    shared machine the memory speed changes between minutes, and the three times of a
    round see the same state."""
    nt = numba.get_num_threads()
    # start on a cache line, as the FMA operands do: with the array 16 or 48 bytes past a
    # line the fused loop ran 1.7x slower on the development host (and the "overlap" < 0)
    a = a[((-a.ctypes.data) % Q_ALIGN) // a.itemsize :]
    a2 = a[: a.size - a.size % DOT_WIDTH].reshape(-1, DOT_WIDTH)
    words = stream_view(a2.reshape(-1))
    Q3, _ = dot4_inputs(rng, nt)
    X3 = overlap_rows(rng, nt)
    out = np.zeros(nt, dtype=np.float64)
    out32 = np.zeros(nt, dtype=np.float32)
    fns = (
        lambda: _stream_kernel(words, out32),
        lambda: _fused_kernel(a2, Q3, X3, False, out),
        lambda: _fused_kernel(a2, Q3, X3, True, out),
    )
    rounds, ratios, raw, rho, med = overlap_rounds(fns, budget_s)
    desc = (
        f"measured: dot products of four L1-resident float64 vectors with the float32 "
        f"{DOT_WIDTH}-element rows of a {a2.nbytes / 2**20:.0f} MiB array (each element "
        f"widened once for four FMAs; each step requests the row {FUSED_AHEAD} rows on), "
        f"against the read alone and the same work on L1-resident rows, {len(rounds)} "
        f"rounds of the three (medians: read {med[0] * 1e3:.2f} ms, in-core {med[1] * 1e3:.2f} "
        f"ms, both {med[2] * 1e3:.2f} ms); median of (read + core - both) / min = {raw:.3f} "
        f"(rounds {ratios[0]:.2f}..{ratios[-1]:.2f}), {nt} threads"
    )
    return rho, desc


#: dot-product rounds per thread of each timing of :func:`measure_widen_overlap` (5.1M
#: elements of DOT_WIDTH rows; the widen loop takes as many in WIDEN_BLOCK blocks)
WIDEN_OVERLAP_REPS = 20_000


def measure_widen_overlap(
    budget_s: float, rng: np.random.Generator, dtype: str = "float32"
) -> tuple[float, str]:
    """Fraction of the shorter of the widening of ``dtype`` elements (one of
    :data:`WIDEN_DTYPES`, in the kernels' encoding) and the four float64 FMAs each feeds
    that the host hides behind the longer when one loop does both (``[0, 1]``), and its
    description: rounds (as :func:`overlap_rounds`) of three L1-resident loops on all
    threads over the same number of elements, ``t_fma``, dot products of four float64
    vectors with float64 rows (:func:`measure_fma`'s loop: four FMAs per element, nothing
    widened); ``t_widen``, the elements of ``dtype`` blocks widened and summed
    (:func:`measure_widen`'s loop); ``t_core``, the dot products with the same blocks cut
    into rows of ``DOT_WIDTH`` (each element widened once for its four FMAs). The median
    over the rounds (at least 9) of ``(t_fma + t_widen - t_core) / min(t_fma, t_widen)``,
    clipped to ``[0, 1]``.

    Rounds, not best-of rates from separate measurements: with the widening a third of the
    FMAs' time, a 10% slower loop moves the fraction by about 0.3, and on a shared host the
    three loops of a round see the same neighbours (on the Zen 4 host, from best-of rates,
    0.0-1.0 from one profile to the next within a run)."""
    nt = numba.get_num_threads()
    Q3, X64 = dot4_inputs(rng, nt)
    XW = widen_blocks(dtype, rng, nt)  # (validates dtype)
    XR = XW.reshape(nt, -1, DOT_WIDTH)  # the same elements as rows of DOT_WIDTH
    reps_w = WIDEN_OVERLAP_REPS * DOT_WIDTH // WIDEN_BLOCK
    out = np.zeros(nt, dtype=np.float64)
    fns = (
        lambda: _dot4_kernel(Q3, X64, WIDEN_OVERLAP_REPS, out),
        lambda: _widen_kernel(XW, reps_w, out),
        lambda: _dot4_kernel(Q3, XR, WIDEN_OVERLAP_REPS, out),
    )
    # at least 9 rounds: a round whose three loops met different neighbours gives a ratio
    # far outside [0, 1] (on the Zen 4 host -12.6 and 7.2 among five rounds)
    rounds, ratios, raw, omega, med = overlap_rounds(fns, budget_s, min_rounds=9)
    n = WIDEN_OVERLAP_REPS * DOT_WIDTH
    desc = (
        f"measured: L1-resident loops over {n} elements per thread, {nt} threads: four float64 "
        f"FMAs per element (float64 rows), the widening of {dtype} elements alone, and both "
        f"({dtype} rows, each element widened for four FMAs), {len(rounds)} rounds of the "
        f"three (medians per element, all threads: FMAs {med[0] / (n * nt) * 1e12:.1f} ps, "
        f"widening {med[1] / (n * nt) * 1e12:.1f} ps, both {med[2] / (n * nt) * 1e12:.1f} ps); "
        f"median of (fma + widen - both) / min = {raw:.3f} (rounds {ratios[0]:.2f}.."
        f"{ratios[-1]:.2f}), clipped to [0, 1]"
    )
    return omega, desc


def measure_gather_overlap(
    a: np.ndarray, budget_s: float, rng: np.random.Generator
) -> tuple[float, str]:
    """Fraction of the shorter of SparQ's step-7 gathers and the in-core work of its passes
    that the host hides behind the longer when the passes run over gathered rows (``[0,
    1]``), and its description: :func:`measure_overlap`'s rounds with the passes of the
    kernel over kept rows in place of the streaming loop.

    Per thread ``GOVERLAP_BLOCKS`` blocks of ``GATHER_KEPT`` rows, each block rows of a
    window of ``GATHER_WINDOW`` in the pattern of SparQ's kept rows (:func:`gather_index`);
    the K rows from the first half of ``a`` viewed as rows of ``GATHER_ROW`` float32 (512
    bytes), the V rows from the second half. Three timings on all threads per round:
    ``t_gather``, the K and V rows summed (:func:`measure_gather`'s loop, each row requested
    as the kernels request them); ``t_core``, the step-7 passes (``reference._rows._k_pass``
    and ``_v_pass``, four query heads, as in :func:`measure_attend`) over cache-resident
    rows (``ATTEND_ROWS`` of K and of V, each block's positions running over them in turn);
    ``t_both``, the same passes over the gathered rows. The median over the rounds of
    ``(t_gather + t_core - t_both) / min(t_gather, t_core)``, clipped to ``[0, 1]``.

    Until the run after 16af767 the loop was the K pass's step alone (``_dot4x4``, four
    rows of four dot products at a time): on the Zen 4 development host it measured
    0.73-0.93 where the kernel's gathers and attention (the phase table's phase 5) came out
    at 1.3-1.6x the model priced with it; side by side, three times, these passes measured
    0.54-0.56, which priced the phase at 1.64-2.17 ms against 1.25-1.80 with the old
    fraction, measured 2.26-2.37 ms (docs/performance-history.md)."""
    nt = numba.get_num_threads()
    a = a[((-a.ctypes.data) % Q_ALIGN) // a.itemsize :]  # rows on cache lines
    a2 = a[: a.size // GATHER_ROW * GATHER_ROW].reshape(-1, GATHER_ROW)
    half = a2.shape[0] // 2
    K, V = a2[:half], a2[half : 2 * half]
    n = GATHER_KEPT
    idx2 = gather_index(rng, half, nt, GOVERLAP_BLOCKS * n)
    G = ATTEND_HEADS
    Q3 = aligned_copy(rng.random((nt, G, GATHER_ROW)))
    L3 = np.zeros((nt, G, n))
    W3 = np.full((nt, G, n), 1.0 / n)
    Y3 = np.zeros((nt, G, GATHER_ROW))
    Kc3 = aligned_copy(rng.random((nt, ATTEND_ROWS, GATHER_ROW), dtype=np.float32))
    Vc3 = aligned_copy(rng.random((nt, ATTEND_ROWS, GATHER_ROW), dtype=np.float32))
    pos_c = np.arange(n, dtype=np.int64) % ATTEND_ROWS
    out = np.zeros(nt, dtype=np.float64)
    fns = (
        lambda: _gather_kv_kernel(K, V, idx2, out),
        lambda: _gather_passes_kernel(K, V, idx2, Q3, L3, W3, Y3, Kc3, Vc3, pos_c, False, out),
        lambda: _gather_passes_kernel(K, V, idx2, Q3, L3, W3, Y3, Kc3, Vc3, pos_c, True, out),
    )
    rounds, ratios, raw, omega, med = overlap_rounds(fns, budget_s)
    desc = (
        f"measured: SparQ's step-7 passes (reference._rows._k_pass and _v_pass, {G} heads) "
        f"over {GOVERLAP_BLOCKS} blocks of {n} {GATHER_ROW * 4}-byte float32 rows of K and of "
        f"V per thread, gathered from the two halves of a {a2.nbytes / 2**20:.0f} MiB array "
        f"in ascending groups of {GATHER_KEPT} of a random window of {GATHER_WINDOW} rows "
        f"(each row requested {_times(GATHER_REQUESTS)} from {GATHER_AHEAD} rows ahead), "
        f"against the gathers alone and the same passes over {ATTEND_ROWS} cache-resident "
        f"rows, {len(rounds)} rounds of the three (medians: gather {med[0] * 1e3:.2f} ms, "
        f"in-core {med[1] * 1e3:.2f} ms, both {med[2] * 1e3:.2f} ms); median of (gather + "
        f"core - both) / min = {raw:.3f} (rounds {ratios[0]:.2f}..{ratios[-1]:.2f}), "
        f"{_threads_text(nt)}"
    )
    return omega, desc


#: the tiny problem whose call time is the fixed cost of one call of the reference
CALL_SHAPE = dict(B=1, H=1, S=64, d=16, r=4, k=8)


def measure_calls(
    budget_s: float, rng: np.random.Generator, flush: np.ndarray | None = None
) -> tuple[float, float, str, str]:
    """Fixed cost of one call of ``reference.dense_attention`` and of
    ``reference.sparq_attention`` (K stored twice, ``v_mean`` supplied,
    ``check_finite=False``): argument checks, allocation, Numba dispatch, the thread pool's
    start and the ``k_cache_t`` spot check, at ``CALL_SHAPE`` (B = H = 1, S = 64, d = 16),
    where the per-element work is negligible. The one measurement that times the
    reference's own entry points, and only for their fixed cost (the host model adds it
    once per call). With ``flush`` (1-D float32, larger than the last-level cache) every
    timed call follows an untimed read of it, as a call at decode sizes follows one that
    streamed gigabytes: the interpreter's and the kernels' code and data come back from
    memory (on the development host, after a 256 MiB read, 0.21 ms for dense and 0.42 ms
    for SparQ against 0.02 and 0.07 ms warm). Returns
    ``(dense_s, sparq_s, dense_description, sparq_description)``."""
    from reference import dense_attention, sparq_attention, transpose_keys

    c = CALL_SHAPE
    B, H, S, d = c["B"], c["H"], c["S"], c["d"]
    q = rng.standard_normal((B, H, d))
    K = rng.standard_normal((B, H, S, d)).astype(np.float32)
    V = rng.standard_normal((B, H, S, d)).astype(np.float32)
    KT = transpose_keys(K)
    vm = V.astype(np.float64).mean(axis=2)
    nt = numba.get_num_threads()
    before = None
    cold = ""
    if flush is not None:
        out = np.zeros(nt, dtype=np.float32)
        words = stream_view(flush)
        before = lambda: _stream_kernel(words, out)  # noqa: E731
        cold = f", each after a read of {flush.nbytes / 2**20:.0f} MiB (caches cold)"
    reps = dict(min_reps=7 if flush is not None else 20, max_reps=2000, before=before)
    t_dense, r1 = best_time(
        lambda: dense_attention(q, K, V, check_finite=False), budget_s=budget_s / 2, **reps
    )
    t_sparq, r2 = best_time(
        lambda: sparq_attention(
            q, K, V, r=c["r"], k=c["k"], local_window=0, k_cache_t=KT, v_mean=vm,
            check_finite=False,
        ),
        budget_s=budget_s / 2, **reps,
    )  # fmt: skip
    shape = f"B = H = 1, S = {S}, d = {d}, float32"
    return (
        t_dense,
        t_sparq,
        f"measured: a reference.dense_attention call at {shape} (its fixed cost), {nt} threads, "
        f"best of {r1}{cold}",
        f"measured: a reference.sparq_attention call at {shape}, r = {c['r']}, k = {c['k']}, K "
        f"twice, v_mean supplied (its fixed cost), {nt} threads, best of {r2}{cold}",
    )
