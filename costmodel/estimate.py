"""Roofline time of decode attention and of a whole decode step.

Per kernel (docs/costmodel.md, "Time"): ``t = t0 + max(bytes / (eta_mem * BW),
flops / (eta_flop * peak))`` with ``t0`` the profile's ``kernel_latency_s``. Top-k is not
bandwidth-bound and gets its own term ``t0 + input_bytes / topk_bytes_per_s`` (exact top-k;
bucketed top-k divided by ``bucketed_topk_speedup``; ``topk="none"`` prices it at zero, as the
paper's Eq. 11 does). A working set that fits in on-chip memory whose bandwidth the profile
gives is served at that bandwidth.

A whole decode step (:func:`estimate_decode`) reads the weights once whatever the batch and
the KV cache once per sequence; SparQ speeds up only the attention part (Amdahl).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from costmodel import hardware as _hardware
from costmodel import shapes as _shapes
from costmodel._tomlio import check_bool, check_real, show
from costmodel.hardware import Hardware
from costmodel.shapes import MAX_HEAD_DIM, ModelShape
from costmodel.traffic import MAX_SIZE as TRAFFIC_MAX_SIZE
from costmodel.traffic import Traffic, attention_traffic, dtype_bytes
from reference import check_int

__all__ = [
    "BUCKETED_TOPK_SPEEDUP",
    "IMPLEMENTATIONS",
    "StepEstimate",
    "Estimate",
    "Speedup",
    "DecodeEstimate",
    "OpCost",
    "decode_ops",
    "allreduce_time",
    "tp_heads",
    "TP_FIELDS",
    "estimate_attention",
    "speedup",
    "estimate_decode",
    "attention_transfer_fraction",
    "ideal_hardware",
    "MAX_SIZE",
    "MAX_BUCKETED_TOPK_SPEEDUP",
    "MAX_WEIGHT_BYTES_PER_PARAM",
]

#: exact torch.topk 40-180 GB/s vs bucketed 0.17-1.28 TB/s on H100 PCIe (docs/costmodel.md, 3):
#: ratio of geometric means sqrt(170*1280)/sqrt(40*180) = 5.5
BUCKETED_TOPK_SPEEDUP = 5.5

BOUNDS = ("memory", "compute", "latency", "topk")
#: ``estimate_attention(implementation=...)``: ``"fused"`` (one tuned kernel per step, timed
#: on the device; ``"kernel"`` is its old name), ``"eager"`` (op by op, wall clock, see
#: :mod:`costmodel.eager`), ``"reference"`` (this package's CPU reference, costmodel.host)
IMPLEMENTATIONS = ("fused", "kernel", "eager", "reference")

#: largest batch, head count, sequence length, layer count or thread count the cost model
#: takes (every count then converts to float64 exactly and no time overflows); head_dim is
#: bounded by :data:`costmodel.shapes.MAX_HEAD_DIM`. One value with the byte models.
MAX_SIZE = TRAFFIC_MAX_SIZE
#: largest ``bucketed_topk_speedup`` (the measured ratio is 5.5)
MAX_BUCKETED_TOPK_SPEEDUP = 1e3
#: largest ``weight_bytes_per_param`` (float64 weights are 8)
MAX_WEIGHT_BYTES_PER_PARAM = 16.0


def _size(name: str, value) -> int:
    """A positive int size argument, at most :data:`MAX_SIZE`."""
    return check_int(name, value, lo=1, hi=MAX_SIZE)


def _head_dim(value) -> int:
    return check_int("head_dim", value, lo=1, hi=MAX_HEAD_DIM, hi_name="MAX_HEAD_DIM")


def _method(name: str, value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a method name (str), got {type(value).__name__}"
                        f" {show(value)}")  # fmt: skip
    return value


def _flag(name: str, value, *, allow_none: bool = False):
    """A keyword flag: a real bool (``"no"``, 0 and 1 are rejected), or None if allowed."""
    if allow_none and value is None:
        return None
    return check_bool(value, name)


@dataclass(frozen=True)
class StepEstimate:
    """Time of one kernel (or the top-k term) of an estimate."""

    kernel: str
    bytes: float
    flops: float
    memory_s: float
    compute_s: float
    latency_s: float
    topk_s: float
    time_s: float
    bound: str


@dataclass(frozen=True)
class Estimate:
    """Roofline estimate of one decode-attention call (``n_layers`` layers).

    Attributes
    ----------
    method, hardware : str
    time_s : float
        Sum over kernels of ``t0 + max(memory, compute)`` plus the top-k term.
    bytes, flops : float
        Totals of the byte-level traffic model.
    bound : {"memory", "compute", "latency", "topk"}
        The largest of the summed terms: memory time of memory-bound kernels, compute time of
        compute-bound kernels, launch latency, top-k throughput time.
    memory_s, compute_s, latency_s, topk_s : float
        Those sums (``time_s`` is their total).
    kernels : tuple of StepEstimate
        Per-kernel breakdown.
    traffic : Traffic
        Per-step byte breakdown (see :func:`costmodel.traffic.attention_traffic`).
    resident : bool
        Whether the KV working set was served from on-chip memory.
    params : dict
        The configuration.
    """

    method: str
    hardware: str
    time_s: float
    bytes: float
    flops: float
    bound: str
    memory_s: float
    compute_s: float
    latency_s: float
    topk_s: float
    kernels: tuple[StepEstimate, ...]
    traffic: Traffic
    resident: bool
    params: dict = field(default_factory=dict)

    def breakdown(self) -> dict[str, float]:
        """``{step name: bytes}`` of the traffic model."""
        return self.traffic.by_name()


@dataclass(frozen=True)
class Speedup:
    """``baseline.time_s / method.time_s`` with both estimates."""

    ratio: float
    baseline: Estimate
    method: Estimate


def ideal_hardware(hw: Hardware) -> Hardware:
    """The profile with every correction off: ``eta = 1``, ``t0 = 0`` (the paper's view)."""
    if not isinstance(hw, Hardware):
        raise TypeError(f"hw: expected a Hardware, got {type(hw).__name__}")
    return hw.replace(mem_efficiency=1.0, flop_efficiency=1.0, kernel_latency_s=0.0)


def _resolve_hw(hardware) -> Hardware:
    if isinstance(hardware, (Hardware, str, os.PathLike)):
        return _hardware._load(hardware, "hardware")
    raise TypeError(
        f"hardware: expected a Hardware or a profile name/path, got {type(hardware).__name__}"
    )


def _roofline(
    nbytes: float, flops: float, eff_bw: float, eff_flops: float, lat: float
) -> tuple[float, float, float, str]:
    """``(memory_s, compute_s, time_s, bound)`` of one kernel: ``lat + max(memory, compute)``."""
    mem = nbytes / eff_bw
    comp = flops / eff_flops
    top = max(mem, comp)
    if lat > top:
        bound = "latency"
    else:
        bound = "memory" if mem >= comp else "compute"
    return mem, comp, lat + top, bound


def _price(
    traffic: Traffic,
    hw: Hardware,
    *,
    topk: str,
    resident: bool,
    bucketed_topk_speedup: float,
    n_calls: int,
    threads: int | None = None,
) -> tuple[StepEstimate, ...]:
    eff_bw = _effective_bw(hw, resident, threads)
    eff_flops = hw.flop_efficiency * hw.peak_flops(traffic.dtype)
    out = []
    for kern in traffic.kernels:
        steps = [s for s in traffic.steps if s.kernel == kern]
        nbytes = sum(s.bytes for s in steps)
        flops = sum(s.flops for s in steps)
        if kern == "topk":
            if topk == "none":
                out.append(StepEstimate(kern, nbytes, flops, 0, 0, 0, 0, 0, "topk"))
                continue
            rate = hw.topk_bytes_per_s * (bucketed_topk_speedup if topk == "bucketed" else 1.0)
            t_k = nbytes / rate
            t0 = hw.topk_latency_s if hw.topk_latency_s is not None else hw.kernel_latency_s
            lat = n_calls * t0
            bound = "topk" if t_k >= lat else "latency"
            out.append(StepEstimate(kern, nbytes, flops, 0.0, 0.0, lat, t_k, lat + t_k, bound))
            continue
        lat = n_calls * hw.kernel_latency_s
        mem, comp, t, bound = _roofline(nbytes, flops, eff_bw, eff_flops, lat)
        out.append(
            StepEstimate(
                kern,
                nbytes,
                flops,
                mem if mem >= comp else 0.0,
                comp if comp > mem else 0.0,
                lat,
                0.0,
                t,
                bound,
            )
        )
    return tuple(out)


def _effective_bw(hw: Hardware, resident: bool, threads: int | None) -> float:
    """``mem_efficiency x`` the bandwidth of the memory the KV cache is served from, at most
    ``threads x thread_bandwidth_bytes_per_s`` where the profile gives a per-thread figure.

    A measured profile (one with ``threads``: its bandwidth was read on that many threads)
    takes the host model's line between its one-thread and its all-thread reads instead
    (:func:`costmodel.host.threads_bandwidth`): its own bandwidth at ``threads`` or more,
    not ``threads x`` the one-thread rate, so the two models scale one profile alike."""
    bw = hw.onchip_bandwidth_bytes_per_s if resident else hw.mem_bandwidth_bytes_per_s
    eff = hw.mem_efficiency * bw
    if threads is not None and hw.thread_bandwidth_bytes_per_s is not None and not resident:
        if hw.threads is not None:
            from costmodel.host import threads_bandwidth

            eff = threads_bandwidth(eff, hw.thread_bandwidth_bytes_per_s, threads, hw.threads)
        else:
            eff = min(eff, threads * hw.thread_bandwidth_bytes_per_s)
    return eff


def _threads(hw: Hardware, threads) -> int | None:
    """The thread count an estimate uses: ``threads`` (checked) or the profile's."""
    if threads is None:
        return hw.threads if hw.threads is not None else hw.cpu_cores
    threads = _size("threads", threads)
    if hw.thread_bandwidth_bytes_per_s is None:
        raise ValueError(
            f"threads: profile {hw.name!r} has no 'thread_bandwidth_bytes_per_s', so a thread "
            f"count cannot change its bandwidth (got threads={threads})"
        )
    return threads


def _assemble(method, hw, traffic, kernels, resident, params) -> Estimate:
    memory_s = sum(k.memory_s for k in kernels)
    compute_s = sum(k.compute_s for k in kernels)
    latency_s = sum(k.latency_s for k in kernels)
    topk_s = sum(k.topk_s for k in kernels)
    terms = {"memory": memory_s, "compute": compute_s, "latency": latency_s, "topk": topk_s}
    bound = max(BOUNDS, key=lambda b: terms[b])
    return Estimate(
        method=method,
        hardware=hw.name,
        time_s=float(sum(k.time_s for k in kernels)),
        bytes=traffic.bytes,
        flops=traffic.flops,
        bound=bound,
        memory_s=memory_s,
        compute_s=compute_s,
        latency_s=latency_s,
        topk_s=topk_s,
        kernels=kernels,
        traffic=traffic,
        resident=resident,
        params=params,
    )


def estimate_attention(
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
    store_k_twice: bool | None = None,
    gqa_selection: str = "shared",
    topk: str = "exact",
    n_layers: int = 1,
    resident: bool | None = None,
    bucketed_topk_speedup: float = BUCKETED_TOPK_SPEEDUP,
    ideal: bool = False,
    implementation: str = "fused",
    threads: int | None = None,
    **paper_kwargs,
) -> Estimate:
    """Roofline time of one decode-attention call.

    Parameters
    ----------
    method : str
        ``"dense"``, ``"sparq"`` (byte-level model) or another of
        :data:`costmodel.traffic.METHODS` (paper formula x dtype bytes, one kernel).
    hardware : Hardware or str
        Profile or its name / TOML path.
    batch, n_heads, n_kv_heads, seq_len, head_dim : int
        Shapes; ``n_kv_heads`` defaults to ``n_heads`` (no GQA).
    dtype : str
        KV/q dtype (``float16``, ``bfloat16``, ``float8``, ``float32``).
    r, k : int
        SparQ components / positions.
    store_k_twice : bool or None
        See :func:`costmodel.traffic.attention_traffic`. ``None`` (default): True for
        ``implementation="fused"`` and ``"eager"``, False for ``"reference"`` (the
        reference reads the S-major cache).
    gqa_selection : see :func:`costmodel.traffic.attention_traffic`.
    topk : {"exact", "bucketed", "none"}
        How the top-k is priced (``"none"``: free, as in Eq. 11).
    n_layers : int
        Identical calls to add (bytes, FLOPs and kernel launches all scale).
    resident : bool or None
        Serve the KV working set from on-chip memory. ``None`` (default): yes when the
        profile gives ``onchip_bandwidth_bytes_per_s`` and the KV cache of one call fits in
        ``onchip_bytes`` (a repeated microbenchmark keeps it there; a real decode step
        evicts it with the weights, so :func:`estimate_decode` passes ``False``). ``True``
        on a profile without ``onchip_bandwidth_bytes_per_s`` is an error.
    ideal : bool
        Turn every correction off (``eta = 1``, ``t0 = 0``, free top-k, no residency):
        bytes / peak bandwidth, the paper's and the authors' blog's view.
    implementation : {"fused", "eager", "reference"}
        ``"fused"`` (default; ``"kernel"`` is the same, its old name): the roofline of a
        well-tuned kernel sequence described above, one kernel per step, timed on the
        device. ``"eager"``: the op-by-op implementation of the paper's public SparQ
        microbenchmark timed by wall clock (:mod:`costmodel.eager`: per-op host dispatch,
        device time per op, one synchronisation; dense and sparq, exact top-k; needs the
        profile's ``host_dispatch_s`` and ``sync_latency_s``; ``ideal`` does not apply).
        ``"reference"``: the time of this package's own CPU reference
        (``reference.dense_attention`` / ``reference.sparq_attention``, float64
        accumulation) on a measured host profile, by :func:`costmodel.host.predict_reference`
        (dense and sparq only; exact top-k, shared GQA selection; ``resident`` and
        ``ideal`` do not apply).
    threads : int or None
        CPU threads the call runs on (default the profile's ``threads``, else its
        ``cpu_cores``): the bandwidth is
        at most ``threads x thread_bandwidth_bytes_per_s`` (an error on a profile without
        that field). With ``implementation="reference"``,
        :func:`costmodel.host.predict_reference`'s ``threads``.
    **paper_kwargs
        Peer methods' extra :func:`costmodel.traffic.transfers` arguments (Quest
        ``page_size``, DoubleSparsity ``bits``); with ``implementation="reference"``,
        :func:`costmodel.host.predict_reference`'s ``v_mean_supplied``.

    Returns
    -------
    Estimate

    Raises
    ------
    TypeError, ValueError
        Naming the argument: sizes are ints in ``[1, MAX_SIZE]`` (``head_dim <=
        MAX_HEAD_DIM``); ``store_k_twice``, ``resident`` (or None) and ``ideal`` real bools;
        ``bucketed_topk_speedup`` a finite number in ``(0, MAX_BUCKETED_TOPK_SPEEDUP]``.
    """
    method = _method("method", method)
    store_k_twice = _flag("store_k_twice", store_k_twice, allow_none=True)
    resident = _flag("resident", resident, allow_none=True)
    ideal = _flag("ideal", ideal)
    batch = _size("batch", batch)
    n_heads = _size("n_heads", n_heads)
    n_kv_heads = n_heads if n_kv_heads is None else _size("n_kv_heads", n_kv_heads)
    seq_len = _size("seq_len", seq_len)
    head_dim = _head_dim(head_dim)
    n_layers = _size("n_layers", n_layers)
    bucketed_topk_speedup = check_real(
        "bucketed_topk_speedup", bucketed_topk_speedup, maximum=MAX_BUCKETED_TOPK_SPEEDUP
    )
    if implementation == "reference":
        return _estimate_reference(
            method,
            hardware=hardware,
            batch=batch,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            seq_len=seq_len,
            head_dim=head_dim,
            dtype=dtype,
            r=r,
            k=k,
            store_k_twice=store_k_twice,
            gqa_selection=gqa_selection,
            topk=topk,
            n_layers=n_layers,
            resident=resident,
            ideal=ideal,
            extra=paper_kwargs if threads is None else {**paper_kwargs, "threads": threads},
        )
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"implementation: expected one of {list(IMPLEMENTATIONS)}, got {show(implementation)}"
        )
    eager = implementation == "eager"
    if eager and ideal:
        raise ValueError("ideal: does not apply to implementation='eager' (got ideal=True)")
    if store_k_twice is None:
        store_k_twice = True
    hw = _resolve_hw(hardware)
    threads = _threads(hw, threads)
    if not isinstance(topk, str) or topk not in ("exact", "bucketed", "none"):
        raise ValueError(f"topk: expected 'exact', 'bucketed' or 'none', got {show(topk)}")
    traffic = attention_traffic(
        method,
        batch=batch,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        seq_len=seq_len,
        head_dim=head_dim,
        dtype=dtype,
        r=r,
        k=k,
        store_k_twice=store_k_twice,
        gqa_selection=gqa_selection,
        transaction_bytes=hw.mem_transaction_bytes,
        n_layers=n_layers,
        **paper_kwargs,
    )
    if ideal:
        hw = ideal_hardware(hw)
        topk = "none"
        resident = False
    if resident and hw.onchip_bandwidth_bytes_per_s is None:
        raise ValueError(
            f"resident=True needs an on-chip bandwidth, but profile {hw.name!r} has no "
            "'onchip_bandwidth_bytes_per_s'"
        )
    if resident is None:
        per_call_cache = traffic.kv_cache_bytes / n_layers
        resident = bool(
            hw.onchip_bandwidth_bytes_per_s is not None and per_call_cache <= hw.onchip_bytes
        )
    if eager:
        return _estimate_eager(
            method,
            hw,
            traffic,
            resident=resident,
            topk=topk,
            batch=batch,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            seq_len=seq_len,
            head_dim=head_dim,
            r=r,
            k=k,
            store_k_twice=store_k_twice,
            gqa_selection=gqa_selection,
            n_layers=n_layers,
            threads=threads,
        )
    kernels = _price(
        traffic,
        hw,
        topk=topk,
        resident=resident,
        bucketed_topk_speedup=bucketed_topk_speedup,
        n_calls=n_layers,
        threads=threads,
    )
    params = dict(
        batch=batch,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        seq_len=seq_len,
        head_dim=head_dim,
        dtype=traffic.dtype,
        r=r,
        k=k,
        store_k_twice=store_k_twice if method == "sparq" else None,
        gqa_selection=gqa_selection if method == "sparq" else None,
        topk=topk if method == "sparq" else None,
        n_layers=n_layers,
        ideal=ideal,
    )
    if threads is not None:
        params["threads"] = threads
    return _assemble(method, hw, traffic, kernels, resident, params)


