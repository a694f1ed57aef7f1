"""``sparq hardware list|show NAME|measure [--save FILE]``."""

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
from sparq_cli.cli import number_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p_list = sub.add_parser("list", help="list the shipped profiles")
    p_list.add_argument("--json", action="store_true")
    p_show = sub.add_parser("show", help="show one profile with the source of every number")
    p_show.add_argument("name", help="profile name or TOML path")
    p_show.add_argument("--json", action="store_true")
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
    p_meas.add_argument("--json", action="store_true")


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
    return (
        f"  on {hw.threads} threads: read {hw.mem_bandwidth_bytes_per_s / 1e9:.1f} GB/s, "
        f"gather (512 B rows) {hw.gather_bytes_per_s / 1e9:.1f} GB/s, "
        f"float64 FMA {hw.fma_f64_per_s / 1e9:.2f} G/s, exp {hw.exp_per_s / 1e9:.2f} G/s, "
        f"top-k {hw.topk_bytes_per_s / 1e9:.2f} GB/s"
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
