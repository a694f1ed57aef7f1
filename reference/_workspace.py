"""Reusable per-thread scratch memory for the kernels.

On the hosts this reference runs on, touching freshly mapped memory costs about as much as
reading it from DRAM several times over (a page fault per 4 KiB), and at decode sizes the
per-row scratch (logits of a KV head's query group over S positions, or over dense's parts
of 4096) is far above malloc's mmap threshold. So the kernels' scratch is allocated once
per Python thread and reused: each Numba worker takes the row of it given by
``numba.get_thread_id()``. Results never depend on the scratch's previous contents.
:func:`release` frees it.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba.np.ufunc import parallel as _parallel

_local = threading.local()


def workspace(name: str, per_thread: int, dtype, rows: int | None = None) -> np.ndarray:
    """A ``(rows, w)`` C-contiguous scratch array of ``dtype``, reused across calls from
    this Python thread (contents undefined), on a 64-byte boundary (:func:`aligned_empty`):
    ``w = per_thread`` for ``rows=1``, else ``per_thread`` rounded up to whole 64-byte
    lines, so that every thread's row starts on a line of its own. ``rows`` defaults to
    ``numba.get_num_threads()`` (one row per worker; a caller that needs several arrays
    passes it, since each lookup of the thread count cost about 10 us on a cache-cold call);
    ``rows=1`` is scratch shared by the whole call."""
    cache = _local.__dict__.setdefault("arrays", {})
    if rows is None:
        rows = numba.get_num_threads()
    dt = np.dtype(dtype)
    width = max(int(per_thread), 1)
    if rows > 1:  # each thread's row on a cache line of its own: padded to whole lines
        per_line = max(LINE_BYTES // dt.itemsize, 1)
        width = -(-width // per_line) * per_line
    n = rows * width
    key = (name, dt.str)
    arr = cache.get(key)
    if arr is None or arr.size < n:
        if arr is not None:  # the plans hold views of the arrays: forget them with it
            _local.__dict__.pop("plans", None)
        arr = aligned_empty(n, dt)
        cache[key] = arr
    return arr[:n].reshape(rows, width)


#: The alignment of the scratch arrays and of each thread's row of them (bytes).
LINE_BYTES = 64


def aligned_empty(n: int, dtype) -> np.ndarray:
    """A 1-D array of ``n`` elements of ``dtype`` (contents undefined) whose data starts on
    a :data:`LINE_BYTES` boundary. NumPy's own allocations start wherever malloc puts them
    (16 bytes past a page boundary for large arrays): the kernels' float64 outputs and
    logits in such scratch straddled cache lines in every 64-byte vector load and store,
    which made the V pass over rows in cache up to 1.6x slower on the Zen 5 host
    (``reference._rows._v_pass``)."""
    dt = np.dtype(dtype)
    buf = np.empty(n * dt.itemsize + LINE_BYTES, dtype=np.uint8)
    start = (-buf.ctypes.data) % LINE_BYTES
    return buf[start : start + n * dt.itemsize].view(dt)


def max_threads() -> int:
    """Rows of scratch that serve any thread count: the size of Numba's pool, fixed when
    Numba is imported (``numba.np.ufunc.parallel.NUM_THREADS``, from
    ``NUMBA_NUM_THREADS``; ``numba.set_num_threads`` cannot go above it, and a worker's
    ``numba.get_thread_id()`` is below the count in use), or ``numba.config``'s value if a
    caller raised it since. Unlike ``numba.get_num_threads()`` these are plain attribute
    reads (the call cost 20-40 us on a cache-cold call on the development host); the rows
    no thread takes are never touched, so they cost address space, not memory."""
    return max(_parallel.NUM_THREADS, numba.config.NUMBA_NUM_THREADS)


#: Call plans kept per Python thread (the oldest is dropped first).
MAX_PLANS = 16


def plans() -> dict:
    """This Python thread's dict of call plans (the planned calls of ``dense_attention`` and
    ``sparq_attention``, docs/sparq.md): per-thread, like the scratch they view, and
    emptied whenever a scratch array is replaced by a larger one."""
    try:
        return _local.plans
    except AttributeError:
        _local.plans = {}
        return _local.plans


def add_plan(key, plan) -> None:
    """Keep ``plan`` under ``key``, dropping the oldest plans beyond :data:`MAX_PLANS`. Call
    it after the plan's scratch views were made (making them can empty the dict)."""
    table = plans()
    while len(table) >= MAX_PLANS:
        del table[next(iter(table))]
    table[key] = plan


def held_bytes() -> int:
    """Bytes of scratch this Python thread holds."""
    return sum(a.nbytes for a in _local.__dict__.get("arrays", {}).values())


def release() -> None:
    """Free this Python thread's scratch and plans (the next kernel call allocates it
    again)."""
    _local.__dict__.pop("arrays", None)
    _local.__dict__.pop("plans", None)