def _estimate_eager(method, hw, traffic, *, resident, topk, threads, **shape) -> Estimate:
    """``implementation="eager"``: the op list of :mod:`costmodel.eager`, priced op by op."""
    from costmodel import eager as _eager

    if topk != "exact":
        raise ValueError(
            f"topk: implementation='eager' prices the exact torch.topk ops, got {topk!r}"
        )
    store_k_twice = shape.pop("store_k_twice")
    ops = _eager.eager_ops(traffic, transaction_bytes=hw.mem_transaction_bytes, **shape)
    eff_bw = _effective_bw(hw, resident, threads)
    eff_flops = hw.flop_efficiency * hw.peak_flops(traffic.dtype)
    res = _eager.price_eager(ops, hw, eff_bw=eff_bw, eff_flops=eff_flops, n_calls=shape["n_layers"])
    kernels = []
    for op, (_, _, _host, dev) in zip(ops, res["per_op"], strict=True):
        if op.op_class == "view":
            continue
        if op.op_class == "topk":
            t_k = op.bytes / hw.topk_bytes_per_s
            kernels.append(
                StepEstimate(
                    op.name,
                    op.bytes,
                    op.flops,
                    0.0,
                    0.0,
                    dev - t_k,
                    t_k,
                    dev,
                    "topk" if t_k >= dev - t_k else "latency",
                )
            )
            continue
        floor = dev - max(0.0, _eager_roof(op, hw, eff_bw, eff_flops))
        mem, comp, _, bound = _roofline(
            op.bytes, op.flops, _op_bw(op, hw, eff_bw), eff_flops, floor
        )
        kernels.append(
            StepEstimate(
                op.name,
                op.bytes,
                op.flops,
                mem if mem >= comp else 0.0,
                comp if comp > mem else 0.0,
                floor,
                0.0,
                dev,
                bound,
            )
        )
    memory_s = sum(kk.memory_s for kk in kernels)
    compute_s = sum(kk.compute_s for kk in kernels)
    topk_s = sum(kk.topk_s for kk in kernels)
    time_s = res["time_s"]
    overhead = time_s - memory_s - compute_s - topk_s
    terms = {"memory": memory_s, "compute": compute_s, "latency": overhead, "topk": topk_s}
    params = dict(
        shape,
        dtype=traffic.dtype,
        store_k_twice=store_k_twice if method == "sparq" else None,
        gqa_selection=shape["gqa_selection"] if method == "sparq" else None,
        topk=topk if method == "sparq" else None,
        ideal=False,
        implementation="eager",
        threads=threads,
        ops=len(ops) // shape["n_layers"],
        kernel_ops=len(kernels) // shape["n_layers"],
        host_s=res["host_s"],
        device_s=res["device_s"],
        sync_s=res["sync_s"],
        host_bound=res["host_s"] + res["sync_s"] >= res["device_s"],
    )
    return Estimate(
        method=method,
        hardware=hw.name,
        time_s=float(time_s),
        bytes=float(sum(op.bytes for op in ops)),
        flops=float(sum(op.flops for op in ops)),
        bound=max(BOUNDS, key=lambda b: terms[b]),
        memory_s=memory_s,
        compute_s=compute_s,
        latency_s=overhead,
        topk_s=topk_s,
        kernels=tuple(kernels),
        traffic=traffic,
        resident=resident,
        params=params,
    )


