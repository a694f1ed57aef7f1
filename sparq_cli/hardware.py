"""``sparq hardware list|show NAME|measure [--save FILE]|calibrate --out FILE``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from costmodel.hardware import (
    MEASURE_MAX_SECONDS,
    hardware_to_toml,
    list_hardware,
    load_hardware,
    measure_host,
)
from costmodel.host import widen_overlap
from sparq_cli.cli import number_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p_list = sub.add_parser("list", help="list the shipped profiles")
    p_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_show = sub.add_parser("show", help="show one profile with the source of every number")
    p_show.add_argument("name", help="profile name or TOML path")
    p_show.add_argument(
        "--json", action="store_true", help="print JSON (every field with its source)"
    )
    p_meas = sub.add_parser(
        "measure",
        help="measure this machine on all Numba threads (~SECONDS s: read bandwidth, float64 "
        "FMA, exp, top-k and gather rates)",
    )
    p_meas.add_argument("--save", metavar="FILE", help="write the profile as TOML")
    p_meas.add_argument(
        "--seconds",
        type=number_arg(minimum=0, strict_min=True, maximum=MEASURE_MAX_SECONDS),
        default=1.0,
        help=f"time budget, 0 < SECONDS <= {MEASURE_MAX_SECONDS:g} (default 1)",
    )
    p_meas.add_argument("--json", action="store_true", help="print the profile as JSON")
    p_cal = sub.add_parser(
        "calibrate",
        help="measure this machine's GPU (or CPU) with PyTorch and fit a profile: read "
        "bandwidth, the best SDPA backend's efficiency and t0, per-op host dispatch, "
        "synchronisation latency, top-k rate; fitted on half of a (batch, S) grid, the error "
        "on the other half reported",
    )
    p_cal.add_argument("--out", required=True, metavar="PROFILE.toml",
                       help="write the calibrated profile here")  # fmt: skip
    p_cal.add_argument(
        "--measurements",
        metavar="FILE.json",
        default=None,
        help="also keep the raw measurements (default: PROFILE.json next to --out)",
    )
    p_cal.add_argument(
        "--from-measurements",
        metavar="FILE.json",
        default=None,
        help="fit a measurement file written earlier instead of measuring (no torch needed)",
    )
    p_cal.add_argument(
        "--base",
        default=None,
        help="profile giving the datasheet numbers (bandwidth, peaks, capacity); default "
        "h200-sxm for an H200, else an ad-hoc error asks for it",
    )
    p_cal.add_argument("--name", default=None, help="name of the written profile")
    p_cal.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="where to measure with PyTorch (default cuda)",
    )
    p_cal.add_argument(
        "--max-seconds",
        type=number_arg(minimum=0, strict_min=True, maximum=3600),
        default=420.0,
        help="time budget of the measurement (default 420)",
    )
    p_cal.add_argument("--quick", action="store_true", help="tiny grids (a smoke test)")
    p_cal.add_argument("--report", metavar="FILE.md", default=None,
                       help="write the fit report (Markdown) here")  # fmt: skip


def _as_dict(hw) -> dict:
    d = dataclasses.asdict(hw)
    d["sources"] = {k: {"source": s, "retrieved": r} for k, (s, r) in hw.sources.items()}
    return d


def _show(hw, out=None) -> None:
    out = sys.stdout if out is None else out
    print(f"{hw.name}: {hw.description} [{hw.kind}]  ({hw.origin})", file=out)
    for f in dataclasses.fields(hw):
        if f.name in ("name", "description", "kind", "sources", "origin"):
            continue
        v = getattr(hw, f.name)
        if v is None:
            continue
        src, date = hw.sources.get(f.name, ("", ""))
        print(f"  {f.name:<30} {v:<12.6g} {src} ({date})", file=out)


def _host_summary(hw) -> str:
    """One line of the measured host rates in readable units."""
    g256 = hw.gather256_bytes_per_s
    short = "" if g256 is None else f", (256 B rows) {g256 / 1e9:.1f} GB/s"
    sw = hw.sweep_fma_per_s
    at, at1 = hw.attend_fma_per_s, hw.attend1_fma_per_s
    sweep = (
        ("" if sw is None else f"SparQ step-3 sweep {sw / 1e9:.2f} G FMA/s, ")
        + ("" if at is None else f"SparQ step-7 passes {at / 1e9:.2f} G FMA/s, ")
        + ("" if at1 is None else f"(one head) {at1 / 1e9:.2f} G FMA/s, ")
    )
    es, cc, dp = hw.exp_sum_per_s, hw.column_copy_per_s, hw.dense_fma_per_s
    dp16, d1, d1_16 = hw.dense_f16_fma_per_s, hw.dense1_fma_per_s, hw.dense1_f16_fma_per_s
    exp_sum = (
        ("" if es is None else f", exp summed {es / 1e9:.2f} G/s")
        + ("" if cc is None else f", column copy (K once) {cc / 1e9:.2f} G/s")
        + ("" if dp is None else f", dense passes {dp / 1e9:.2f} G FMA/s")
        + ("" if dp16 is None else f" (float16 rows {dp16 / 1e9:.2f})")
        + ("" if d1 is None else f", dense passes one head {d1 / 1e9:.2f} G FMA/s")
        + ("" if d1_16 is None else f" (float16 rows {d1_16 / 1e9:.2f})")
    )
    b1, g1, f1 = hw.thread_bandwidth_bytes_per_s, hw.thread_gather_bytes_per_s, hw.thread_fma_per_s
    parts = [
        f"{what} {v / 1e9:.1f} {unit}"
        for what, v, unit in (
            ("read", b1, "GB/s"),
            ("gather (512 B rows)", g1, "GB/s"),
            ("float64 FMA", f1, "G/s"),
        )
        if v is not None
    ]
    one = "one thread: " + ", ".join(parts) + "; " if parts else ""
    return (
        f"  on {hw.threads} threads: read {hw.mem_bandwidth_bytes_per_s / 1e9:.1f} GB/s, "
        f"gather (512 B rows) {hw.gather_bytes_per_s / 1e9:.1f} GB/s{short}, "
        f"float64 FMA {hw.fma_f64_per_s / 1e9:.2f} G/s, exp {hw.exp_per_s / 1e9:.2f} G/s"
        f"{exp_sum}, "
        f"top-k {hw.topk_bytes_per_s / 1e9:.2f} GB/s, division {hw.div_f64_per_s / 1e9:.2f} "
        f"G/s, widen float32/float16/bfloat16 {hw.widen_f32_per_s / 1e9:.0f}/"
        f"{hw.widen_f16_per_s / 1e9:.0f}/{hw.widen_bf16_per_s / 1e9:.0f} G/s, read/FMA "
        f"overlap {hw.stream_fma_overlap:.2f}, widen/FMA overlap float32/float16/bfloat16 "
        f"{widen_overlap(hw):.2f}/{widen_overlap(hw, 'float16'):.2f}/"
        f"{widen_overlap(hw, 'bfloat16'):.2f}, {sweep}"
        f"{one}call {hw.dense_call_s * 1e6:.0f} us (dense) / "
        f"{hw.sparq_call_s * 1e6:.0f} us (sparq)"
    )


def run(args) -> int:
    action = getattr(args, "action", None)
    if action in (None, "list"):
        names = list_hardware()
        profs = [load_hardware(n) for n in names]
        if getattr(args, "json", False):
            json.dump([_as_dict(h) for h in profs], sys.stdout, indent=1)
            print()
            return 0
        print(
            f"{'name':<16} {'kind':<4} {'BW TB/s':>8} {'fp16 TF/s':>9} {'mem GB':>7}  description"
        )
        for h in profs:
            print(
                f"{h.name:<16} {h.kind:<4} {h.mem_bandwidth_bytes_per_s / 1e12:>8.3f} "
                f"{h.peak_flops_fp16 / 1e12:>9.1f} {h.mem_capacity_bytes / 1e9:>7.0f}  "
                f"{h.description}"
            )
        return 0
    if action == "show":
        hw = load_hardware(args.name)
        if args.json:
            json.dump(_as_dict(hw), sys.stdout, indent=1)
            print()
        else:
            _show(hw)
        return 0
    if action == "calibrate":
        return _calibrate(args)
    # measure: a --save path that cannot be written fails before the measurement
    if args.save is not None:
        target = Path(args.save)
        if not args.save.strip() or target.is_dir():
            raise ValueError(f"--save: expected a file path, got the directory {args.save!r}")
        if not target.parent.is_dir():
            raise ValueError(f"--save: directory {str(target.parent)!r} does not exist")
    hw = measure_host(seconds=args.seconds)
    if args.json:
        json.dump(_as_dict(hw), sys.stdout, indent=1)
        print()
    else:
        _show(hw)
        print(_host_summary(hw))
    if args.save is not None:
        Path(args.save).write_text(hardware_to_toml(hw), encoding="utf-8")
        if not args.json:
            print(f"wrote {args.save} (use it with: sparq estimate --hardware {args.save})")
    return 0


def _writable(opt: str, path: str) -> Path:
    target = Path(path)
    if not path.strip() or target.is_dir():
        raise ValueError(f"{opt}: expected a file path, got {path!r}")
    if not target.parent.is_dir():
        raise ValueError(f"{opt}: directory {str(target.parent)!r} does not exist")
    return target


def _default_base(meas: dict) -> str:
    name = str(meas.get("device_name", ""))
    for key, prof in (
        ("H200", "h200-sxm"),
        ("H100 80GB HBM3", "h100-sxm"),
        ("H100 PCIe", "h100-pcie"),
        ("A100-SXM4-40GB", "a100-40gb-sxm"),
        ("A100-SXM4-80GB", "a100-80gb-sxm"),
        ("A10G", "a10g"),
        ("L4", "l4"),
        ("L40S", "l40s"),
    ):
        if key in name:
            return prof
    raise ValueError(
        f"--base: no shipped profile matches device {name!r}; give the datasheet profile "
        "with --base NAME|PATH"
    )


def _calibrate(args) -> int:
    """``sparq hardware calibrate``: measure (or read), fit, write profile + measurements."""
    from costmodel import calibration

    out = _writable("--out", args.out)
    meas_path = args.measurements
    if meas_path is None and args.from_measurements is None:
        meas_path = str(out.with_suffix(".json"))
    if meas_path is not None:
        _writable("--measurements", meas_path)
    if args.report is not None:
        _writable("--report", args.report)
    if args.from_measurements is not None:
        src = Path(args.from_measurements)
        if not src.is_file():
            raise ValueError(f"--from-measurements: no such file {args.from_measurements!r}")
        meas = json.loads(src.read_text(encoding="utf-8"))
    else:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ValueError(
                "sparq hardware calibrate measures with PyTorch, which is not installed "
                "(pip install torch; or fit an earlier file with --from-measurements)"
            ) from None
        from costmodel import _calibrate as measure_mod

        meas = measure_mod.measure(
            device=args.device,
            out=meas_path,
            quick=args.quick,
            max_seconds=args.max_seconds,
            log=lambda m: print(m, file=sys.stderr),
        )
    if meas_path is not None and args.from_measurements is not None:
        Path(meas_path).write_text(json.dumps(meas, indent=1), encoding="utf-8")
    base = load_hardware(args.base if args.base is not None else _default_base(meas))
    name = args.name if args.name is not None else base.name
    desc = (
        f"{base.description}; calibrated by sparq hardware calibrate on {meas.get('device_name')}"
    )
    hw, report = calibration.fit_profile(meas, base, name=name, description=desc)
    text = calibration.report_markdown(report)
    print(text)
    out.write_text(hardware_to_toml(hw), encoding="utf-8")
    if args.report is not None:
        Path(args.report).write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.out}" + (f" and {meas_path}" if meas_path else ""))
    return 0
