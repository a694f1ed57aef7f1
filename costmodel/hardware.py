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
    check_keys,
    check_sources,
    get_number,
    get_str,
    load_named,
    loads_toml,
    shipped_names,
)

__all__ = [
    "Hardware",
    "KINDS",
    "list_hardware",
    "load_hardware",
    "parse_hardware",
    "hardware_from_spec",
    "measure_host",
    "hardware_to_toml",
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
}
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
        bandwidth-bound, so it is priced with its own rate (spec topk.md, cost-model section).
    onchip_bandwidth_bytes_per_s : float or None
        Bandwidth of ``onchip_bytes`` when a working set is resident; None if unknown.
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
    sources: dict = field(default_factory=dict, compare=False, repr=False)
    origin: str = field(default="", compare=False)

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for arithmetic in ``dtype`` (fp8 uses the fp16 figure)."""
        return self.peak_flops_fp32 if dtype == "float32" else self.peak_flops_fp16

    def replace(self, **changes) -> Hardware:
        """A copy with some fields changed (validated like a file)."""
        new = dataclasses.replace(self, **changes)
        _validate_values(dataclasses.asdict(new), origin=f"{self.origin or self.name} (modified)")
        return new


def _validate_values(values: dict, origin: str) -> None:
    for key, (lo, strict, hi, integer) in {**_NUMERIC, **_OPTIONAL_NUMERIC}.items():
        if key in values and values[key] is not None:
            get_number(
                values, key, origin, minimum=lo, strict_min=strict, maximum=hi, integer=integer
            )


def parse_hardware(text: str, origin: str) -> Hardware:
    """Parse and validate one profile's TOML text (``origin`` names it in errors)."""
    data = loads_toml(text, origin)
    check_keys(data, required=_REQUIRED, optional=_OPTIONAL, origin=origin)
    values: dict = {}
    for key, (lo, strict, hi, integer) in {**_NUMERIC, **_OPTIONAL_NUMERIC}.items():
        if key in data:
            values[key] = get_number(
                data, key, origin, minimum=lo, strict_min=strict, maximum=hi, integer=integer
            )
    numeric_present = {k for k in data if k in _NUMERIC or k in _OPTIONAL_NUMERIC}
    sources = check_sources(data["sources"], numeric_present, origin)
    tx = values["mem_transaction_bytes"]
    if tx & (tx - 1):
        raise ValueError(f"{origin}: key 'mem_transaction_bytes' must be a power of two, got {tx}")
    if values["peak_flops_fp16"] < values["peak_flops_fp32"] * 0.5:
        raise ValueError(
            f"{origin}: key 'peak_flops_fp16' ({values['peak_flops_fp16']:.3g}) is below half "
            f"of 'peak_flops_fp32' ({values['peak_flops_fp32']:.3g}): impossible"
        )
    return Hardware(
        name=get_str(data, "name", origin),
        description=get_str(data, "description", origin),
        kind=get_str(data, "kind", origin, choices=KINDS),
        sources=sources,
        origin=origin,
        **values,
    )


def list_hardware() -> list[str]:
    """Names of the profiles shipped with the package, sorted."""
    return shipped_names("costmodel.profiles")


def load_hardware(name_or_path: str | os.PathLike) -> Hardware:
    """Load a shipped profile by name (``"h100-sxm"``) or a user profile by file path.

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones), or an invalid file.
    FileNotFoundError
        A path that does not exist.
    """
    if isinstance(name_or_path, Hardware):
        return name_or_path
    return load_named(name_or_path, package="costmodel.profiles", what="hardware profile",
                      kinds="profiles", parse=parse_hardware)  # fmt: skip