def _op_bw(op, hw: Hardware, eff_bw: float) -> float:
    from costmodel.eager import op_bandwidth

    return op_bandwidth(op, hw, eff_bw)


def _eager_roof(op, hw: Hardware, eff_bw: float, eff_flops: float) -> float:
    return max(op.bytes / _op_bw(op, hw, eff_bw), op.flops / eff_flops)


#: predict_reference options that estimate_attention passes through
_REFERENCE_OPTIONS = ("threads", "v_mean_supplied")


def _estimate_reference(
    method, *, store_k_twice, gqa_selection, topk, resident, ideal, extra, **common
) -> Estimate:
    """``estimate_attention(..., implementation="reference")``: checks, then the host model."""
    from costmodel.host import predict_reference

    if gqa_selection != "shared":
        raise ValueError(
            "implementation='reference' models one selection per KV head (gqa_selection="
            f"'shared'), got gqa_selection={gqa_selection!r}"
        )
    if topk != "exact":
        raise ValueError(f"implementation='reference' models exact top-k, got topk={topk!r}")
    if resident is not None or ideal:
        raise ValueError("resident and ideal do not apply to implementation='reference'")
    unknown = sorted(set(extra) - set(_REFERENCE_OPTIONS))
    if unknown:
        raise ValueError(
            f"implementation='reference' does not use argument(s) {unknown} "
            f"(it takes {list(_REFERENCE_OPTIONS)})"
        )
    return predict_reference(method, store_k_twice=bool(store_k_twice), **common, **extra)


