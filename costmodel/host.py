"""Host model of this package's CPU reference kernels (``reference.dense`` / ``reference.sparq``).

The GPU-style model of :mod:`costmodel.estimate` prices a well-tuned kernel sequence; this
one predicts the time of the package's own Numba reference, which reads the caches in their
own dtype, widens each element to float64, accumulates in float64, evaluates ``exp`` with
``reference._vexp.exp_nonpos_into`` (SparQ's softmax sums, which add the terms up without storing
them, with ``reference._vexp.exp_nonpos_sum``), selects with
``reference.selection.topk_set_into`` (the k largest, then listed in index order) and
splits its work over ``threads`` threads by (batch, KV head) row (dense: by parts of rows).
It needs a profile with
the host fields that :func:`costmodel.hardware.measure_host` writes (:data:`HOST_FIELDS`,
plus ``mem_bandwidth_bytes_per_s`` and ``topk_bytes_per_s``; ``gather256_bytes_per_s``
where present, see :func:`gather_rate`, and ``sweep_fma_per_s``, ``attend_fma_per_s``,
``attend1_fma_per_s`` and ``exp_sum_per_s`` where present, see below); every rate is
divided by the profile's ``threads`` (one thread's share of the all-thread measurement).
At fewer working threads than the profile's, a thread's share of the read, of the gathers
and of the in-core rates is larger where the profile has what one thread reaches
(``thread_bandwidth_bytes_per_s``, ``thread_gather_bytes_per_s``, ``thread_fma_per_s``):
:func:`thread_gain`.

Per (batch, KV head) row, with ``g = H / Hkv`` query heads and ``e`` bytes per cached
element, a phase has a read (bytes at the streaming or the gather rate), in-core work (FMAs
at the FMA rate and elements widened at the widen rate of the cache dtype, float64 needs no
widening: ``max(fma, widen) + (1 - omega) * min(fma, widen)``, ``omega`` the profile's
measured widen/FMA overlap of the cache dtype, :func:`widen_overlap`, 0 where the profile
has none) and work in loops of its own
(exps, divisions, the top-k). It costs

    max(read, core) + (1 - overlap) * min(read, core) + exps + divisions + top-k

where ``overlap`` is the profile's measured ``stream_fma_overlap`` for phases that stream
what they feed to the FMAs in the same loop (dense's K and V passes, the mean of V, SparQ's
step 1 with K stored twice, whose sweeps read ``r`` rows of the d-major copy with
prefetches spread through the FMAs), its measured ``gather_fma_overlap`` for SparQ's passes
over the kept rows (read in place, each requested ahead, four times on AMD Zen, the
nearest request into the L1, and once elsewhere; ``stream_fma_overlap`` where the profile
has no ``gather_fma_overlap``: :func:`gather_overlap`), and 0 for the
others: step 1 with K stored once (``r`` elements gathered
from each S-major row into a block first) and the group score (adds of logits in cache).
Phases run one after another; SparQ's ``rows = B * Hkv`` rows are dealt to ``threads``
threads in ``ceil(rows / threads)`` waves (fewer rows than threads leave threads idle), and
each call adds its measured fixed cost (``dense_call_s`` / ``sparq_call_s``): ``time =
n_layers * (waves * sum(phase times of one row) + call)``. Dense splits each row into
``parts = ceil(S / P)`` parts of at most ``P = reference.dense.DENSE_PART`` = 4096 positions
(the threads' items, the last part of a row shorter); the items go to the threads in
contiguous runs of nearly equal count, as Numba's parallel loop deals them, and the call
takes the busiest run's positions over ``S`` times a row's phase times (a row's phase
times are proportional to ``S``): the longest run, ``waves = ceil(items / threads)``
items, less the short last parts it must hold. For SparQ, and for dense with ``S`` a
multiple of ``P``, that is ``waves`` items' worth.

Dense: ``k_pass`` and ``v_pass`` (``S*d*e`` streamed, ``S*d`` widened, ``g*S*d`` FMAs each,
for float32 and float16 caches the heads in blocks of four no faster than the same passes
on rows in cache with dense's row requests where the profile has ``dense_fma_per_s``,
``dense_f16_fma_per_s``, and the ``g % 4`` heads left over no faster than the one-head
passes, ``dense1_fma_per_s``, ``dense1_f16_fma_per_s``; the ``g*S``
float64 logits written by the first and read by the second, ``g*S*8``), ``softmax`` (``g*S``
exps at ``exp_per_s``; the logits read back, one streaming read of ``g*S*8``).

SparQ (exact top-k, one selection per KV head): with K stored twice, ``kt_check`` (the
``k_cache_t`` spot check of ``sparq_attention``: ``reference.sparq.KT_SPOT_CHECKS`` = 64
positions per row in runs of ``L = reference.sparq.KT_SPOT_RUN`` = 16 consecutive ones; a
run reads ``d`` segments of the d-major copy, ``max(T, L*e)`` bytes each (at least one line
of ``T`` bytes; ``S*e`` bytes apart, each priced as a gathered row of its own at the gather
rate of its size, :func:`gather_rate`), and ``L`` consecutive K rows, ``max(T, L*d*e)``
bytes, priced as one gathered row, at most at the streaming rate); ``step1`` (``r*S*e``
streamed from the d-major copy, or ``S*d*e`` from the S-major cache, whose rows the kernel
prefetches whole, plus the ``g*S*8`` bytes of float64 approximate logits it writes; ``r*S``
widened, ``g*r*S`` FMAs, ``g*r`` divisions of the kept query components by the temperature;
where the profile has ``sweep_fma_per_s``, the FMAs are priced at it, which measures the
kernel's sweeps with their widening, their accumulators and the logits' writes on rows in
cache, in place of the FMA and widen rates; and the softmax normalisers, ``g*S`` exps, which
the kernel takes segment by segment of 4096 positions while the logits are in cache and sums
without storing them, priced at ``exp_sum_per_s``, the rate of
``reference._vexp.exp_nonpos_sum``, where the profile has it, else at ``exp_per_s``; with K
stored once also the ``r*S`` elements the kernel copies out of the rows one at a time and
widens in blocks before its sweeps, at ``column_copy_per_s`` where the profile has it: the
copy is the loop that reads the rows, so the read takes the longer of the two);
``group_score`` (``g*S`` adds priced as FMAs and no read: the kernel sums each block of
logits in step 1's loop while the block is in cache, for ``g`` a multiple of 4 in the pass
that copies the block out, which ``sweep_fma_per_s`` measures with the sweeps, so nothing
more where the profile has it; with a mask or the group score of probabilities it reads them
back, which the model does not price); ``topk`` (``8*S`` bytes of float64 scores at
``topk_bytes_per_s``); ``alpha`` (``g*k`` exps, summed as step 1's normalisers are and
priced at the same rate); ``gather_k`` and ``gather_v`` (the kept rows read in place,
``k*d*e`` bytes each at the gather rate of ``d*e``-byte rows, :func:`gather_rate`, each
requested a few rows ahead (four times on AMD Zen, the nearest request into the L1, once
elsewhere) in the loop of the FMAs, so with the gathers' overlap credit; ``k*d`` widened,
``g*k*d`` FMAs, no faster than the same passes on rows in cache: the FMAs of the heads in
blocks of four at ``attend_fma_per_s`` (cache dtypes other than float64) and those of the
``g % 4`` heads left over (the kernel's one-head path) at ``attend1_fma_per_s`` (float32
caches: 16-bit rows take other code), each term where the profile has its rate, as measured:
``max(FMAs and widening at their rates, the sum of those terms)``); ``gather_softmax``
(``g*k`` exps, stored, at ``exp_per_s``) and, unless the caller supplies ``v_mean``,
``v_mean`` (``S*d*e`` streamed, ``S*d`` widened, ``S*d`` adds priced as FMAs).

docs/costmodel.md (section 9) has the measurements behind each term and where the model
and the kernels still differ.
"""