#: defaults for an ad-hoc datasheet profile, with the reason for each (docs/costmodel.md)
ADHOC_DEFAULTS: dict[str, tuple[float, str]] = {
    "mem_efficiency": (0.8, "spec costmodel.md: eta_mem ~0.8 at large working sets"),
    "flop_efficiency": (0.7, "assumption: typical large-GEMM fraction of dense peak"),
    "kernel_latency_s": (1e-5, "spec costmodel.md: 7-15 us per decode-attention call"),
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
    """
    d = ADHOC_DEFAULTS
    today = datetime.date.today().isoformat()
    values = {
        "mem_bandwidth_bytes_per_s": float(bandwidth_bytes_per_s),
        "peak_flops_fp16": float(peak_flops_fp16),
        "peak_flops_fp32": float(
            peak_flops_fp32 if peak_flops_fp32 is not None else peak_flops_fp16 / 2
        ),
        "mem_capacity_bytes": float(mem_capacity_bytes),
        "onchip_bytes": float(onchip_bytes),
        "mem_efficiency": float(
            mem_efficiency if mem_efficiency is not None else d["mem_efficiency"][0]
        ),
        "flop_efficiency": float(
            flop_efficiency if flop_efficiency is not None else d["flop_efficiency"][0]
        ),
        "kernel_latency_s": float(
            kernel_latency_s if kernel_latency_s is not None else d["kernel_latency_s"][0]
        ),
        "mem_transaction_bytes": int(
            mem_transaction_bytes
            if mem_transaction_bytes is not None
            else d["mem_transaction_bytes"][0]
        ),
        "topk_bytes_per_s": float(
            topk_bytes_per_s
            if topk_bytes_per_s is not None
            else d["topk_fraction_of_bandwidth"][0] * bandwidth_bytes_per_s
        ),
    }
    _validate_values(values, origin="ad-hoc hardware spec")
    tx = values["mem_transaction_bytes"]
    if tx & (tx - 1):
        raise ValueError(
            f"ad-hoc hardware spec: mem_transaction_bytes must be a power of two, got {tx}"
        )
    sources = {k: ("given on the command line / by the caller", today) for k in values}
    return Hardware(
        name=name,
        description="ad-hoc profile from datasheet numbers",
        kind="gpu",
        sources=sources,
        origin="ad-hoc",
        **values,
    )


def _read_bandwidth(nbytes: int, seconds: float) -> tuple[float, int]:
    """Best-of-N STREAM-like read bandwidth of ``nbytes`` of float64 with numpy."""
    a = np.ones(nbytes // 8, dtype=np.float64)
    a.sum()  # touch the pages
    best = float("inf")
    reps = 0
    t_end = time.perf_counter() + seconds
    while reps < 3 or time.perf_counter() < t_end:
        t = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t)
        reps += 1
        if reps >= 50:
            break
    return a.nbytes / best, reps


def measure_host(*, nbytes: int = 256 * 2**20, seconds: float = 1.0) -> Hardware:
    """Build a profile of this machine with a short STREAM-like read test (~``seconds``).

    The read test is ``numpy.sum`` over a ``nbytes`` float64 array (larger than any LLC),
    best of several repetitions; numpy's sum is single-threaded, so the result is the
    bandwidth one core can pull, a lower bound on the socket's. Peak FLOP/s is not measured
    here: a 2-second float32 matmul gives a rough achieved figure (numpy's BLAS, all
    threads). Other fields use :data:`ADHOC_DEFAULTS` with CPU-appropriate overrides
    (64-byte cache lines, 5 us per kernel: an assumption).
    """
    if nbytes < 8 * 2**20:
        raise ValueError(f"nbytes must be >= 8 MiB for a meaningful read test, got {nbytes}")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    bw, reps = _read_bandwidth(nbytes, seconds * 0.75)
    n = 512
    x = np.ones((n, n), dtype=np.float32)
    x @ x
    t = time.perf_counter()
    m = 0
    while time.perf_counter() - t < seconds * 0.25 or m < 2:
        x @ x
        m += 1
    flops32 = 2 * n**3 * m / (time.perf_counter() - t)
    today = datetime.date.today().isoformat()
    src_bw = f"measured: numpy sum of {nbytes / 2**20:.0f} MiB float64, best of {reps} (1 thread)"
    hw = Hardware(
        name="host",
        description=f"this machine ({platform.machine()}, {os.cpu_count()} logical CPUs), measured",
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
        topk_bytes_per_s=ADHOC_DEFAULTS["topk_fraction_of_bandwidth"][0] * bw,
        sources={
            "mem_bandwidth_bytes_per_s": (src_bw, today),
            "peak_flops_fp16": ("measured: numpy float32 512^3 matmul (fp16 not measured)", today),
            "peak_flops_fp32": ("measured: numpy float32 512^3 matmul", today),
            "mem_capacity_bytes": ("os.sysconf page size x physical pages (1 if unknown)", today),
            "onchip_bytes": ("not measured", today),
            "mem_efficiency": ("1.0: the bandwidth is already an achieved figure", today),
            "flop_efficiency": ("1.0: the FLOP/s is already an achieved figure", today),
            "kernel_latency_s": ("assumption: thread-pool wake-up ~5 us", today),
            "mem_transaction_bytes": ("64-byte cache line (x86-64 and arm64)", today),
            "topk_bytes_per_s": ("0.06 x measured bandwidth (H100 ratio, this repo)", today),
        },
        origin="measured",
    )
    return hw


def _total_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 1


def hardware_to_toml(hw: Hardware) -> str:
    """Serialise a profile to TOML that :func:`parse_hardware` reads back."""

    def fmt(v) -> str:
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
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
        lines.append(f'retrieved = "{date}"')
    return "\n".join(lines) + "\n"