def speedup(
    method: str = "sparq",
    baseline: str = "dense",
    *,
    hardware: Hardware | str,
    r: int | None = None,
    k: int | None = None,
    **common,
) -> Speedup:
    """``time(baseline) / time(method)`` under the same shapes and hardware.

    ``r`` and ``k`` go to whichever of the two methods is not ``"dense"`` (given with two
    dense methods they are an error); every other keyword goes to both
    :func:`estimate_attention` calls, which check them.
    """
    method = _method("method", method)
    baseline = _method("baseline", baseline)
    if method == baseline == "dense" and (r is not None or k is not None):
        raise ValueError("r and k do not apply to method 'dense' (got r or k)")
    rk = dict(r=r, k=k)
    base = estimate_attention(
        baseline, hardware=hardware, **({} if baseline == "dense" else rk), **common
    )
    meth = estimate_attention(
        method, hardware=hardware, **({} if method == "dense" else rk), **common
    )
    return Speedup(base.time_s / meth.time_s, base, meth)


def attention_transfer_fraction(
    *, seq_len: int, batch: int, group_size: int, d_model: int
) -> float:
    """Fraction of a decode step's transfers that are the KV cache (paper App. C).

    With ``N = 12*d_model^2`` parameters per layer and ``rho = S / (g * d_model)``:
    ``rho / (rho + 6 / B)``.
    """
    S = _size("seq_len", seq_len)
    B = _size("batch", batch)
    g = _size("group_size", group_size)
    dm = _size("d_model", d_model)
    rho = S / (g * dm)
    return rho / (rho + 6 / B)