from __future__ import annotations

import math
import numbers

from costmodel._tomlio import check_real
from costmodel.estimate import (
    Estimate,
    StepEstimate,
    _assemble,
    _flag,
    _head_dim,
    _method,
    _resolve_hw,
    _size,
)
from costmodel.hardware import Hardware
from costmodel.traffic import (
    Step,
    Traffic,
    _check_rk,
    dtype_bytes,
    transfers,
)
from reference.dense import DENSE_PART
from reference.sparq import KT_SPOT_CHECKS, KT_SPOT_RUN

__all__ = [
    "HOST_FIELDS",
    "REFERENCE_METHODS",
    "gather_overlap",
    "gather_rate",
    "in_core_time",
    "predict_reference",
    "thread_gain",
    "threads_bandwidth",
    "reference_dtype_bytes",
    "widen_overlap",
]

#: profile fields the host model needs besides mem_bandwidth_bytes_per_s, topk_bytes_per_s
HOST_FIELDS = (
    "threads",
    "fma_f64_per_s",
    "exp_per_s",
    "gather_bytes_per_s",
    "div_f64_per_s",
    "widen_f32_per_s",
    "widen_f16_per_s",
    "widen_bf16_per_s",
    "stream_fma_overlap",
    "dense_call_s",
    "sparq_call_s",
)

#: the profile's widen rate of each cache dtype the reference reads (float64: none needed)
WIDEN_FIELD = {
    "float32": "widen_f32_per_s",
    "float16": "widen_f16_per_s",
    "bfloat16": "widen_bf16_per_s",
    "float64": None,
}

#: methods the reference implements and the host model prices
REFERENCE_METHODS = ("dense", "sparq")

_FLOAT64_NAMES = ("float64", "fp64", "double")


def reference_dtype_bytes(dtype: str) -> tuple[str, int]:
    """Canonical name and bytes per element of a cache dtype the reference reads: float16,
    bfloat16, float32 or float64 (aliases as :func:`costmodel.traffic.dtype_bytes`, and
    fp64 / double); ``ValueError`` for any other (the reference reads no other dtype, so the
    host model has no widen rate for it)."""
    if isinstance(dtype, str) and dtype.lower() in _FLOAT64_NAMES:
        return "float64", 8
    try:
        name, e = dtype_bytes(dtype)
    except ValueError:
        name = None
    if name not in WIDEN_FIELD:
        raise ValueError(
            f"dtype: expected float16, bfloat16, float32 or float64 (the cache dtypes the "
            f"reference reads), got {dtype!r}"
        )
    return name, e


def _check_host_profile(hw: Hardware) -> None:
    missing = [f for f in HOST_FIELDS if getattr(hw, f) is None]
    if missing:
        raise ValueError(
            f"profile {hw.name!r} has no {missing}: the host model of the reference kernels "
            "needs a measured host profile (costmodel.hardware.measure_host, or "
            "'sparq hardware measure --save FILE')"
        )


