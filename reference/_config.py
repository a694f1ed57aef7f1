"""The one place where Numba compilation flags, caching and thread count are set.

Every Numba kernel in the package is compiled through :func:`njit_serial` or
:func:`njit_parallel`.  The float64 NumPy twins never go through Numba.

Fast-math flags: only ``reassoc`` (reassociation, which lets LLVM vectorise reductions)
and ``contract`` (fused multiply-add); a few loops whose order is pinned take ``contract``
alone (:data:`FASTMATH_CHAIN`).  Never ``nnan``/``ninf``: the kernels must keep
IEEE semantics for -inf (masked scores) and must not assume NaN-free data.  Tests bound
the difference between the kernels and the float64 twins.

Thread count: ``SPARQ_NUM_THREADS`` in the environment, or :func:`set_num_threads`.
Results never depend on it: kernels ``prange`` over independent (batch, head) rows and
every reduction inside a row is serial.
"""

from __future__ import annotations

import os
import sys

import numba

#: LLVM fast-math flags used by every kernel (reassociation and contraction only).
FASTMATH: frozenset[str] = frozenset({"reassoc", "contract"})

#: Contraction alone, for loops whose sums must run in the written order (so that two
#: loops of different shapes make the same FMAs in the same order): each ``a + b * c``
#: becomes one FMA and nothing is reassociated. Loops over independent elements still
#: vectorise.
FASTMATH_CHAIN: frozenset[str] = frozenset({"contract"})

#: Whether compiled kernels are cached on disk (``SPARQ_NUMBA_CACHE=0`` turns it off).
CACHE: bool = os.environ.get("SPARQ_NUMBA_CACHE", "1") != "0"


def prefetch_locality(cpu_name: str) -> int:
    """The locality of the kernels' software prefetches (``llvm.prefetch``'s third operand)
    on a CPU that LLVM names ``cpu_name``: 3 (x86 ``prefetcht0``, into the L1) on AMD Zen 5
    (``znver5``), 2 (``prefetcht1``, into the L2) on every other CPU.

    Only speed depends on it, never a result. Measured on two 2-vCPU AMD EPYC development
    hosts (8 KV heads, S = 32768, float32, two threads, cache-cold; docs/performance-history.md):
    on Zen 4 a K pass over every row took 3.4 ms with the rows requested into the L2 and 6.2
    ms into the L1 (9.1 ms with no software prefetch), over 4096 gathered rows per KV head
    1.8 against 3.0 ms (2.4 ms with none): requests into the L1 hold the core's few L1 miss
    buffers. On Zen 5 the L1 form was the faster one (a copy of the gathered rows 1.19-1.26
    ms against 1.37-1.45 ms; SparQ's step 3 0.52-0.59 against 0.58-0.71 ms). CPUs measured
    on neither get the L2 form. The compiled kernels are cached per CPU name, so the choice
    and the cache agree."""
    return 3 if cpu_name == "znver5" else 2


def _host_cpu_name() -> str:
    """The CPU that Numba compiles for: ``NUMBA_CPU_NAME`` if set, else the host's."""
    if numba.config.CPU_NAME:
        return numba.config.CPU_NAME
    from llvmlite import binding

    return binding.get_host_cpu_name()


def cpu_features(llvm=None) -> frozenset:
    """The CPU features Numba compiles for, as LLVM names them (``"+avx512f"``, ...): those
    named with ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` when a CPU is named, else
    ``NUMBA_CPU_FEATURES`` or the host's (``llvm``: the ``llvmlite.binding`` module to ask,
    by default the real one)."""
    if numba.config.CPU_NAME:  # compiling for a named CPU: only the features named with it
        feats = numba.config.CPU_FEATURES or ""
    else:
        if llvm is None:
            from llvmlite import binding as llvm
        feats = numba.config.CPU_FEATURES or llvm.get_host_cpu_features().flatten()
    return frozenset(f for f in feats.split(",") if f)


#: :func:`prefetch_locality` of the CPU the kernels compile for (fixed at import).
PREFETCH_LOCALITY: int = prefetch_locality(_host_cpu_name())


def gather_requests(cpu_name: str) -> int:
    """How many times SparQ's passes over its kept rows request each row before reading it
    (``reference._rows.prefetch_ahead``) on a CPU that LLVM names ``cpu_name``: 4 on AMD
    Zen (``znver*``), 1 on every other CPU.

    Only speed depends on it, never a result. Measured with the exact attention over 4096
    or 2048 sorted kept rows of 32768 per KV head (8 KV heads, float32, two threads, rows
    requested 16 rows ahead, best of 11; docs/performance-history.md): on the Zen 4
    host the repeated requests make up for requests the core drops when its miss buffers
    are full (cache-cold: 2.10 against 2.40 ms at 4096 rows, 1.45 against 1.74 ms at
    2048); on an Intel Xeon (Emerald Rapids, ``emeraldrapids``) the two were even
    cache-cold (4.16 against 4.14 ms, 2.17 against 2.19 ms) and the single request faster
    with the rows in its 300 MiB L3 (3.17 against 3.69 ms, 1.37 against 1.70 ms): every
    request is an instruction, whether or not it goes out. AMD Zen CPUs other than Zen 4
    get four requests too (not measured); other CPUs measured on neither get one. The
    compiled kernels are cached per CPU name, so the choice and the cache agree."""
    return 4 if cpu_name.startswith("znver") else 1