@dataclass(frozen=True)
class DecodeEstimate:
    """One decode step of a whole model.

    Attributes
    ----------
    time_s : float
        ``weights_s + attention.time_s``.
    weights_s : float
        Reading the weights once (all layers and the output projection) and their matmuls,
        one kernel launch per layer plus one for the output projection.
    weights_bytes, weights_flops : float
    attention : Estimate
        All layers' attention (KV per sequence).
    attention_time_fraction : float
        ``attention.time_s / time_s``.
    tp : int
        Devices the model is split over (tensor parallelism); every byte and time figure is
        one device's (all devices run in parallel).
    allreduce_s : float
        The all-reduces of a tensor-parallel step (two per layer; 0 for ``tp = 1``).
    allreduce_message_bytes : float
        Size of one all-reduce's message (``batch x d_model x`` activation bytes).
    kv_transfer_fraction : float
        ``attention bytes / (attention + weights bytes)``.
    bound : str
        ``"memory"``/``"compute"``/``"latency"``/``"topk"`` of the larger part.
    """

    model: str
    hardware: str
    method: str
    batch: int
    seq_len: int
    time_s: float
    weights_s: float
    weights_bytes: float
    weights_flops: float
    weights_bound: str
    attention: Estimate
    attention_time_fraction: float
    kv_transfer_fraction: float
    bound: str
    n_layers: int = 1
    weights_ops: tuple[StepEstimate, ...] = ()
    tp: int = 1
    allreduce_s: float = 0.0
    allreduce_message_bytes: float = 0.0
    n_allreduce: int = 0