def _phase(
    name: str,
    *,
    bytes_row: float = 0.0,
    bandwidth: float | None = None,
    fma_row: float = 0.0,
    widen_row: float = 0.0,
    exps_row: float = 0.0,
    div_row: float = 0.0,
    topk_bytes_row: float = 0.0,
    copy_row: float = 0.0,
    overlap: str | None = "stream",
    sweep: bool = False,
    attend: bool = False,
    exp_sum: bool = False,
    priced_as: str,
    note: str,
) -> dict:
    return dict(
        sweep=sweep,
        attend=attend,
        exp_sum=exp_sum,
        name=name,
        bytes_row=float(bytes_row),
        bandwidth=bandwidth,
        fma_row=float(fma_row),
        widen_row=float(widen_row),
        exps_row=float(exps_row),
        div_row=float(div_row),
        topk_bytes_row=float(topk_bytes_row),
        copy_row=float(copy_row),
        overlap=overlap,
        priced_as=priced_as,
        note=note,
    )


def gather_overlap(hw: Hardware) -> float:
    """The profile's measured ``gather_fma_overlap``; its ``stream_fma_overlap`` where it has
    none (profiles measured before the gathers' overlap was)."""
    g = hw.gather_fma_overlap
    return float(hw.stream_fma_overlap if g is None else g)


#: the profile's widen/FMA overlap of each 16-bit cache dtype (else ``widen_fma_overlap``)
WIDEN_OVERLAP_FIELD = {
    "float16": "widen_f16_fma_overlap",
    "bfloat16": "widen_bf16_fma_overlap",
}


def widen_overlap(hw: Hardware, dtype: str = "float32") -> float:
    """The profile's measured widen/FMA overlap of ``dtype``'s elements: its
    ``widen_f16_fma_overlap`` / ``widen_bf16_fma_overlap`` for float16 / bfloat16 where it
    has one, else its ``widen_fma_overlap`` (measured with float32), else 0 (the two add
    up)."""
    field = WIDEN_OVERLAP_FIELD.get(dtype)
    v = None if field is None else getattr(hw, field)
    if v is None:
        v = hw.widen_fma_overlap
    return 0.0 if v is None else float(v)


def in_core_time(fma_s: float, widen_s: float, widen_fma_overlap: float) -> float:
    """In-core time of a loop that widens elements and feeds them to FMAs: the longer of the
    two plus the part of the shorter that the host does not hide behind it,
    ``max + (1 - widen_fma_overlap) * min``."""
    return max(fma_s, widen_s) + (1.0 - widen_fma_overlap) * min(fma_s, widen_s)