#: :func:`gather_requests` of the CPU the kernels compile for (fixed at import).
GATHER_REQUESTS: int = gather_requests(_host_cpu_name())

#: Locality of the nearest of a kept row's requests when there are several
#: (:data:`GATHER_REQUESTS` > 1; ``reference._rows.prefetch_ahead``): 3, into the L1. The
#: farther requests keep :data:`PREFETCH_LOCALITY`. Only speed depends on it, never a
#: result. On the Zen 4 development host, whose other requests go into the L2, the row is
#: then in the L1 when the pass reads it (the likely reason it helps: the pass's loads of
#: rows in the L2 need L1 miss buffers, which the farther requests hold while they wait on
#: memory). Step 7 over the kept rows of 8 KV heads (S = 32768, float32, two threads,
#: cache-cold, both forms in one process, best / median of 31) took 1.92 / 2.03 against
#: 2.10 / 2.29 ms at ``k = 4096`` and 1.26 / 1.39 against 1.33 / 1.45 ms at 2048; whole
#: SparQ calls (K twice, ``v_mean`` supplied, round-robin, best of 21, three processes)
#: 0.93-0.96 of their time at ``k = S/8`` and 0.96-0.97 at ``S/16``. In a later, slower
#: and noisier sitting, against the kernels before it in one process, step 7 took
#: 0.92-0.96 of its time at 4096 and 0.97-0.99 at 2048 (best of 31), and whole calls
#: 0.87-1.08 (best of 21-31, five processes; medians 0.92-1.09): a few per cent. Two of
#: the four requests into the L1 measured about the same, three slower; the distances 12
#: and 24 instead of 16 no faster (docs/performance-history.md). On Zen 5 every request
#: already goes into the L1.
GATHER_NEAR_LOCALITY: int = 3


def njit_serial(func=None, **kw):
    """``numba.njit`` with the project's flags, for serial row functions."""
    opts = {"fastmath": set(FASTMATH), "cache": CACHE, "nogil": True, **kw}
    if func is None:
        return lambda f: numba.njit(**opts)(f)
    return numba.njit(**opts)(func)


def njit_parallel(func=None, **kw):
    """``numba.njit(parallel=True)`` with the project's flags, for kernels over rows."""
    opts = {"fastmath": set(FASTMATH), "cache": CACHE, "nogil": True, "parallel": True, **kw}
    if func is None:
        return lambda f: numba.njit(**opts)(f)
    return numba.njit(**opts)(func)


_compile_noted = False
#: Dispatchers known to need no compilation in this process (compiled, or in the disk
#: cache): checked once each, since a file-system lookup per call cost tens of microseconds
#: on a cache-cold call.
_ready: set = set()


def note_first_compile(*dispatchers) -> None:
    """Say once per process, on stderr, that the kernels are about to compile.

    Called by the public entry points before their first kernel call: when one of
    ``dispatchers`` has no compiled signature in this process and no index file in the
    on-disk cache (or caching is off), the first call compiles for 10-20 s, and a silent pause
    of that length looks like a hang. ``SPARQ_QUIET=1`` turns the note off."""
    global _compile_noted
    if _compile_noted:
        return
    for disp in dispatchers:
        if disp in _ready:
            continue
        if disp.signatures:
            _ready.add(disp)
            continue
        cache = getattr(disp, "_cache", None)
        index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
        if CACHE and index is not None and os.path.exists(index):
            _ready.add(disp)
            continue
        _compile_noted = True
        if os.environ.get("SPARQ_QUIET", "") not in ("", "0"):
            return
        where = "cached on disk afterwards" if CACHE else "the disk cache is off"
        print(
            f"sparq-reference: compiling the Numba kernels once (about 20 s; {where})",
            file=sys.stderr,
            flush=True,
        )
        return


def set_num_threads(n: int) -> None:
    """Set the number of Numba threads used by the parallel kernels."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"num_threads: expected a positive int, got {n!r}")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def get_num_threads() -> int:
    """Number of Numba threads the parallel kernels use now."""
    return numba.get_num_threads()


def _threads_from_env(value: str | None) -> int | None:
    """``SPARQ_NUM_THREADS`` as a positive int (unset or empty: None); anything else is a
    ValueError naming the variable (raised when the package is imported)."""
    if value is None or value.strip() == "":
        return None
    try:
        n = int(value.strip(), 10)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(
            f"SPARQ_NUM_THREADS: expected a positive integer (the number of threads), got {value!r}"
        )
    return n


_env_threads = _threads_from_env(os.environ.get("SPARQ_NUM_THREADS"))
if _env_threads is not None:
    set_num_threads(_env_threads)