@dataclass(frozen=True)
class OpCost:
    """One op of a decode step (:func:`decode_ops`): totals over the whole model.

    ``calls`` is how many times the op runs per step (``n_layers`` for a per-layer op, 1 for
    the output projection and the eager synchronisation); ``per_layer`` says whether the
    whole-model figures divided by ``n_layers`` are one layer's."""

    op: str
    part: str
    bytes: float
    flops: float
    time_s: float
    bound: str
    calls: int
    per_layer: bool


#: display names of the fused kernels of :func:`costmodel.traffic.attention_traffic`
_OP_LABELS = {
    "attention": "dense attention",
    "step1": "SparQ step 1 (approximate scores)",
    "topk": "SparQ top-k",
    "step3": "SparQ gathered attention",
}


def decode_ops(est: DecodeEstimate) -> tuple[OpCost, ...]:
    """Per-op breakdown of one decode step: the attention kernels (fused: dense attention, or
    SparQ step 1, top-k and gathered attention; eager: each framework op, plus the host
    dispatch and synchronisation the device does not hide), the weights' GEMVs of the
    layers, the output projection (with the final norm) and, when the estimate has one, the
    all-reduce. The ``time_s`` of the ops add up to ``est.time_s``."""
    if not isinstance(est, DecodeEstimate):
        raise TypeError(f"est: expected a DecodeEstimate, got {type(est).__name__}")
    L = est.n_layers
    att = est.attention
    merged: dict[str, list] = {}
    for kern in att.kernels:
        acc = merged.setdefault(kern.kernel, [0.0, 0.0, 0.0, {}, 0])
        acc[0] += kern.bytes
        acc[1] += kern.flops
        acc[2] += kern.time_s
        acc[3][kern.bound] = acc[3].get(kern.bound, 0.0) + kern.time_s
        acc[4] += 1
    out = []
    for name, (nb, nf, t, bounds, n) in merged.items():
        out.append(
            OpCost(
                _OP_LABELS.get(name, name) if att.params.get("implementation") != "eager"
                else f"{att.method} eager {name}",
                "attention",
                nb,
                nf,
                t,
                max(bounds, key=bounds.get),
                L if n == 1 else n,
                True,
            )
        )  # fmt: skip
    rest = att.time_s - sum(o.time_s for o in out)
    if att.params.get("implementation") == "eager" and rest > 0:
        out.append(
            OpCost("eager host dispatch + sync (not hidden)", "attention", 0.0, 0.0, rest,
                   "latency", 1, False)
        )  # fmt: skip
    for w in est.weights_ops:
        out.append(
            OpCost(
                w.kernel,
                "weights",
                w.bytes,
                w.flops,
                w.time_s,
                w.bound,
                L if w.kernel.startswith("weights") else 1,
                w.kernel.startswith("weights"),
            )
        )
    if est.tp > 1:
        out.append(
            OpCost(
                f"all-reduce (2 per layer, {est.tp} devices)",
                "communication",
                est.n_allreduce * 2.0 * (est.tp - 1) / est.tp * est.allreduce_message_bytes,
                0.0,
                est.allreduce_s,
                "communication",
                est.n_allreduce,
                True,
            )
        )
    return tuple(out)