def _busiest_share(rows: int, parts: int, S: int, part: int, threads: int) -> float:
    """Rows' worth of work of the busiest thread: ``n = rows * parts`` items (the parts of
    each row: ``parts - 1`` of ``part`` positions and a last one of the rest; ``parts`` 1:
    whole rows) dealt to ``threads`` threads in contiguous runs of nearly equal count, the
    longest ``c = ceil(n / threads)`` items. A run of ``c`` consecutive items holds at least
    ``c // parts`` last parts, so it has at most ``c * part - (c // parts) * (part - last)``
    positions (exact where a run of ``c`` starts at a row's first part, as the first run
    does); that over ``S``."""
    if parts == 1:
        part = S
    last = S - (parts - 1) * part
    c = -(-(rows * parts) // threads)
    return (c * part - (c // parts) * (part - last)) / S


def threads_bandwidth(total: float, one: float | None, threads: int, profile_threads: int) -> float:
    """Bytes per second that ``threads`` threads read (or gather) together, from a rate
    ``total`` measured on all ``profile_threads`` threads and a rate ``one`` measured on
    one thread.

    The line between the two measurements, ``B(n) = one + (n - 1) * (total - one) /
    (profile_threads - 1)``, at most ``total`` and at least the linear share ``n * total /
    profile_threads``; ``total`` at ``threads >= profile_threads`` (more threads than
    measured share the measured rate); the linear share ``threads * total /
    profile_threads`` when ``one`` is None.

    Why a line: on the 2-vCPU development host it is the two points (one thread read
    24.6-28.9 GB/s where both read 32-55). On a 16-vCPU Intel Xeon (one thread 10.4-17.9
    GB/s, sixteen 104-147 GB/s) the streaming read grew about linearly with the threads in
    one lease and saturated by eight threads in another, so no law fits both. Over four
    thread-scaling tables there (1 to 16 threads, 64 calls each of dense and SparQ) the line
    came within 20% of 35 dense and 49 SparQ calls (the line taken at the threads that
    work, as :func:`predict_reference` takes it); a cap of ``n`` times the one-thread rate,
    ``min(total, n * one)``, of 34 and 27; the linear share of 29 and 46
    (docs/performance-history.md, "Runs since 16af767").

    Raises ValueError naming the argument: ``total`` not a finite number > 0, ``one`` not
    None or a finite number > 0, ``threads`` or ``profile_threads`` not an int >= 1."""
    total = check_real("total", total)
    if one is not None:
        one = check_real("one", one)
    threads = _size("threads", threads)
    profile_threads = _size("profile_threads", profile_threads)
    share = min(threads, profile_threads) * total / profile_threads
    if one is None or threads >= profile_threads:
        return share
    line = one + (threads - 1) * (total - one) / (profile_threads - 1)
    return max(min(total, line), share)


def thread_gain(total: float, one: float | None, threads: int, profile_threads: int) -> float:
    """How much faster each of ``threads`` working threads reads than its share ``total /
    profile_threads`` of the all-thread rate: ``threads_bandwidth(...) / threads`` over
    that share (1 with ``one`` None and at ``threads >= profile_threads``). Arguments and
    errors as :func:`threads_bandwidth`."""
    both = threads_bandwidth(total, one, threads, profile_threads)
    return max(1.0, both * profile_threads / (threads * total))


def gather_rate(hw: Hardware, row_bytes: float) -> float:
    """Bytes per second (all threads) of random gathers of ``row_bytes``-byte rows.

    A gathered row costs a fixed time (its misses' latency, whatever its length) plus a time
    per byte: ``t(b) = a + c*b``, the line through the profile's two measured row sizes,
    ``t(512) = 512 / gather_bytes_per_s`` and ``t(256) = 256 / gather256_bytes_per_s``, so
    ``a = 2 t(256) - t(512)`` (at least 0) and ``c = (t(512) - a) / 512``; the rate is
    ``b / t(b)``. On the development host the two rates were 29.4 and 23.3 GB/s, and the
    line gives 16.5 GB/s for 128-byte rows, measured 16.1-16.7. Where the 256-byte rows
    took longer each than the 512-byte ones (``c < 0``: noise on a latency-bound host), a
    row costs at least ``t(512)`` and at most ``t(256)`` (the line between the two sizes,
    flat outside them), so that no size is priced at a negative or an unbounded rate.
    Without ``gather256_bytes_per_s``: ``gather_bytes_per_s`` for every row size."""
    g512 = hw.gather_bytes_per_s
    if g512 is None:
        raise ValueError(
            f"hardware: profile {hw.name!r} has no gather_bytes_per_s (a measured host has:"
            " costmodel.hardware.measure_host)"
        )
    if isinstance(row_bytes, bool) or not (isinstance(row_bytes, numbers.Real) and row_bytes > 0):
        raise ValueError(f"row_bytes: expected a number > 0, got {row_bytes!r}")
    g256 = hw.gather256_bytes_per_s
    if g256 is None:
        return g512
    t512 = 512.0 / g512
    t256 = 256.0 / g256
    a = max(0.0, 2.0 * t256 - t512)
    c = (t512 - a) / 512.0
    t = a + c * row_bytes
    if c < 0.0:
        t = min(max(t, t512), t256)
    return row_bytes / t


def predict_reference(
    method: str,
    *,
    hardware: Hardware | str,
    batch: int,
    n_heads: int,
    n_kv_heads: int | None = None,
    seq_len: int,
    head_dim: int,
    dtype: str = "float16",
    r: int | None = None,
    k: int | None = None,
    store_k_twice: bool = False,
    v_mean_supplied: bool = False,
    threads: int | None = None,
    n_layers: int = 1,
) -> Estimate:
    """Predicted time of one call of the package's CPU reference kernel on a measured host.

    Parameters
    ----------
    method : {"dense", "sparq"}
        ``reference.dense_attention`` or ``reference.sparq_attention`` (exact top-k, one
        selection per KV head shared by its query heads).
    hardware : Hardware or str
        A profile with the host fields (:data:`HOST_FIELDS`), e.g. from
        :func:`costmodel.hardware.measure_host` or a TOML file it saved.
    batch, n_heads, n_kv_heads, seq_len, head_dim : int
        ``B``, ``H``, ``Hkv`` (default ``H``; ``H % Hkv == 0``), ``S``, ``d``.
    dtype : str
        Dtype of the K/V caches as stored (float16, float32, float64): bytes read per
        element. Arithmetic is float64 whatever the dtype.
    r, k : int
        SparQ components and positions (``1 <= r <= d``, ``1 <= k <= S``).
    store_k_twice : bool
        (SparQ only; ignored for dense, as in :func:`costmodel.estimate.estimate_attention`.)
        SparQ step 1 reads ``r`` contiguous rows of a d-major copy of K (streaming) instead
        of ``r`` scattered elements of every row of the S-major cache (default: the
        reference's ``(B, Hkv, S, d)`` cache).
    v_mean_supplied : bool
        SparQ: the caller passes ``v_mean``, so V is not read in full for its mean.
    threads : int, optional
        Threads the kernel runs on (default: the profile's ``threads``). Rates are per
        thread (profile rate / profile ``threads``); fewer threads than the profile's use
        that per-thread share each (linear scaling), except the read and the gathers where
        the profile has what one thread reaches (``thread_bandwidth_bytes_per_s``,
        ``thread_gather_bytes_per_s``, which ``measure_host`` writes): then the threads
        that work together read at the line between the one-thread and the all-thread
        rates, each at least its share (:func:`thread_gain`); every in-core rate scales on
        the FMA loop's line the same way (``thread_fma_per_s``).
    n_layers : int
        Identical calls one after another.

    Returns
    -------
    Estimate
        ``kernels`` holds one :class:`~costmodel.estimate.StepEstimate` per phase (in
        order), the last one ``call`` (the fixed cost, in ``latency_s``); ``traffic`` one
        :class:`~costmodel.traffic.Step` per phase with totals over all rows and layers
        (``flops`` = 2 x FMAs; ``priced_as`` is ``"memory"``, ``"gather"``, ``"exp"``,
        ``"topk"`` or ``"latency"``). A phase's ``memory_s`` is its read, ``compute_s`` its
        in-core work plus exps and divisions, ``time_s`` as in the module docstring (the
        read and the in-core work overlapped by ``stream_fma_overlap`` or, over kept rows,
        :func:`gather_overlap`, where it applies).
        ``params`` holds the configuration, ``rows``, ``parts`` (per row), ``waves``, the
        per-thread rates, the overlap and each phase's per-row counts (``phases``: bytes,
        FMAs, widened elements, exps, divisions).

    Raises
    ------
    TypeError, ValueError
        Naming the argument: sizes and ``threads`` ints in ``[1, MAX_SIZE]``
        (``head_dim <= MAX_HEAD_DIM``), ``store_k_twice`` and ``v_mean_supplied`` real bools.
    """
    method = _method("method", method)
    store_k_twice = _flag("store_k_twice", store_k_twice)
    v_mean_supplied = _flag("v_mean_supplied", v_mean_supplied)
    hw = _resolve_hw(hardware)
    if method not in REFERENCE_METHODS:
        raise ValueError(
            f"method: expected one of {list(REFERENCE_METHODS)} for the reference kernels, "
            f"got {method!r}"
        )
    _check_host_profile(hw)
    S = _size("seq_len", seq_len)
    d = _head_dim(head_dim)
    B = _size("batch", batch)
    H = _size("n_heads", n_heads)
    Hkv = H if n_kv_heads is None else _size("n_kv_heads", n_kv_heads)
    L = _size("n_layers", n_layers)
    if H % Hkv:
        raise ValueError(f"n_heads ({H}): expected a multiple of n_kv_heads ({Hkv})")
    T = int(hw.threads) if threads is None else _size("threads", threads)
    dname, e = reference_dtype_bytes(dtype)
    g = H // Hkv
    if method == "dense":
        if r is not None or k is not None:
            raise ValueError("r and k do not apply to method 'dense' (got r or k)")
    else:
        r, k = _check_rk(S, d, r, k, need_r=True, need_k=True)

    T_prof = int(hw.threads)
    bw = hw.mem_bandwidth_bytes_per_s * hw.mem_efficiency
    gbw = hw.gather_bytes_per_s
    rbw = None  # SparQ's kept rows of K and V: d*e bytes each, at gather_rate (below)
    rows = B * Hkv
    # dense splits each row into parts of DENSE_PART positions, the threads' items; SparQ
    # deals whole rows
    parts = math.ceil(S / DENSE_PART) if method == "dense" else 1
    waves = math.ceil(rows * parts / T)
    share = _busiest_share(rows, parts, S, DENSE_PART, T)

    if method == "dense":
        # the g*S float64 logits of a row are written by the K pass, turned into weights by
        # the softmax and read by the V pass: priced as traffic at the streaming rate, as
        # SparQ's approximate logits are (without it the model overpredicted dense float32
        # at Hkv = 8, S >= 32768, in the slow memory state: pred/meas 0.72-0.80 in two full
        # runs of the benchmark, 0.79-0.88 with it). Measured with whole rows (1 MB of
        # logits at g = 4, S = 32768); the kernel's parts of 4096 positions now keep 128 KiB
        # at a time, which may stay in the L2. Kept: in the first rows-only run with the
        # parts on the development host the model came within 0.88-1.03 of all 8 dense rows
        # by round (0.87-1.13 best against best).
        lg = g * S * 8
        # the passes' in-cache rate with dense's row requests (dense_fma_per_s) was measured
        # with float32 rows and four heads, and binds dense's float32 passes of the heads in
        # blocks of four (on the Zen 5 host the passes ran at about 60% of the FMA loop, and
        # dense float32 measured 0.79-0.88 of its time without it); float16 rows have their
        # own rate (dense_f16_fma_per_s: without it the model put dense float16 at Hkv = 8,
        # in-core-bound, at 0.73-0.79 of its time in two of five rows-only runs on the Zen 5
        # host); the heads left over from the blocks take other code, priced at the one-head
        # rates (dense1_fma_per_s, dense1_f16_fma_per_s); bfloat16 rows keep the FMA and
        # widen rates (dense_t and dense1_t below are None for them)
        phases = [
            _phase(
                "k_pass", bytes_row=S * d * e + lg, bandwidth=bw, fma_row=g * S * d,
                widen_row=S * d, attend=True, priced_as="memory",
                note="read K: S*d*e streamed, g*S*8 of float64 logits written; S*d widened; "
                "g*S*d FMAs (q.k); float32 or float16 rows no faster than the same pass on rows "
                "in cache (dense_fma_per_s, dense_f16_fma_per_s; one head: dense1_*)",
            ),
            _phase(
                "softmax", bytes_row=lg, bandwidth=bw, exps_row=g * S, overlap=None,
                priced_as="exp",
                note="g*S exps (exp_per_s); the logits read back, one streaming read (g*S*8)",
            ),
            _phase(
                "v_pass", bytes_row=S * d * e + lg, bandwidth=bw, fma_row=g * S * d,
                widen_row=S * d, attend=True, priced_as="memory",
                note="read V: S*d*e streamed, the g*S*8 of weights read; S*d widened; g*S*d "
                "FMAs (p*v); float32 or float16 rows no faster than the same pass on rows in "
                "cache (dense_fma_per_s, dense_f16_fma_per_s; one head: dense1_*)",
            ),
        ]  # fmt: skip
    else:
        tx = hw.mem_transaction_bytes
        rbw = gather_rate(hw, d * e)
        # step 1 reads r rows of the d-major copy (K twice) or every S-major row (K once),
        # and writes the g*S float64 approximate logits; the rest is the same either way
        if store_k_twice:
            k_read = r * S * e
            how = (
                "r contiguous rows of the d-major K copy: r*S*e streamed (read in the loop "
                "of the FMAs, its prefetches spread through it: overlap credit as dense's "
                "passes)"
            )
        else:
            k_read = S * d * e
            how = (
                "r scattered columns of every S-major K row, each row prefetched whole (every "
                "line) a few rows ahead: S*d*e streamed (gathered r elements at a time: no "
                "overlap credit)"
            )
        step1 = _phase(
            "step1", bytes_row=k_read + g * S * 8, bandwidth=bw, fma_row=g * r * S,
            widen_row=r * S, div_row=g * r, exps_row=g * S,
            copy_row=0 if store_k_twice else r * S,
            overlap="stream" if store_k_twice else None, sweep=True, exp_sum=True,
            priced_as="memory",
            note=(
                f"{how} and g*S*8 of float64 logits written; r*S widened; g*r*S FMAs (at the "
                "profile's sweep_fma_per_s, the sweeps with their widening and the logits' "
                "writes, where it has one); g*r divisions of the kept query components by "
                "tau; and the softmax normalisers, g*S exps, segment by segment, summed "
                "without being stored (at exp_sum_per_s where the profile has it)"
                + ("" if store_k_twice else "; the r*S elements copied out of the rows one "
                   "at a time and widened in blocks before the sweeps (at column_copy_per_s "
                   "where the profile has it)")
            ),
        )  # fmt: skip
        phases = []
        if store_k_twice:
            run = KT_SPOT_RUN
            n_runs = KT_SPOT_CHECKS // run
            # each of a run's d segments of the d-major copy lies S*e bytes from the next: a
            # gathered row of its own (at least a line), at the gather rate of its size; the
            # run's K rows are one contiguous stretch, gathered as one row
            seg = max(tx, run * e)
            krows = max(tx, run * d * e)
            kt_bytes = n_runs * (d * seg + krows)
            # (the run's K rows, 2-16 KiB in one stretch, no faster than the streaming read)
            krate = min(gather_rate(hw, krows), bw)
            kt_s = n_runs * (d * seg / gather_rate(hw, seg) + krows / krate)
            phases.append(
                _phase(
                    "kt_check", bytes_row=kt_bytes, bandwidth=kt_bytes / kt_s,
                    priced_as="gather",
                    note=(
                        f"k_cache_t spot check: {n_runs} runs of {run} consecutive positions, "
                        f"each d segments of the d-major copy (max(T, {run}*e) B, T={tx}: at "
                        f"least a line each; S*e bytes apart, each gathered as a row of its "
                        f"own) and {run} consecutive K rows (max(T, {run}*d*e) B, gathered as "
                        "one row, at most at the streaming rate), at the gather rate of each "
                        "size"
                    ),
                )
            )  # fmt: skip
        # (the kernel copies out four heads' block of logits and adds them to the group
        # score in one pass, which the sweep microkernel times with the sweeps)
        in_sweep = hw.sweep_fma_per_s is not None and g % 4 == 0
        phases += [
            step1,
            _phase(
                "group_score", fma_row=0 if in_sweep else g * S, overlap=None,
                priced_as="memory",
                note=(
                    "group score: g*S adds of the float64 approximate logits, which the "
                    "kernel makes block by block in step 1's loop, while the block is in "
                    "cache: no read of its own; "
                    + (
                        "for g a multiple of 4 in the pass that copies each block's logits "
                        "out, which sweep_fma_per_s measures: nothing more"
                        if in_sweep
                        else "priced as FMAs"
                    )
                ),
            ),
            _phase(
                "topk", topk_bytes_row=8 * S, priced_as="topk",
                note=(
                    f"exact top-{k} of one row of S float64 scores, listed in index order: "
                    "8*S bytes (topk rate)"
                ),
            ),
            _phase(
                "alpha", exps_row=g * k, exp_sum=True, priced_as="exp",
                note=(
                    "softmax mass on the kept positions: g*k exps, summed without being "
                    "stored (at exp_sum_per_s where the profile has it)"
                ),
            ),
            _phase(
                "gather_k", bytes_row=k * d * e, bandwidth=rbw, fma_row=g * k * d,
                widen_row=k * d, overlap="gather", attend=True, priced_as="gather",
                note=(
                    "k rows of K read in place (k*d*e at the gather rate of d*e-byte rows, "
                    "each requested ahead in the loop of the FMAs: the "
                    "gathers' overlap credit), "
                    "k*d widened, g*k*d FMAs (no faster than the step's passes on rows in "
                    "cache: attend_fma_per_s for blocks of four heads, attend1_fma_per_s "
                    "for the heads left over, where the profile has them)"
                ),
            ),
            _phase("gather_softmax", exps_row=g * k, priced_as="exp", note="g*k exps"),
            _phase(
                "gather_v", bytes_row=k * d * e, bandwidth=rbw, fma_row=g * k * d,
                widen_row=k * d, overlap="gather", attend=True, priced_as="gather",
                note=(
                    "k rows of V read in place (k*d*e at the gather rate of d*e-byte rows, "
                    "each requested ahead in the loop of the FMAs: the "
                    "gathers' overlap credit), "
                    "k*d widened, g*k*d FMAs (no faster than the step's passes on rows in "
                    "cache: attend_fma_per_s for blocks of four heads, attend1_fma_per_s "
                    "for the heads left over, where the profile has them)"
                ),
            ),
        ]  # fmt: skip
        if not v_mean_supplied:
            phases.append(
                _phase(
                    "v_mean", bytes_row=S * d * e, bandwidth=bw, widen_row=S * d,
                    fma_row=S * d, priced_as="memory",
                    note=(
                        "mean of V (not supplied): S*d*e streamed; S*d widened and S*d adds "
                        "(priced as FMAs)"
                    ),
                )
            )  # fmt: skip

    fma_t = hw.fma_f64_per_s / T_prof
    exp_t = hw.exp_per_s / T_prof
    exp_sum_t = None if hw.exp_sum_per_s is None else hw.exp_sum_per_s / T_prof
    div_t = hw.div_f64_per_s / T_prof
    wfield = WIDEN_FIELD[dname]
    widen_t = None if wfield is None else getattr(hw, wfield) / T_prof
    topk_t = hw.topk_bytes_per_s / T_prof
    sweep_t = None if hw.sweep_fma_per_s is None else hw.sweep_fma_per_s / T_prof
    copy_t = None if hw.column_copy_per_s is None else hw.column_copy_per_s / T_prof
    dense_rate = {"float32": hw.dense_fma_per_s, "float16": hw.dense_f16_fma_per_s}.get(dname)
    dense_t = dense_rate / T_prof if dense_rate is not None and (g - g % 4) > 0 else None
    # the same passes for one head (dense's path for the g % 4 heads left over)
    dense1_rate = {"float32": hw.dense1_fma_per_s, "float16": hw.dense1_f16_fma_per_s}.get(dname)
    dense1_t = dense1_rate / T_prof if dense1_rate is not None and g % 4 > 0 else None
    # Step 7's passes, measured on float32 rows in cache: attend_fma_per_s for a block of
    # four heads, attend1_fma_per_s for one head (the kernel's path for the g % 4 heads
    # left over from the blocks). Each prices its heads' share of the FMAs where the
    # profile has it and the kernel runs the measured code: the blocks over any widened
    # rows (not float64), the heads left over over float32 rows only (their V pass takes
    # 16-bit rows four at a time, other code, faster than one row at a time).
    g4 = g - g % 4
    attend_t = (
        hw.attend_fma_per_s / T_prof
        if hw.attend_fma_per_s is not None and g4 > 0 and dname != "float64"
        else None
    )
    attend1_t = (
        hw.attend1_fma_per_s / T_prof
        if hw.attend1_fma_per_s is not None and g % 4 > 0 and dname == "float32"
        else None
    )
    # each working thread's share of the read and of the gathers (thread_gain): larger than
    # 1 / T_prof of the all-thread rates when fewer than T_prof threads work (fewer than T
    # where the row items are fewer) and the profile says what one thread reaches (their
    # total on the line between the two measurements); the gathered phases (kept rows, the
    # spot check) take the gathers'
    busy = min(T, rows * parts)
    gain = {
        "stream": thread_gain(bw, hw.thread_bandwidth_bytes_per_s, busy, T_prof),
        "gather": thread_gain(gbw, hw.thread_gather_bytes_per_s, busy, T_prof),
    }
    # every in-core rate likewise, on the FMA loop's line (turbo clocks, SMT siblings)
    core_gain = thread_gain(hw.fma_f64_per_s, hw.thread_fma_per_s, busy, T_prof)
    fma_t, exp_t, div_t, topk_t = (x * core_gain for x in (fma_t, exp_t, div_t, topk_t))
    exp_sum_t, widen_t, sweep_t, attend_t, attend1_t, copy_t, dense_t, dense1_t = (
        None if x is None else x * core_gain
        for x in (exp_sum_t, widen_t, sweep_t, attend_t, attend1_t, copy_t, dense_t, dense1_t)
    )
    rho = float(hw.stream_fma_overlap)
    credit = {"stream": rho, "gather": gather_overlap(hw), None: 0.0}
    omega = widen_overlap(hw, dname)
    scale = share * L  # one row's time -> the call's time
    total = rows * L  # one row's counts -> the call's counts
    kernels = []
    steps = []
    for ph in phases:
        # The read and the in-core work of the same loop (FMAs + widening) overlap by the
        # measured fraction rho of the shorter; exps, divisions and the top-k run in loops
        # of their own and add up.
        mem = 0.0
        if ph["bytes_row"]:
            kind = "gather" if ph["priced_as"] == "gather" else "stream"
            mem = scale * ph["bytes_row"] / (ph["bandwidth"] / T_prof * gain[kind])
        if ph["sweep"] and sweep_t is not None:
            # step 3's sweeps: FMAs, widening, the accumulators' trips and the finish of
            # each block (the logits written out, the group score), measured together
            # (sweep_fma_per_s)
            core = scale * ph["fma_row"] / sweep_t
        else:
            core = scale * ph["fma_row"] / fma_t
            if widen_t is not None:
                core = in_core_time(core, scale * ph["widen_row"] / widen_t, omega)
            if ph["attend"]:
                # the passes over rows (dense's, step 7's over the kept rows): no faster than
                # the same passes on rows in cache, the heads in blocks of four at the
                # four-head rate and the heads left over at the one-head rate, each where
                # measured. Dense: dense_fma_per_s / dense1_fma_per_s (float16 rows:
                # dense_f16_fma_per_s / dense1_f16_fma_per_s), with dense's row requests.
                # Step 7: attend_fma_per_s / attend1_fma_per_s with its requests (float32
                # rows: 16-bit rows, whose widening costs more, keep the larger of the two).
                four_t, one_t = (dense_t, dense1_t) if method == "dense" else (attend_t, attend1_t)
                floor = 0.0
                if four_t is not None:
                    floor += scale * ph["fma_row"] * (g4 / g) / four_t
                if one_t is not None:
                    floor += scale * ph["fma_row"] * ((g - g4) / g) / one_t
                core = max(core, floor)
        if ph["copy_row"] and copy_t is not None:
            # step 1 with K once: the r components of every row copied out one element at a
            # time and widened in blocks (column_copy_per_s). The copy is the loop that
            # reads the rows, so it takes the longer of the stream and the copy; the sweeps
            # that follow it on the block in cache add as before.
            mem = max(mem, scale * ph["copy_row"] / copy_t)
        # exps summed without being stored (reference._vexp.exp_nonpos_sum) at their own
        # measured rate where the profile has it (exp_sum_per_s)
        ex_t = exp_sum_t if ph["exp_sum"] and exp_sum_t is not None else exp_t
        side = scale * (ph["exps_row"] / ex_t + ph["div_row"] / div_t)
        tk = scale * ph["topk_bytes_row"] / topk_t
        r_ph = credit[ph["overlap"]]
        fused = max(mem, core) + (1.0 - r_ph) * min(mem, core)
        comp = core + side
        bound = max((mem, "memory"), (comp, "compute"), (tk, "topk"))[1]
        nbytes = total * (ph["bytes_row"] + ph["topk_bytes_row"])
        flops = total * 2.0 * ph["fma_row"]
        kernels.append(
            StepEstimate(ph["name"], nbytes, flops, mem, comp, 0.0, tk, fused + side + tk, bound)
        )
        steps.append(Step(ph["name"], ph["name"], nbytes, flops, ph["priced_as"], ph["note"]))

    # the fixed cost of each call (checks, allocation, dispatch; measured at a tiny size)
    call_s = L * float(hw.dense_call_s if method == "dense" else hw.sparq_call_s)
    kernels.append(StepEstimate("call", 0.0, 0.0, 0.0, 0.0, call_s, 0.0, call_s, "latency"))
    steps.append(
        Step("call", "call", 0.0, 0.0, "latency",
             f"fixed cost of one {method} call ({'dense' if method == 'dense' else 'sparq'}"
             "_call_s, measured at a tiny size), once per call")
    )  # fmt: skip
    n_kv = rows * L
    cache = n_kv * (3 if store_k_twice else 2) * S * d * e
    if method == "dense":
        paper = transfers("dense", seq_len=S, head_dim=d) * n_kv
    else:
        paper = transfers("sparq", seq_len=S, head_dim=d, r=r, k=k) * n_kv
    traffic = Traffic(
        method,
        tuple(steps),
        tuple(p["name"] for p in phases) + ("call",),
        cache,
        paper,
        dname,
        e,
    )
    params = dict(
        implementation="reference",
        batch=B,
        n_heads=H,
        n_kv_heads=Hkv,
        seq_len=S,
        head_dim=d,
        dtype=dname,
        r=r,
        k=k,
        store_k_twice=bool(store_k_twice) if method == "sparq" else None,
        v_mean_supplied=bool(v_mean_supplied) if method == "sparq" else None,
        n_layers=L,
        threads=T,
        rows=rows,
        waves=waves,
        parts=parts,
        per_thread=dict(
            bandwidth_bytes_per_s=bw / T_prof * gain["stream"],
            gather_bytes_per_s=gbw / T_prof * gain["gather"],
            gather_rows_bytes_per_s=None if rbw is None else rbw / T_prof * gain["gather"],
            fma_f64_per_s=fma_t,
            exp_per_s=exp_t,
            exp_sum_per_s=exp_sum_t,
            div_f64_per_s=div_t,
            widen_per_s=widen_t,
            topk_bytes_per_s=topk_t,
            sweep_fma_per_s=sweep_t,
            column_copy_per_s=copy_t,
            dense_fma_per_s=dense_t,
            dense1_fma_per_s=dense1_t,
            attend_fma_per_s=attend_t,
            attend1_fma_per_s=attend1_t,
        ),
        stream_fma_overlap=rho,
        gather_fma_overlap=credit["gather"],
        widen_fma_overlap=omega,
        phases={
            p["name"]: dict(
                bytes=p["bytes_row"] + p["topk_bytes_row"],
                fma=p["fma_row"],
                widen=p["widen_row"] if widen_t is not None else 0.0,
                exps=p["exps_row"],
                divisions=p["div_row"],
                copies=p["copy_row"] if copy_t is not None else 0.0,
            )
            for p in phases
        },
    )
    return _assemble(method, hw, traffic, tuple(kernels), False, params)
