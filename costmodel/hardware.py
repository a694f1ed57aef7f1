"""Hardware profiles: one TOML file per device, loaded into frozen dataclasses.

A profile is data, never constants in code: every number carries its ``source`` and the
date it was retrieved (``[sources.KEY]`` tables). Units are in the key names (decimal units:
``3.35e12`` bytes/s is 3.35 TB/s). Profiles shipped with the package live in
``costmodel/profiles/*.toml``; a user profile is any TOML file with the same keys, passed by
path; an ad-hoc profile comes from :func:`hardware_from_spec`; :func:`measure_host` builds
one for the machine it runs on.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np

from costmodel._tomlio import (
    check_date,
    check_keys,
    check_number,
    check_real,
    check_sources,
    check_str,
    load_named,
    loads_toml,
    shipped_names,
    show,
)
from costmodel.traffic import dtype_bytes
from reference import check_int

__all__ = [
    "Hardware",
    "KINDS",
    "list_hardware",
    "load_hardware",
    "parse_hardware",
    "hardware_from_spec",
    "measure_host",
    "hardware_to_toml",
    "measure_max_bytes",
    "MEASURE_MAX_SECONDS",
    "MEASURE_MIN_BYTES",
]

#: device families a profile may declare
KINDS = frozenset({"gpu", "cpu", "tpu", "ipu", "hpu", "soc"})

# key -> (minimum, strictly greater?, maximum, integer?)
_NUMERIC: dict[str, tuple[float, bool, float | None, bool]] = {
    "mem_bandwidth_bytes_per_s": (0.0, True, 1e15, False),
    "peak_flops_fp16": (0.0, True, 1e17, False),
    "peak_flops_fp32": (0.0, True, 1e17, False),
    "mem_capacity_bytes": (0.0, True, 1e14, False),
    "onchip_bytes": (0.0, False, 1e12, False),
    "mem_efficiency": (0.0, True, 1.0, False),
    "flop_efficiency": (0.0, True, 1.0, False),
    "kernel_latency_s": (0.0, False, 1.0, False),
    "mem_transaction_bytes": (1.0, False, 4096.0, True),
    "topk_bytes_per_s": (0.0, True, 1e15, False),
}
_OPTIONAL_NUMERIC: dict[str, tuple[float, bool, float | None, bool]] = {
    "onchip_bandwidth_bytes_per_s": (0.0, True, 1e16, False),
    # host (CPU) fields written by measure_host; the host model of the reference kernels
    # (costmodel.host) needs all of them
    "threads": (1.0, False, 1e6, True),
    "fma_f64_per_s": (0.0, True, 1e16, False),
    "exp_per_s": (0.0, True, 1e15, False),
    "exp_sum_per_s": (0.0, True, 1e15, False),
    "gather_bytes_per_s": (0.0, True, 1e15, False),
    "gather256_bytes_per_s": (0.0, True, 1e15, False),
    "div_f64_per_s": (0.0, True, 1e16, False),
    "widen_f32_per_s": (0.0, True, 1e16, False),
    "widen_f16_per_s": (0.0, True, 1e16, False),
    "widen_bf16_per_s": (0.0, True, 1e16, False),
    "stream_fma_overlap": (0.0, False, 1.0, False),
    "widen_fma_overlap": (0.0, False, 1.0, False),
    "widen_f16_fma_overlap": (0.0, False, 1.0, False),
    "widen_bf16_fma_overlap": (0.0, False, 1.0, False),
    "gather_fma_overlap": (0.0, False, 1.0, False),
    "sweep_fma_per_s": (0.0, True, 1e16, False),
    "column_copy_per_s": (0.0, True, 1e16, False),
    "attend_fma_per_s": (0.0, True, 1e16, False),
    "attend1_fma_per_s": (0.0, True, 1e16, False),
    "dense_fma_per_s": (0.0, True, 1e16, False),
    "dense_f16_fma_per_s": (0.0, True, 1e16, False),
    "dense1_fma_per_s": (0.0, True, 1e16, False),
    "dense1_f16_fma_per_s": (0.0, True, 1e16, False),
    "dense_call_s": (0.0, False, 1.0, False),
    "sparq_call_s": (0.0, False, 1.0, False),
    # eager (op-by-op) execution timed by wall clock: host side of each framework op, the
    # synchronisation at the end, the device floor of a small op (docs/costmodel.md, "eager")
    "host_dispatch_s": (0.0, False, 1.0, False),
    "host_dispatch_matmul_s": (0.0, False, 1.0, False),
    "host_dispatch_topk_s": (0.0, False, 1.0, False),
    "host_dispatch_attention_s": (0.0, False, 1.0, False),
    "host_dispatch_custom_s": (0.0, False, 1.0, False),
    "host_dispatch_view_s": (0.0, False, 1.0, False),
    "host_dispatch_mixed_s": (0.0, False, 1.0, False),
    "sync_latency_s": (0.0, False, 1.0, False),
    "op_device_s": (0.0, False, 1.0, False),
    "op_mem_efficiency": (0.0, True, 1.0, False),
    # top-k as its own kernel: fixed time per call (else kernel_latency_s)
    "topk_latency_s": (0.0, False, 1.0, False),
    # bandwidth one program (CTA) of a one-program-per-row kernel streams
    "program_bandwidth_bytes_per_s": (0.0, True, 1e15, False),
    # CPUs: read bandwidth one thread reaches (the ``threads=`` argument of the estimate)
    "thread_bandwidth_bytes_per_s": (0.0, True, 1e15, False),
    # CPUs: bandwidth of gathered 512-byte rows one thread reaches (the host model's
    # ``threads=`` argument; measure_host writes it)
    "thread_gather_bytes_per_s": (0.0, True, 1e15, False),
    # CPUs: float64 FMAs per second one thread reaches (measure_host writes it)
    "thread_fma_per_s": (0.0, True, 1e16, False),
    # CPUs: threads a framework uses by default (datasheet profiles: the physical cores)
    "cpu_cores": (1.0, False, 1e6, True),
    # tensor parallelism: one direction of one device's link to its peers, and the smallest
    # time of one all-reduce (estimate_decode(tp=...), docs/costmodel.md "Tensor parallelism")
    "link_bandwidth_bytes_per_s": (0.0, True, 1e14, False),
    "allreduce_latency_s": (0.0, False, 1.0, False),
}
_ALL_NUMERIC = {**_NUMERIC, **_OPTIONAL_NUMERIC}
#: smallest plausible value of the rates and efficiencies (checked after "> 0"): anything
#: below is not a real device, and would let a roofline time overflow or divide by zero
_PLAUSIBLE_MIN: dict[str, float] = {
    "mem_bandwidth_bytes_per_s": 1e6,
    "peak_flops_fp16": 1e6,
    "peak_flops_fp32": 1e6,
    "mem_efficiency": 1e-3,
    "flop_efficiency": 1e-3,
    "topk_bytes_per_s": 1e6,
    "onchip_bandwidth_bytes_per_s": 1e6,
    "fma_f64_per_s": 1e6,
    "exp_per_s": 1e6,
    "exp_sum_per_s": 1e6,
    "sweep_fma_per_s": 1e6,
    "column_copy_per_s": 1e6,
    "attend_fma_per_s": 1e6,
    "attend1_fma_per_s": 1e6,
    "dense_fma_per_s": 1e6,
    "dense_f16_fma_per_s": 1e6,
    "dense1_fma_per_s": 1e6,
    "dense1_f16_fma_per_s": 1e6,
    "gather_bytes_per_s": 1e6,
    "gather256_bytes_per_s": 1e6,
    "div_f64_per_s": 1e6,
    "widen_f32_per_s": 1e6,
    "widen_f16_per_s": 1e6,
    "widen_bf16_per_s": 1e6,
    "program_bandwidth_bytes_per_s": 1e6,
    "op_mem_efficiency": 1e-3,
    "thread_bandwidth_bytes_per_s": 1e6,
    "thread_gather_bytes_per_s": 1e6,
    "thread_fma_per_s": 1e6,
    "link_bandwidth_bytes_per_s": 1e6,
}
_STRINGS = ("name", "description", "kind")
_REQUIRED = {"name", "description", "kind", "sources"} | set(_NUMERIC)
_OPTIONAL = set(_OPTIONAL_NUMERIC)


@dataclass(frozen=True)
class Hardware:
    """One device's roofline parameters (decimal SI units, as in the key names).

    Attributes
    ----------
    name, description, kind : str
        Identifier (file stem for shipped profiles), human description, device family.
    mem_bandwidth_bytes_per_s : float
        Peak main-memory bandwidth (HBM / DDR / LPDDR; for the IPU, on-chip SRAM).
    peak_flops_fp16, peak_flops_fp32 : float
        Dense peak FLOP/s (fp16/bf16 matrix units; fp32 vector/matrix).
    mem_capacity_bytes : float
        Main memory capacity.
    onchip_bytes : float
        Last-level on-chip memory a decode working set could stay in (L2, SRAM, VMEM, SLC,
        Infinity Cache); 0 if none or unknown.
    mem_efficiency, flop_efficiency : float
        Fractions of the peaks that large, well-tuned kernels reach (``eta_mem``, ``eta_flop``).
    kernel_latency_s : float
        Fixed time per kernel call ``t0`` (launch, ramp-up, tail).
    mem_transaction_bytes : int
        Granularity of a memory access (bytes moved for any touched sector/line).
    topk_bytes_per_s : float
        Throughput of an exact top-k over score rows (input bytes per second); top-k is not
        bandwidth-bound, so it is priced with its own rate (docs/topk.md).
    onchip_bandwidth_bytes_per_s : float or None
        Bandwidth of ``onchip_bytes`` when a working set is resident; None if unknown.
    threads : int or None
        Threads the host rates below (and the bandwidth) were measured with, all at once;
        None for profiles that are not a measured host.
    fma_f64_per_s : float or None
        float64 fused multiply-adds per second over all ``threads`` (one FMA = 2 FLOPs),
        register-blocked dot products of L1-resident vectors.
    exp_per_s : float or None
        float64 ``exp`` evaluations per second over all ``threads`` (the package's
        vectorised ``reference._vexp.exp_nonpos_into``, arguments <= 0, cache-resident
        blocks: the softmax weights the kernels store).
    exp_sum_per_s : float or None
        float64 exps per second summed over all ``threads`` by
        ``reference._vexp.exp_nonpos_sum``, arguments <= 0, cache-resident blocks: SparQ's
        softmax sums. None: ``exp_per_s`` stands in for it.
    gather_bytes_per_s : float or None
        Bytes per second of random 512-byte row gathers from main memory, all ``threads``.
    gather256_bytes_per_s : float or None
        The same with 256-byte rows (a float16 or bfloat16 row at ``d = 128``). Rows cost a
        fixed time each plus a time per byte, and the two gather rates give both (the host
        model of the reference's gathers, :mod:`costmodel.host`); None: the 512-byte rate
        per byte for every row size.
    div_f64_per_s : float or None
        float64 divisions per second over all ``threads`` (vectorised, L1-resident).
    widen_f32_per_s, widen_f16_per_s, widen_bf16_per_s : float or None
        Cache elements of that dtype widened to float64 (and added) per second over all
        ``threads``, L1-resident: the conversion the reference pays per element it reads.
    stream_fma_overlap : float or None
        Fraction in ``[0, 1]`` of the shorter of a streaming read and the FMA work of the
        same loop that the host hides behind the longer (0: they add up; 1: the longer
        alone), from one loop that does both against each alone.
    widen_fma_overlap : float or None
        Fraction in ``[0, 1]`` of the shorter of the widening and the FMAs of one loop that
        the host hides behind the longer (the two use different execution units on some
        CPUs): rounds of three L1-resident loops over the same elements (four float64 FMAs
        each; float32 elements widened; float32 elements widened for four FMAs each), the
        median over rounds of ``(fma + widen - both) / min(fma, widen)``, with float32
        elements. None: 0 (they add up).
    widen_f16_fma_overlap, widen_bf16_fma_overlap : float or None
        The same with float16 / bfloat16 elements (the kernels' encodings). None:
        ``widen_fma_overlap`` stands in for it.
    gather_fma_overlap : float or None
        Fraction in ``[0, 1]`` of the shorter of SparQ's step-7 gathers (512-byte rows in the
        pattern of SparQ's kept rows, requested a few rows ahead) and the in-core work of its
        passes over them (the K and the V pass, four heads) that the host hides behind the
        longer, measured as ``stream_fma_overlap`` is. None: ``stream_fma_overlap`` stands in
        for it.
    sweep_fma_per_s : float or None
        Float64 FMAs per second (all threads) of SparQ's step-3 sweeps on rows in cache: per
        thread 16 float32 rows of 4096 positions, four query heads, the components four at a
        time into float64 accumulators (``reference.sparq._sweep_h4c4``), each block of
        accumulators then finished as the kernel finishes one of a row with no masked
        position: written out as float64 logits (1 MiB a thread) and summed into the group
        score (``reference.sparq._finish_block4``), each head's maximum taken and the score
        checked. None: the FMAs at ``fma_f64_per_s`` beside the widening stand in for it.
    column_copy_per_s : float or None
        Elements per second (all threads) that SparQ's step 3 with K stored once copies out
        of S-major rows in cache before its sweeps: per thread 16 components of each of 1024
        float32 rows of 128, copied one element at a time into blocks of 256 positions
        (each row requested a few rows ahead, as the kernel requests them), each block then
        widened to float64. None: that copy is not priced (the model of profiles measured
        before it was).
    attend_fma_per_s : float or None
        Float64 FMAs per second (all threads) of SparQ's step-7 passes over kept rows in
        cache: per thread 256 float32 rows of 128 of K and of V, four query heads, the K
        pass (``reference._rows._k_pass``) and the V pass (``_v_pass``) with the kernel's
        row requests, each element widened once for its four FMAs. None: the FMAs at
        ``fma_f64_per_s`` beside the widening stand in for it.
    attend1_fma_per_s : float or None
        The same passes for one query head (the kernel's path for the heads left over from
        blocks of four: one FMA per element widened). None: as above.
    dense_fma_per_s : float or None
        Float64 FMAs per second (all threads) of dense attention's K and V passes over rows
        in cache: the passes of ``attend_fma_per_s`` (four query heads, float32 rows) with
        dense's row requests (each row once, ``reference._rows.STREAM_AHEAD`` rows ahead).
        None: dense's FMAs at ``fma_f64_per_s`` beside the widening.
    dense_f16_fma_per_s : float or None
        The same over float16 rows (dense's float16 passes). None: dense's float16 FMAs at
        ``fma_f64_per_s`` beside the float16 widening.
    dense1_fma_per_s, dense1_f16_fma_per_s : float or None
        The same two for one query head (dense's path for the heads left over from blocks
        of four: at ``g = 1``, every head). None: as above.
    dense_call_s, sparq_call_s : float or None
        Fixed cost of one call of ``reference.dense_attention`` / ``sparq_attention``
        (argument checks, allocation, dispatch, thread-pool start), timed at a tiny size
        with cold caches.
    host_dispatch_s : float or None
        Eager (op-by-op) execution: host time to issue one elementwise or reduction
        framework op (GPU: Python + dispatcher + launch call; CPU: the framework's per-op
        overhead). Needed by ``implementation="eager"``.
    host_dispatch_matmul_s, host_dispatch_topk_s, host_dispatch_attention_s, \
    host_dispatch_custom_s, host_dispatch_view_s : float or None
        The same for a matmul, a top-k, one fused-attention call (SDPA), one
        Python-launched custom kernel (Triton) and a view op (no kernel); None: as
        ``host_dispatch_s`` (views: 0).
    host_dispatch_mixed_s : float or None
        Eager: extra host time of every kernel op after the first in a call of different
        ops issued right after a synchronisation (such a sequence runs colder than a hot
        loop of one op, where ``host_dispatch_*_s`` are measured); None: 0.
    sync_latency_s : float or None
        Eager: fixed wall time of one synchronised call beyond its ops (first launch on an
        idle device, synchronisation and its return). Needed by ``implementation="eager"``.
    op_device_s : float or None
        Eager: device time of a small framework op queued behind others (ramp, tail, gap);
        None: ``kernel_latency_s``.
    op_mem_efficiency : float or None
        Eager: fraction of ``mem_bandwidth_bytes_per_s`` that the generic framework ops
        (gathers, batched small matmuls, softmax, elementwise) reach; None:
        ``mem_efficiency``.
    topk_latency_s : float or None
        Fixed time of one top-k call (a multi-pass selection); None: ``kernel_latency_s``.
    program_bandwidth_bytes_per_s : float or None
        Bandwidth one program (thread block) streams in a kernel that runs one program per
        (sequence, head) row (the public SparQ step-1 kernel): such a kernel reaches at most
        ``rows x`` this. None: no cap.
    thread_bandwidth_bytes_per_s : float or None
        CPUs: main-memory read bandwidth one thread reaches; with ``threads=T`` in an
        estimate the bandwidth is at most ``T x`` this (and at most ``mem_efficiency x
        BW``). None: not known, no cap. On a measured profile (one with ``threads``) both
        the estimates and the host model of the reference kernels
        (``costmodel.host.predict_reference``) take the line between this and the measured
        all-thread read instead: ``T`` threads read together at
        ``costmodel.host.threads_bandwidth`` (this at one thread, the profile's read at its
        ``threads`` or more, at least the linear share in between).
    thread_gather_bytes_per_s : float or None
        CPUs: bandwidth of gathered 512-byte rows (``gather_bytes_per_s``'s microkernel)
        that one thread reaches; the host model shares the gather rates among the threads
        that work on the line between it and ``gather_bytes_per_s``, as it does the read.
        None: linear scaling (each thread ``gather_bytes_per_s / threads``).
    thread_fma_per_s : float or None
        CPUs: float64 FMAs per second of ``fma_f64_per_s``'s microkernel on one thread; the
        host model shares every in-core rate among the threads that work on the line between
        it and ``fma_f64_per_s`` (a core that runs faster alone, or SMT siblings that share
        one core's units). None: linear scaling.
    cpu_cores : int or None
        CPUs: threads a framework uses by default (a datasheet profile's physical cores);
        the default ``threads`` of an estimate when the profile has no measured ``threads``.
    link_bandwidth_bytes_per_s : float or None
        Tensor parallelism: bandwidth of one device's links to its peers in one direction
        (NVLink: half the quoted bidirectional figure). None: no ``tp > 1`` estimate.
    allreduce_latency_s : float or None
        Tensor parallelism: the smallest time of one all-reduce (small messages).
    sources : dict
        ``{key: (source, retrieved)}`` for every number above.
    origin : str
        Where the profile came from (file path, "ad-hoc", "measured").
    """

    name: str
    description: str
    kind: str
    mem_bandwidth_bytes_per_s: float
    peak_flops_fp16: float
    peak_flops_fp32: float
    mem_capacity_bytes: float
    onchip_bytes: float
    mem_efficiency: float
    flop_efficiency: float
    kernel_latency_s: float
    mem_transaction_bytes: int
    topk_bytes_per_s: float
    onchip_bandwidth_bytes_per_s: float | None = None
    threads: int | None = None
    fma_f64_per_s: float | None = None
    exp_per_s: float | None = None
    exp_sum_per_s: float | None = None
    gather_bytes_per_s: float | None = None
    gather256_bytes_per_s: float | None = None
    div_f64_per_s: float | None = None
    widen_f32_per_s: float | None = None
    widen_f16_per_s: float | None = None
    widen_bf16_per_s: float | None = None
    stream_fma_overlap: float | None = None
    widen_fma_overlap: float | None = None
    widen_f16_fma_overlap: float | None = None
    widen_bf16_fma_overlap: float | None = None
    gather_fma_overlap: float | None = None
    sweep_fma_per_s: float | None = None
    column_copy_per_s: float | None = None
    attend_fma_per_s: float | None = None
    attend1_fma_per_s: float | None = None
    dense_fma_per_s: float | None = None
    dense_f16_fma_per_s: float | None = None
    dense1_fma_per_s: float | None = None
    dense1_f16_fma_per_s: float | None = None
    dense_call_s: float | None = None
    sparq_call_s: float | None = None
    host_dispatch_s: float | None = None
    host_dispatch_matmul_s: float | None = None
    host_dispatch_topk_s: float | None = None
    host_dispatch_attention_s: float | None = None
    host_dispatch_custom_s: float | None = None
    host_dispatch_view_s: float | None = None
    host_dispatch_mixed_s: float | None = None
    sync_latency_s: float | None = None
    op_device_s: float | None = None
    op_mem_efficiency: float | None = None
    topk_latency_s: float | None = None
    program_bandwidth_bytes_per_s: float | None = None
    thread_bandwidth_bytes_per_s: float | None = None
    thread_gather_bytes_per_s: float | None = None
    thread_fma_per_s: float | None = None
    cpu_cores: int | None = None
    link_bandwidth_bytes_per_s: float | None = None
    allreduce_latency_s: float | None = None
    sources: dict = field(default_factory=dict, compare=False, repr=False)
    origin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # Every construction (the file loader, hardware_from_spec, replace, a direct call)
        # goes through the one check of the values, _validate_values.
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        checked = _validate_values(
            {k: v for k, v in values.items() if k not in ("sources", "origin")}, origin=None
        )
        for key, value in checked.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "sources", _check_source_pairs(self.sources))
        if not isinstance(self.origin, str):
            raise TypeError(f"origin: expected a str, got {type(self.origin).__name__}")

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for arithmetic in ``dtype`` (a name
        :func:`costmodel.traffic.dtype_bytes` knows; fp8 and bf16 use the fp16 figure)."""
        name, _ = dtype_bytes(dtype)
        return self.peak_flops_fp32 if name == "float32" else self.peak_flops_fp16

    def replace(self, **changes) -> Hardware:
        """A copy with some fields changed, validated exactly like a profile file (ranges,
        integer fields, bool is not a number, power-of-two transactions, fp16 >= fp32 / 2)."""
        return dataclasses.replace(self, **changes)


def _validate_values(
    values: dict,
    *,
    origin: str | None,
    labels: dict[str, str] | None = None,
) -> dict:
    """The one check of a profile's values, shared by :func:`parse_hardware` (a file),
    :func:`hardware_from_spec` and every :class:`Hardware` construction (``replace``).

    Checks the keys of ``values`` that are profile fields: numbers (finite, in range, bool
    is not a number, integer fields take no fractional value), the plausibility floors, the
    strings (``kind`` one of :data:`KINDS`) and the cross-field rules (power-of-two
    ``mem_transaction_bytes``, ``peak_flops_fp16 >= peak_flops_fp32 / 2``). Returns the
    values normalised (float, int for integer fields). With ``origin`` (a file) messages
    read ``"<origin>: key '<key>': ..."`` and every failure is a ``ValueError``; without,
    ``"<label>: ..."`` (``labels`` maps a key to the caller's argument name) and a wrong
    type is a ``TypeError``.
    """
    labels = labels or {}
    type_error: type[Exception] = ValueError if origin is not None else TypeError

    def label(key: str) -> str:
        return f"{origin}: key '{key}'" if origin is not None else labels.get(key, key)

    def short(key: str) -> str:
        return f"'{key}'" if origin is not None else labels.get(key, key)

    out: dict = {}
    for key, (lo, strict, hi, integer) in _ALL_NUMERIC.items():
        if key not in values:
            continue
        v = values[key]
        if v is None:
            if key in _NUMERIC:
                raise type_error(f"{label(key)}: expected a number, got None")
            out[key] = None
            continue
        v = check_number(
            v, label(key), minimum=lo, strict_min=strict, maximum=hi, integer=integer,
            type_error=type_error,
        )  # fmt: skip
        floor = _PLAUSIBLE_MIN.get(key)
        if floor is not None and v < floor:
            raise ValueError(
                f"{label(key)}: expected >= {floor:g} (a smaller value is no real device), "
                f"got {v!r}"
            )
        out[key] = v
    for key in _STRINGS:
        if key in values:
            out[key] = check_str(
                values[key], label(key), choices=KINDS if key == "kind" else None,
                type_error=type_error,
            )  # fmt: skip
    tx = out.get("mem_transaction_bytes")
    if tx is not None and tx & (tx - 1):
        raise ValueError(f"{label('mem_transaction_bytes')}: expected a power of two, got {tx}")
    fp16, fp32 = out.get("peak_flops_fp16"), out.get("peak_flops_fp32")
    if fp16 is not None and fp32 is not None and fp16 < fp32 * 0.5:
        raise ValueError(
            f"{label('peak_flops_fp16')}: expected >= half of {short('peak_flops_fp32')} "
            f"({fp32:.3g} / 2; fp16 is never slower than half of fp32), got {fp16:.3g}: "
            "impossible"
        )
    return out


def _check_source_pairs(sources) -> dict[str, tuple[str, str]]:
    """``sources`` of a :class:`Hardware`: ``{numeric field: (source, YYYY-MM-DD)}``."""
    if not isinstance(sources, dict):
        raise TypeError(
            f"sources: expected a dict {{field: (source, date)}}, got {type(sources).__name__}"
        )
    out = {}
    for key, pair in sources.items():
        if key not in _ALL_NUMERIC:
            raise ValueError(f"sources: expected keys among the numeric fields, got {show(key)}")
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(
                f"sources[{key!r}]: expected a pair (source, retrieved date), got {show(pair)}"
            )
        src = check_str(pair[0], f"sources[{key!r}] source")
        date = check_date(pair[1], f"sources[{key!r}] retrieved")
        out[key] = (src, date)
    return out


def parse_hardware(text: str, origin: str) -> Hardware:
    """Parse and validate one profile's TOML text (``origin`` names it in errors)."""
    data = loads_toml(text, origin)
    check_keys(data, required=_REQUIRED, optional=_OPTIONAL, origin=origin)
    values = _validate_values({k: v for k, v in data.items() if k != "sources"}, origin=origin)
    numeric_present = {k for k in data if k in _ALL_NUMERIC}
    sources = check_sources(data["sources"], numeric_present, origin)
    return Hardware(sources=sources, origin=origin, **values)


def list_hardware() -> list[str]:
    """Names of the profiles shipped with the package, sorted."""
    return shipped_names("costmodel.profiles")


def load_hardware(name_or_path: str | os.PathLike) -> Hardware:
    """Load a shipped profile by name (``"h100-sxm"``) or a user profile by file path.

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones), or an invalid, unreadable, non-UTF-8
        or oversized (> 1 MiB) file.
    FileNotFoundError
        A path that does not exist (:class:`costmodel._tomlio.DataFileNotFoundError`, also a
        ValueError).
    TypeError
        Neither a str, an ``os.PathLike`` nor a :class:`Hardware`.
    """
    return _load(name_or_path, "name_or_path")


def _load(name_or_path, argname: str) -> Hardware:
    """:func:`load_hardware` with errors naming the caller's argument ``argname``."""
    if isinstance(name_or_path, Hardware):
        return name_or_path
    return load_named(name_or_path, package="costmodel.profiles", what="hardware profile",
                      kinds="profiles", parse=parse_hardware, argname=argname)  # fmt: skip


#: defaults for an ad-hoc datasheet profile, with the reason for each (docs/costmodel.md)
ADHOC_DEFAULTS: dict[str, tuple[float, str]] = {
    "mem_efficiency": (
        0.8,
        "eta_mem ~0.8 at large working sets (NVIDIA aiconfigurator: bytes / (0.8 BW))",
    ),
    "flop_efficiency": (0.7, "assumption: typical large-GEMM fraction of dense peak"),
    "kernel_latency_s": (1e-5, "7-15 us per decode-attention call in public kernel measurements"),
    "mem_transaction_bytes": (32, "NVIDIA sector size (CUDA C++ best practices guide)"),
    "topk_fraction_of_bandwidth": (
        0.06,
        "measured this repo: torch.topk on H100 SXM reaches ~0.2 TB/s = 0.06 x 3.35 TB/s",
    ),
}


def hardware_from_spec(
    *,
    bandwidth_bytes_per_s: float,
    peak_flops_fp16: float,
    peak_flops_fp32: float | None = None,
    mem_capacity_bytes: float = 80e9,
    onchip_bytes: float = 0.0,
    mem_efficiency: float | None = None,
    flop_efficiency: float | None = None,
    kernel_latency_s: float | None = None,
    mem_transaction_bytes: int | None = None,
    topk_bytes_per_s: float | None = None,
    name: str = "ad-hoc",
) -> Hardware:
    """An ad-hoc profile from datasheet numbers (the CLI's ``--bandwidth --peak-flops``).

    Unspecified efficiencies and latencies take :data:`ADHOC_DEFAULTS` (documented there).
    ``peak_flops_fp32`` defaults to ``peak_flops_fp16 / 2``; top-k throughput to 0.06 x BW.
    Every value is checked exactly as in a profile file (:func:`parse_hardware`: ranges,
    bool is not a number, ``mem_transaction_bytes`` an integral power of two, fp16 at
    least half of fp32); errors name the argument (``TypeError`` for a wrong type,
    ``ValueError`` otherwise). ``name`` is any non-empty text (quotes, backslashes,
    newlines and other characters are escaped by :func:`hardware_to_toml`).
    """
    d = ADHOC_DEFAULTS
    labels = {"mem_bandwidth_bytes_per_s": "bandwidth_bytes_per_s (profile key "
              "mem_bandwidth_bytes_per_s)"}  # fmt: skip
    given = {
        "mem_bandwidth_bytes_per_s": bandwidth_bytes_per_s,
        "peak_flops_fp16": peak_flops_fp16,
        "peak_flops_fp32": peak_flops_fp32,
        "mem_capacity_bytes": mem_capacity_bytes,
        "onchip_bytes": onchip_bytes,
        "mem_efficiency": mem_efficiency,
        "flop_efficiency": flop_efficiency,
        "kernel_latency_s": kernel_latency_s,
        "mem_transaction_bytes": mem_transaction_bytes,
        "topk_bytes_per_s": topk_bytes_per_s,
        "name": name,
    }
    required = ("mem_bandwidth_bytes_per_s", "peak_flops_fp16", "mem_capacity_bytes",
                "onchip_bytes", "name")  # fmt: skip
    values = _validate_values(
        {k: v for k, v in given.items() if v is not None or k in required},
        origin=None,
        labels=labels,
    )
    name = values.pop("name")
    bw, fp16 = values["mem_bandwidth_bytes_per_s"], values["peak_flops_fp16"]
    defaults = {
        "peak_flops_fp32": fp16 / 2,
        "mem_efficiency": d["mem_efficiency"][0],
        "flop_efficiency": d["flop_efficiency"][0],
        "kernel_latency_s": d["kernel_latency_s"][0],
        "mem_transaction_bytes": d["mem_transaction_bytes"][0],
        "topk_bytes_per_s": d["topk_fraction_of_bandwidth"][0] * bw,
    }
    for key, value in defaults.items():
        if key not in values:
            values[key] = value
    # a default derived from a given number must pass the same rules (e.g. fp32 = fp16 / 2)
    labels["peak_flops_fp32"] = (
        "peak_flops_fp32" if peak_flops_fp32 is not None
        else "peak_flops_fp32 (default peak_flops_fp16 / 2)"
    )  # fmt: skip
    labels["topk_bytes_per_s"] = (
        "topk_bytes_per_s" if topk_bytes_per_s is not None
        else "topk_bytes_per_s (default 0.06 x bandwidth_bytes_per_s)"
    )  # fmt: skip
    values = _validate_values(values, origin=None, labels=labels)
    today = datetime.date.today().isoformat()
    sources = {k: ("given on the command line / by the caller", today) for k in values}
    return Hardware(
        name=name,
        description="ad-hoc profile from datasheet numbers",
        kind="gpu",
        sources=sources,
        origin="ad-hoc",
        **values,
    )


#: measure_host's limits: ``0 < seconds <= MEASURE_MAX_SECONDS``, ``MEASURE_MIN_BYTES <=
#: nbytes <= measure_max_bytes()``
MEASURE_MAX_SECONDS = 60.0
MEASURE_MIN_BYTES = 8 * 2**20
MEASURE_MAX_BYTES = 16 * 2**30


#: bytes of the array the one-thread read of :func:`measure_host` takes, at most
ONE_THREAD_MAX_BYTES = 1 << 30


def measure_max_bytes() -> int:
    """Largest ``nbytes`` :func:`measure_host` takes: 16 GiB or half of this machine's
    physical memory, the smaller (16 GiB where the memory size is unknown)."""
    total = _total_memory_bytes()
    return MEASURE_MAX_BYTES if total <= 1 else min(MEASURE_MAX_BYTES, total // 2)


#: shares of measure_host's ``seconds`` per microbenchmark
_BUDGET = {"stream": 0.12, "stream1": 0.05, "gather1": 0.04, "fma": 0.04, "fma1": 0.02, "exp": 0.05,
           "expsum": 0.04, "topk": 0.05, "gather": 0.08, "gather256": 0.05, "matmul": 0.02,
           "div": 0.05, "widen": 0.05, "overlap": 0.06, "goverlap": 0.05, "woverlap": 0.05,
           "sweep": 0.05, "attend": 0.03, "calls": 0.05, "copy": 0.03, "dense": 0.02}  # fmt: skip


def measure_host(*, nbytes: int = 256 * 2**20, seconds: float = 1.0) -> Hardware:
    """Build a profile of this machine from short microbenchmarks on all Numba threads.

    Every rate is measured with ``numba.get_num_threads()`` threads at once (recorded as
    ``threads``), by microkernels compiled with the project's Numba flags that are not the
    kernels the host model predicts (``costmodel._hostbench``):

    - ``mem_bandwidth_bytes_per_s``: prange sum of an ``nbytes`` array read as 8-byte words (one
      contiguous chunk per thread), best of at least 5 runs;
    - ``fma_f64_per_s``: float64 dot products blocked by four (four 256-element vectors
      against each of ``DOT_ROWS`` others in turn, five L1 loads per four FMAs;
      L1-resident);
    - ``exp_per_s``: ``reference._vexp.exp_nonpos_into`` on cache-resident float64 blocks;
    - ``exp_sum_per_s``: ``reference._vexp.exp_nonpos_sum`` (the terms summed, not stored:
      SparQ's softmax sums) on the same blocks, arguments in ``[-30, 0]``;
    - ``topk_bytes_per_s``: the ``k = n / 8`` largest of float64 rows of 32768
      (``reference.selection.topk_set_into``) listed in index order, the selection SparQ's
      kernel makes (input bytes per second);
    - ``gather_bytes_per_s``, ``gather256_bytes_per_s``: random 512-byte rows (128 float32)
      and 256-byte rows (64 float32) of the first half of the ``nbytes`` array, each timed
      repetition after an untimed read of the second half (caches cold);
    - ``thread_bandwidth_bytes_per_s``, ``thread_gather_bytes_per_s``, ``thread_fma_per_s``:
      the same read, the same 512-byte gathers and the FMA loop below on one thread
      (``numba.set_num_threads(1)`` for the measurement): what a thread reaches when the
      others leave the memory and the cores to it, which the host model needs at thread
      counts below ``threads``;
    - ``div_f64_per_s``: float64 ``x / t`` over L1-resident blocks;
    - ``widen_f32_per_s``, ``widen_f16_per_s``, ``widen_bf16_per_s``: elements of each
      cache dtype widened to float64 and summed (the kernels' conversion), L1-resident;
    - ``stream_fma_overlap``: one loop that streams the ``nbytes`` array (requesting its
      rows ahead as the kernels' passes do) while widening each element for four FMAs,
      against the read alone and the same loop on L1-resident rows: the median over rounds
      of ``(t_read + t_core - t_both) / min(t_read, t_core)``, clipped to ``[0, 1]``;
    - ``widen_fma_overlap``: rounds of three L1-resident loops over the same elements,
      four float64 FMAs per element, float32 elements widened, and both (float32 rows
      widened for four FMAs each): the median over rounds of
      ``(t_fma + t_widen - t_core) / min(t_fma, t_widen)``, clipped to ``[0, 1]``;
      ``widen_f16_fma_overlap`` and ``widen_bf16_fma_overlap`` the same with float16 and
      bfloat16 elements;
    - ``gather_fma_overlap``: SparQ's step-7 passes (``reference._rows._k_pass`` and
      ``_v_pass``, four query heads) over rows gathered in the pattern of
      ``gather_bytes_per_s`` (each requested a few rows ahead, as the kernel requests its
      kept rows), against the gathers alone and the same passes over cache-resident rows:
      ``(t_gather + t_core - t_both) / min(t_gather, t_core)``, median over rounds, clipped
      to ``[0, 1]``;
    - ``sweep_fma_per_s``: SparQ's step-3 sweep (``reference.sparq._sweep_h4c4``, four
      query heads, four components a sweep, 16 components) over 16 float32 rows of 4096
      positions per thread (in cache), each block's float64 accumulators then written out
      as logits and summed into the group score (``reference.sparq._finish_block4``, 32768
      positions a thread), their maximum taken and the score checked: float64 FMAs per
      second, best of several repetitions;
    - ``column_copy_per_s``: 16 components of each of 1024 float32 rows of 128 per thread
      (in cache) copied out one element at a time into blocks of 256 positions, each row
      requested a few rows ahead, each block then widened to float64 (the loops of SparQ's
      step 3 with K stored once before its sweeps, written in ``costmodel._hostbench``):
      elements per second, best of several repetitions;
    - ``attend_fma_per_s``: SparQ's step-7 passes (``reference._rows._k_pass`` and
      ``_v_pass``, four query heads, each row requested as the kernel requests its kept
      rows) over 256 float32 rows of 128 of K and of V per thread (in cache): float64 FMAs
      per second, best of several repetitions; ``attend1_fma_per_s`` the same for one query
      head (the path of the heads left over from blocks of four);
    - ``dense_fma_per_s``: the same passes, four query heads, with dense attention's row
      requests (each row once, from ``STREAM_AHEAD`` rows ahead);
      ``dense_f16_fma_per_s`` the same over float16 rows; ``dense1_fma_per_s`` and
      ``dense1_f16_fma_per_s`` both for one query head;
    - ``dense_call_s``, ``sparq_call_s``: one call of ``reference.dense_attention`` /
      ``sparq_attention`` at B = H = 1, S = 64, d = 16 (their fixed cost: the only timing of
      the reference's own functions, at a size where their per-element work is nil), each
      call after an untimed read of the ``nbytes`` array, so with cold caches, as a call at
      decode sizes meets them;
    - ``peak_flops_fp32`` (and ``fp16``, not measured separately): a float32 512^3 matmul
      with numpy's BLAS.

    Takes about ``seconds`` (shares in ``_BUDGET``; each rate gets at least a few
    repetitions whatever the budget) plus the first-use compilation of the microkernels,
    which Numba caches on disk. The array should exceed the last-level cache (the default
    256 MiB does on most machines). Efficiencies are 1 (the figures are achieved rates),
    64-byte cache lines, 5 us per kernel (an assumption, not measured).

    Limits, checked before anything is allocated or run: ``seconds`` a finite number in
    ``(0, 60]`` (:data:`MEASURE_MAX_SECONDS`); ``nbytes`` an int, a multiple of 4, from
    8 MiB (:data:`MEASURE_MIN_BYTES`) to :func:`measure_max_bytes` (16 GiB or half of the
    physical memory, the smaller). Otherwise ``TypeError`` / ``ValueError`` naming the
    argument.
    """
    nbytes = check_int("nbytes", nbytes, lo=MEASURE_MIN_BYTES, hi=measure_max_bytes(),
                       hi_name="min(16 GiB, half of physical memory)")  # fmt: skip
    if nbytes % 4:
        raise ValueError(f"nbytes: expected a multiple of 4 (whole float32), got {nbytes}")
    seconds = check_real("seconds", seconds, maximum=MEASURE_MAX_SECONDS)
    import numba

    from costmodel import _hostbench as hb

    rng = np.random.default_rng(0)
    threads = int(numba.get_num_threads())
    a = np.ones(nbytes // 4, dtype=np.float32)  # written once: the pages are touched
    bw, src_bw = hb.measure_stream(a, seconds * _BUDGET["stream"])
    # the gathers from the array's first half, each repetition after a read of the second
    # (caches and address translations cold, as a decode step meets its gathered rows)
    ga, fl = a[: a.size // 2], a[a.size // 2 :]
    gather, src_gather = hb.measure_gather(ga, seconds * _BUDGET["gather"], rng, flush=fl)
    gather256, src_gather256 = hb.measure_gather(
        ga, seconds * _BUDGET["gather256"], rng, row=hb.GATHER_ROW_SHORT, flush=fl
    )
    # (one thread reads at most 1 GiB of it: at least six passes at 10-30 GB/s)
    a1 = a[: min(a.size, ONE_THREAD_MAX_BYTES // 4)]
    bw1, src_bw1 = hb.on_one_thread(hb.measure_stream, a1, seconds * _BUDGET["stream1"])
    gather1, src_gather1 = hb.on_one_thread(
        hb.measure_gather, ga, seconds * _BUDGET["gather1"], rng, flush=fl
    )
    overlap, src_overlap = hb.measure_overlap(a, seconds * _BUDGET["overlap"], rng)
    g_overlap, src_g_overlap = hb.measure_gather_overlap(a, seconds * _BUDGET["goverlap"], rng)
    dense_call, sparq_call, src_dcall, src_scall = hb.measure_calls(
        seconds * _BUDGET["calls"], rng, flush=a
    )
    del a
    fma, src_fma = hb.measure_fma(seconds * _BUDGET["fma"], rng)
    fma1, src_fma1 = hb.on_one_thread(hb.measure_fma, seconds * _BUDGET["fma1"], rng)
    exps, src_exp = hb.measure_exp(seconds * _BUDGET["exp"], rng)
    exp_sum, src_exp_sum = hb.measure_exp_sum(seconds * _BUDGET["expsum"], rng)
    topk_rate, src_topk = hb.measure_topk(seconds * _BUDGET["topk"], rng)
    div, src_div = hb.measure_div(seconds * _BUDGET["div"], rng)
    sweep, src_sweep = hb.measure_sweep(seconds * _BUDGET["sweep"], rng)
    copy, src_copy = hb.measure_column_copy(seconds * _BUDGET["copy"], rng)
    attend, src_attend = hb.measure_attend(seconds * _BUDGET["attend"], rng)
    attend1, src_attend1 = hb.measure_attend(seconds * _BUDGET["attend"], rng, heads=1)
    dense_fma, src_dense_fma = hb.measure_attend(seconds * _BUDGET["dense"], rng, dense=True)
    dense16, src_dense16 = hb.measure_attend(
        seconds * _BUDGET["dense"], rng, dense=True, dtype="float16"
    )
    dense1, src_dense1 = hb.measure_attend(seconds * _BUDGET["dense"], rng, heads=1, dense=True)
    dense1_16, src_dense1_16 = hb.measure_attend(
        seconds * _BUDGET["dense"], rng, heads=1, dense=True, dtype="float16"
    )
    widen = {}
    for dt in hb.WIDEN_DTYPES:
        widen[dt] = hb.measure_widen(dt, seconds * _BUDGET["widen"] / 3, rng)
    flops32, m = _matmul_flops(seconds * _BUDGET["matmul"])
    w_overlap = {
        dt: hb.measure_widen_overlap(seconds * _BUDGET["woverlap"] / 3, rng, dt)
        for dt in hb.WIDEN_DTYPES
    }
    today = datetime.date.today().isoformat()
    src_mm = f"measured: numpy float32 512^3 matmul (numpy's BLAS threads), best of {m}"
    return Hardware(
        name="host",
        description=(
            f"this machine ({platform.machine()}, {os.cpu_count()} logical CPUs, "
            f"{threads} Numba threads), measured"
        ),
        kind="cpu",
        mem_bandwidth_bytes_per_s=bw,
        peak_flops_fp16=flops32,
        peak_flops_fp32=flops32,
        mem_capacity_bytes=float(_total_memory_bytes()),
        onchip_bytes=0.0,
        mem_efficiency=1.0,
        flop_efficiency=1.0,
        kernel_latency_s=5e-6,
        mem_transaction_bytes=64,
        topk_bytes_per_s=topk_rate,
        threads=threads,
        fma_f64_per_s=fma,
        exp_per_s=exps,
        exp_sum_per_s=exp_sum,
        gather_bytes_per_s=gather,
        gather256_bytes_per_s=gather256,
        thread_bandwidth_bytes_per_s=bw1,
        thread_gather_bytes_per_s=gather1,
        thread_fma_per_s=fma1,
        div_f64_per_s=div,
        widen_f32_per_s=widen["float32"][0],
        widen_f16_per_s=widen["float16"][0],
        widen_bf16_per_s=widen["bfloat16"][0],
        stream_fma_overlap=overlap,
        widen_fma_overlap=w_overlap["float32"][0],
        widen_f16_fma_overlap=w_overlap["float16"][0],
        widen_bf16_fma_overlap=w_overlap["bfloat16"][0],
        gather_fma_overlap=g_overlap,
        sweep_fma_per_s=sweep,
        column_copy_per_s=copy,
        attend_fma_per_s=attend,
        attend1_fma_per_s=attend1,
        dense_fma_per_s=dense_fma,
        dense_f16_fma_per_s=dense16,
        dense1_fma_per_s=dense1,
        dense1_f16_fma_per_s=dense1_16,
        dense_call_s=dense_call,
        sparq_call_s=sparq_call,
        sources={
            "mem_bandwidth_bytes_per_s": (src_bw, today),
            "peak_flops_fp16": (src_mm + " (fp16 not measured)", today),
            "peak_flops_fp32": (src_mm, today),
            "mem_capacity_bytes": ("os.sysconf page size x physical pages (1 if unknown)", today),
            "onchip_bytes": ("not measured", today),
            "mem_efficiency": ("1.0: the bandwidth is already an achieved figure", today),
            "flop_efficiency": ("1.0: the FLOP/s is already an achieved figure", today),
            "kernel_latency_s": ("assumption: thread-pool wake-up ~5 us", today),
            "mem_transaction_bytes": ("64-byte cache line (x86-64 and arm64)", today),
            "topk_bytes_per_s": (src_topk, today),
            "threads": ("numba.get_num_threads() during the measurement", today),
            "fma_f64_per_s": (src_fma, today),
            "exp_per_s": (src_exp, today),
            "exp_sum_per_s": (src_exp_sum, today),
            "gather_bytes_per_s": (src_gather, today),
            "gather256_bytes_per_s": (src_gather256, today),
            "thread_bandwidth_bytes_per_s": (src_bw1, today),
            "thread_gather_bytes_per_s": (src_gather1, today),
            "thread_fma_per_s": (src_fma1, today),
            "div_f64_per_s": (src_div, today),
            "widen_f32_per_s": (widen["float32"][1], today),
            "widen_f16_per_s": (widen["float16"][1], today),
            "widen_bf16_per_s": (widen["bfloat16"][1], today),
            "stream_fma_overlap": (src_overlap, today),
            "widen_fma_overlap": (w_overlap["float32"][1], today),
            "widen_f16_fma_overlap": (w_overlap["float16"][1], today),
            "widen_bf16_fma_overlap": (w_overlap["bfloat16"][1], today),
            "gather_fma_overlap": (src_g_overlap, today),
            "sweep_fma_per_s": (src_sweep, today),
            "column_copy_per_s": (src_copy, today),
            "attend_fma_per_s": (src_attend, today),
            "attend1_fma_per_s": (src_attend1, today),
            "dense_fma_per_s": (src_dense_fma, today),
            "dense_f16_fma_per_s": (src_dense16, today),
            "dense1_fma_per_s": (src_dense1, today),
            "dense1_f16_fma_per_s": (src_dense1_16, today),
            "dense_call_s": (src_dcall, today),
            "sparq_call_s": (src_scall, today),
        },
        origin="measured",
    )


def _matmul_flops(budget_s: float) -> tuple[float, int]:
    """Achieved float32 FLOP/s of a 512^3 numpy matmul, best of at least 3."""
    n = 512
    x = np.ones((n, n), dtype=np.float32)
    x @ x
    best = float("inf")
    m = 0
    t_end = time.perf_counter() + budget_s
    while m < 3 or (time.perf_counter() < t_end and m < 50):
        t = time.perf_counter()
        x @ x
        best = min(best, time.perf_counter() - t)
        m += 1
    return 2 * n**3 / best, m


def _total_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 1


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}  # fmt: skip


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string: quote and backslash escaped, every control
    character (U+0000-U+001F, U+007F) as its short escape or ``\\uXXXX``."""
    out = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def hardware_to_toml(hw: Hardware) -> str:
    """Serialise a profile to TOML that :func:`parse_hardware` reads back (equal profile;
    any text in the name, description and sources is escaped)."""
    if not isinstance(hw, Hardware):
        raise TypeError(f"hw: expected a Hardware, got {type(hw).__name__}")

    def fmt(v) -> str:
        if isinstance(v, str):
            return _toml_string(v)
        if isinstance(v, int):
            return str(v)
        return repr(float(v))

    lines = [
        f"name = {fmt(hw.name)}",
        f"description = {fmt(hw.description)}",
        f"kind = {fmt(hw.kind)}",
    ]
    keys = list(_NUMERIC) + [k for k in _OPTIONAL_NUMERIC if getattr(hw, k) is not None]
    for k in keys:
        lines.append(f"{k} = {fmt(getattr(hw, k))}")
    for k in keys:
        src, date = hw.sources.get(k, ("unknown", datetime.date.today().isoformat()))
        lines.append("")
        lines.append(f"[sources.{k}]")
        lines.append(f"source = {fmt(src)}")
        lines.append(f"retrieved = {fmt(date)}")
    return "\n".join(lines) + "\n"