def estimate_decode(
    model: ModelShape | str,
    *,
    hardware: Hardware | str,
    batch: int,
    seq_len: int,
    method: str = "dense",
    dtype: str = "float16",
    weight_bytes_per_param: float | None = None,
    r: int | None = None,
    k: int | None = None,
    store_k_twice: bool = True,
    gqa_selection: str = "shared",
    topk: str = "exact",
    bucketed_topk_speedup: float = BUCKETED_TOPK_SPEEDUP,
    ideal: bool = False,
    implementation: str = "fused",
    tp: int = 1,
) -> DecodeEstimate:
    """Time of one decode step of ``model`` for ``batch`` sequences of ``seq_len`` positions.

    Weights are read once per step whatever the batch (``params_read_per_step *
    weight_bytes_per_param``; default the KV dtype's bytes; llama.cpp Q8_0 is 34/32 = 1.0625);
    their matmuls cost ``2 * params * batch`` FLOPs. Attention is
    :func:`estimate_attention` over all layers with the KV cache per sequence, not resident
    (the weights evict it). Activations, norms, RoPE and sampling are not counted.

    ``implementation`` (``"fused"`` or ``"eager"``) prices the attention as in
    :func:`estimate_attention` (all layers issued back to back, one synchronisation); the
    weights' matmuls are priced as fused kernels either way (the host cost of an eager
    model's other ops is not counted).

    ``tp`` (tensor parallelism, Megatron-style): each of ``tp`` devices holds
    ``n_heads / tp`` query heads with their KV heads (``n_kv_heads / tp``, or one KV head
    replicated when ``tp > n_kv_heads``) and ``1 / tp`` of the weights; every layer ends its
    attention block and its MLP with an all-reduce of the ``batch x d_model`` activations
    (two per layer), each priced as a ring: ``allreduce_latency_s + 2 (tp - 1) / tp x
    message / link_bandwidth_bytes_per_s`` (both from the profile; ``ideal`` drops the
    latency). The result is one device's step (all run in parallel).

    Arguments are checked as in :func:`estimate_attention`; ``weight_bytes_per_param`` is
    None or a finite number in ``(0, MAX_WEIGHT_BYTES_PER_PARAM]``; ``model`` a
    :class:`~costmodel.shapes.ModelShape`, a shipped name or a TOML path; ``tp`` an int
    that divides ``n_heads`` and divides or is a multiple of ``n_kv_heads``, on a profile
    with ``link_bandwidth_bytes_per_s`` and ``allreduce_latency_s`` when above 1.
    """
    method = _method("method", method)
    store_k_twice = _flag("store_k_twice", store_k_twice)
    ideal = _flag("ideal", ideal)
    if implementation not in ("fused", "kernel", "eager"):
        raise ValueError(f"implementation: expected 'fused' or 'eager', got {show(implementation)}")
    hw = _resolve_hw(hardware)
    if not isinstance(model, (ModelShape, str, os.PathLike)):
        raise TypeError(
            f"model: expected a ModelShape or a model name/path, got {type(model).__name__}"
        )
    m = _shapes._load(model, "model")
    B = _size("batch", batch)
    S = _size("seq_len", seq_len)
    heads_dev, kv_dev = tp_heads(m, hw, tp)
    tp = int(tp)
    dname, e = dtype_bytes(dtype)
    if weight_bytes_per_param is None:
        wb = float(e)
    else:
        wb = check_real(
            "weight_bytes_per_param", weight_bytes_per_param, maximum=MAX_WEIGHT_BYTES_PER_PARAM
        )
    att = estimate_attention(
        method,
        hardware=hw,
        batch=B,
        n_heads=heads_dev,
        n_kv_heads=kv_dev,
        seq_len=S,
        head_dim=m.head_dim,
        dtype=dtype,
        r=r,
        k=k,
        store_k_twice=store_k_twice,
        gqa_selection=gqa_selection,
        topk=topk,
        n_layers=m.n_layers,
        resident=False,
        bucketed_topk_speedup=bucketed_topk_speedup,
        ideal=ideal,
        implementation=implementation,
    )
    hw_eff = ideal_hardware(hw) if ideal else hw
    params = m.params_read_per_step / tp
    w_bytes = params * wb
    w_flops = 2.0 * params * B
    _, _, w_time, w_bound = _roofline(
        w_bytes,
        w_flops,
        hw_eff.mem_efficiency * hw_eff.mem_bandwidth_bytes_per_s,
        hw_eff.flop_efficiency * hw_eff.peak_flops(dname),
        (m.n_layers + 1) * hw_eff.kernel_latency_s,
    )
    w_ops = _weights_ops(m, wb, B, hw_eff, dname, tp)
    msg = float(B * m.d_model * e)
    n_ar = 2 * m.n_layers if tp > 1 else 0
    ar_s = n_ar * allreduce_time(msg, tp, hw, ideal=ideal) if tp > 1 else 0.0
    total = w_time + att.time_s + ar_s
    bound = w_bound if w_time >= att.time_s else att.bound
    if ar_s > max(w_time, att.time_s):
        bound = "communication"
    return DecodeEstimate(
        model=m.name,
        hardware=hw.name,
        method=method,
        batch=B,
        seq_len=S,
        time_s=total,
        weights_s=w_time,
        weights_bytes=w_bytes,
        weights_flops=w_flops,
        weights_bound=w_bound,
        attention=att,
        attention_time_fraction=att.time_s / total,
        kv_transfer_fraction=att.bytes / (att.bytes + w_bytes),
        bound=bound,
        n_layers=m.n_layers,
        weights_ops=w_ops,
        tp=tp,
        allreduce_s=ar_s,
        allreduce_message_bytes=msg if tp > 1 else 0.0,
        n_allreduce=n_ar,
    )


#: profile fields a tensor-parallel estimate needs
TP_FIELDS = ("link_bandwidth_bytes_per_s", "allreduce_latency_s")


def tp_heads(m: ModelShape, hw: Hardware, tp) -> tuple[int, int]:
    """``(query heads, KV heads)`` of one device when ``m`` is split over ``tp`` devices
    (checks ``tp``; see :func:`estimate_decode`)."""
    tp = _size("tp", tp)
    if tp == 1:
        return m.n_heads, m.n_kv_heads
    missing = [f for f in TP_FIELDS if getattr(hw, f) is None]
    if missing:
        raise ValueError(
            f"tp: {tp} devices need the profile fields {missing}, which profile {hw.name!r} "
            "does not give (sparq estimate: --link-bandwidth, --allreduce-latency)"
        )
    if m.n_heads % tp:
        raise ValueError(f"tp: expected a divisor of n_heads ({m.n_heads}) of {m.name}, got {tp}")
    if m.n_kv_heads % tp and tp % m.n_kv_heads:
        raise ValueError(
            f"tp: expected a divisor or a multiple of n_kv_heads ({m.n_kv_heads}) of {m.name}, "
            f"got {tp}"
        )
    return m.n_heads // tp, max(1, m.n_kv_heads // tp)


def allreduce_time(message_bytes: float, tp: int, hw: Hardware, *, ideal: bool = False) -> float:
    """One ring all-reduce of ``message_bytes`` over ``tp`` devices:
    ``allreduce_latency_s + 2 (tp - 1) / tp x message_bytes / link_bandwidth_bytes_per_s``
    (``ideal``: without the latency); 0 for ``tp = 1``."""
    if tp == 1:
        return 0.0
    lat = 0.0 if ideal else hw.allreduce_latency_s
    return lat + 2.0 * (tp - 1) / tp * message_bytes / hw.link_bandwidth_bytes_per_s


def _weights_ops(m: ModelShape, wb: float, B: int, hw: Hardware, dname: str, tp: int = 1):
    """The weights' GEMVs as two ops: every layer's block (``n_layers`` launches) and the
    output projection with the final norm (one launch); same intensity, so their times add
    up to the one roofline of all weights."""
    bw = hw.mem_efficiency * hw.mem_bandwidth_bytes_per_s
    fl = hw.flop_efficiency * hw.peak_flops(dname)
    layer_params = m.n_layers * m.params_per_layer / tp
    head_params = m.params_read_per_step / tp - layer_params
    out = []
    for name, params, calls in (
        ("weights GEMVs (attention + FFN)", layer_params, m.n_layers),
        ("output projection + final norm", head_params, 1),
    ):
        nb, nf = params * wb, 2.0 * params * B
        mem, comp, t, bound = _roofline(nb, nf, bw, fl, calls * hw.kernel_latency_s)
        out.append(
            StepEstimate(name, nb, nf, mem if mem >= comp else 0.0, comp if comp > mem else 0.0,
                         calls * hw.kernel_latency_s, 0.0, t, bound)
        )  # fmt: skip
    return tuple(out)
