"""``sparq estimate``: dense vs SparQ decode on a hardware profile (the README's main job).

Defaults: Llama 2 7B on ``h100-sxm``, fp16, SparQ at 1/8 compression with ``r = d/8`` and
``k = S/16`` (docs/costmodel.md: "1/8 ~ r = d/8, k = S/16" in the public GPU port), S from
4k to 128k, batch 1 and 64. For each row: attention bytes, time and bound of both methods
(all layers), the attention speedup, and the whole decode step (weights + attention).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import textwrap
from pathlib import Path

from costmodel import hardware as _hw
from costmodel.estimate import (
    BUCKETED_TOPK_SPEEDUP,
    MAX_SIZE,
    MAX_WEIGHT_BYTES_PER_PARAM,
    decode_ops,
    estimate_decode,
)
from costmodel.hardware import Hardware, hardware_from_spec, load_hardware
from costmodel.request import MAX_GEN_LEN, estimate_request
from costmodel.shapes import MAX_HEAD_DIM, list_models, load_model
from costmodel.traffic import dtype_bytes
from sparq_cli.cli import int_arg, number_arg, version

DEFAULT_SEQ_LENS = (4096, 8192, 16384, 32768, 65536)
#: "max": at each S, the largest batch whose weights and SparQ KV cache fit the device
DEFAULT_BATCHES = (1, "max")
#: most values in one of --seq-lens / --batch, and most (batch, S) rows in one run
MAX_LIST = 256
MAX_ROWS = 4096


def _as_int(item: str) -> int | None:
    """``item`` as an int (decimal, or an integral e-notation float such as ``4e3``); None
    when it is not a number or not integral."""
    try:
        return int(item, 10)
    except ValueError:
        pass
    try:
        f = float(item)
    except ValueError:
        return None
    return int(f) if math.isfinite(f) and f.is_integer() else None


def _int_list(text: str) -> list[int]:
    """Comma-separated positive integers up to :data:`costmodel.estimate.MAX_SIZE`, at most
    :data:`MAX_LIST` of them; ``4e3`` is accepted, ``1.5`` is rejected (no silent
    truncation)."""
    items = [x.strip() for x in text.split(",")]
    if len(items) > MAX_LIST:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_LIST} comma-separated values, got {len(items)}"
        )
    out = []
    for item in items:
        if not item:
            continue
        value = _as_int(item)
        if value is None:
            raise argparse.ArgumentTypeError(f"expected integers, got {item!r} in {text!r}")
        if not 1 <= value <= MAX_SIZE:
            raise argparse.ArgumentTypeError(
                f"expected positive integers <= {MAX_SIZE} (2**53), got {item!r} in {text!r}"
            )
        out.append(value)
    if not out:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return out


def _batch_list(text: str) -> list:
    """:func:`_int_list`, where an item may also be ``max`` (the largest batch that fits)."""
    items = [x.strip() for x in text.split(",")]
    out: list = []
    ints = [x for x in items if x.lower() != "max"]
    if ints:
        out.extend(_int_list(",".join(ints)))
    if len(ints) != len(items):
        out.append("max")
    if not out:
        raise argparse.ArgumentTypeError(f"expected positive integers or 'max', got {text!r}")
    return out


def _dtype(text: str) -> str:
    try:
        dtype_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("dtype: ")) from None
    return text


def _profile_number(key: str):
    """An argparse type for an ad-hoc profile option: the profile key's range and
    plausibility floor (:mod:`costmodel.hardware`), so it fails at parse time naming the
    option."""
    lo, strict, hi, _ = _hw._ALL_NUMERIC[key]
    return number_arg(minimum=lo, strict_min=strict, maximum=hi, floor=_hw._PLAUSIBLE_MIN.get(key))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="llama-2-7b",
        help="model: a shipped name, a model TOML path or a Hugging Face config.json path "
        f"(Llama, Mistral, Gemma, Qwen2, GPT-NeoX/Pythia; default llama-2-7b; shipped: "
        f"{', '.join(list_models())})",
    )
    parser.add_argument(
        "--hardware",
        default=None,
        help="profile name or TOML path (default h100-sxm; see `sparq hardware "
        "list`); not together with --bandwidth/--peak-flops",
    )
    adhoc = parser.add_argument_group("ad-hoc datasheet profile (replaces --hardware)")
    num = _profile_number
    adhoc.add_argument(
        "--bandwidth",
        type=num("mem_bandwidth_bytes_per_s"),
        help="memory bandwidth, bytes/s (e.g. 3.35e12)",
    )
    adhoc.add_argument(
        "--peak-flops", type=num("peak_flops_fp16"), help="dense fp16 FLOP/s (e.g. 9.89e14)"
    )
    adhoc.add_argument(
        "--peak-flops-fp32", type=num("peak_flops_fp32"), help="fp32 FLOP/s (default fp16/2)"
    )
    adhoc.add_argument(
        "--capacity", type=num("mem_capacity_bytes"), help="memory bytes (default 80e9)"
    )
    adhoc.add_argument("--mem-efficiency", type=num("mem_efficiency"), help="eta_mem (default 0.8)")
    adhoc.add_argument(
        "--kernel-latency", type=num("kernel_latency_s"), help="t0 seconds per kernel (1e-5)"
    )
    adhoc.add_argument("--topk-rate", type=num("topk_bytes_per_s"),
                       help="top-k bytes/s (default 0.06 x BW)")  # fmt: skip
    parser.add_argument(
        "--seq-lens",
        type=_int_list,
        default=None,
        help="comma-separated S values of the decode-step table (default 4k..128k); not with "
        "--prompt-len/--gen-len",
    )
    parser.add_argument(
        "--batch",
        type=_batch_list,
        default=list(DEFAULT_BATCHES),
        help="comma-separated batch sizes; 'max' = at each S the largest batch whose weights "
        "and SparQ KV cache fit the device (default 1,max)",
    )
    request = parser.add_argument_group(
        "whole requests and tensor parallelism",
        "--prompt-len P --gen-len N price a whole request instead of one decode step: "
        "prefill of P tokens plus N decode steps as the cache grows, per batch size",
    )
    request.add_argument(
        "--prompt-len",
        type=int_arg(lo=1, hi=MAX_GEN_LEN),
        default=None,
        help="prompt tokens per request (with --gen-len)",
    )
    request.add_argument(
        "--gen-len",
        type=int_arg(lo=1, hi=MAX_GEN_LEN),
        default=None,
        help="generated tokens per request: N decode steps (with --prompt-len)",
    )
    request.add_argument(
        "--link-bandwidth",
        type=_profile_number("link_bandwidth_bytes_per_s"),
        default=None,
        help="with --tp: bytes/s of one device's links in one direction, replacing the "
        "profile's (NVLink 4: 450e9)",
    )
    request.add_argument(
        "--allreduce-latency",
        type=_profile_number("allreduce_latency_s"),
        default=None,
        help="with --tp: seconds, the smallest time of one all-reduce, replacing the profile's",
    )
    request.add_argument(
        "--tp",
        type=int_arg(lo=1, hi=4096),
        default=1,
        help="tensor parallelism: split heads and weights over TP devices, two all-reduces "
        "per layer priced with the profile's link bandwidth and all-reduce latency "
        "(default 1; needs a profile with link_bandwidth_bytes_per_s)",
    )
    parser.add_argument(
        "--r",
        type=int_arg(lo=1, hi=MAX_HEAD_DIM),
        default=None,
        help="SparQ r (default head_dim/8)",
    )
    parser.add_argument(
        "--k-divisor",
        type=int_arg(lo=1, hi=MAX_SIZE),
        default=16,
        help="SparQ k = floor(S / K_DIVISOR) (16)",
    )
    parser.add_argument(
        "--dtype", type=_dtype, default="float16", help="KV dtype (float16, bfloat16, ...)"
    )
    parser.add_argument(
        "--weight-bytes",
        type=number_arg(minimum=0, strict_min=True, maximum=MAX_WEIGHT_BYTES_PER_PARAM),
        default=None,
        help="bytes per weight (default: the KV dtype's; Q8_0 = 1.0625; at most 16)",
    )
    parser.add_argument(
        "--topk",
        choices=("exact", "bucketed", "none"),
        default="exact",
        help="how SparQ's top-k is priced: exact (the profile's top-k rate and latency; "
        "default), bucketed (5.5x the exact rate), none (free, the paper's Eq. 11 view)",
    )
    parser.add_argument(
        "--store-k-once",
        action="store_true",
        help="SparQ with one (S-major) copy of K: strided step-1 reads",
    )
    parser.add_argument(
        "--gqa-selection",
        choices=("shared", "per_head"),
        default="shared",
        help="SparQ positions under GQA: one selection per KV head shared by its query heads "
        "(default) or one per query head",
    )
    parser.add_argument(
        "--implementation",
        choices=("fused", "eager"),
        default="fused",
        help="fused: one tuned kernel per step, device time (default); eager: the op-by-op "
        "PyTorch implementation of the public SparQ microbenchmark, wall clock (per-op host "
        "dispatch, one synchronisation; needs a profile with host_dispatch_s)",
    )
    parser.add_argument(
        "--ideal",
        action="store_true",
        help="no corrections: eta=1, t0=0, free top-k (bytes / peak BW)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of a table: {version, settings, hardware, rows}",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also show each op of the decode step (dense attention; SparQ step 1, top-k, "
        "gathered attention; the weights' GEMVs; the all-reduces with --tp): bytes, FLOPs, "
        "time and bound per layer and for the whole model (JSON: a 'breakdown' list); with "
        "--prompt-len/--gen-len, the prefill's ops and the last decode step's",
    )
    parser.add_argument(
        "--csv",
        metavar="FILE.csv",
        default=None,
        help="also write the rows to FILE.csv (one line per (batch, S), the JSON row keys as "
        "columns)",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="write a chart of the time per decode step and the SparQ speed-up vs S on the "
        "chosen device at the chosen batch sizes, crossovers marked (needs matplotlib)",
    )
    parser.add_argument(
        "--compare",
        metavar="A,B,...",
        default=None,
        help="with --plot: also draw these profiles (names or TOML paths, comma-separated)",
    )
    parser.add_argument(
        "--roofline",
        metavar="FILE.png",
        default=None,
        help="write the roofline chart of the chosen device with the rows' attention and "
        "weight-GEMV operating points (needs matplotlib)",
    )


#: options that only shape an ad-hoc profile (attribute -> flag)
_ADHOC_ONLY = {
    "peak_flops_fp32": "--peak-flops-fp32",
    "capacity": "--capacity",
    "mem_efficiency": "--mem-efficiency",
    "kernel_latency": "--kernel-latency",
    "topk_rate": "--topk-rate",
}


def resolve_hardware(args) -> Hardware:
    hw = _resolve_hardware(args)
    link = {}
    if getattr(args, "link_bandwidth", None) is not None:
        link["link_bandwidth_bytes_per_s"] = args.link_bandwidth
    if getattr(args, "allreduce_latency", None) is not None:
        link["allreduce_latency_s"] = args.allreduce_latency
    if link:
        if getattr(args, "tp", 1) == 1:
            flags = " and ".join(
                f for f, k in (("--link-bandwidth", "link_bandwidth_bytes_per_s"),
                               ("--allreduce-latency", "allreduce_latency_s")) if k in link
            )  # fmt: skip
            raise ValueError(f"{flags}: apply with --tp above 1 (got --tp 1)")
        hw = hw.replace(**link)
    return hw


def _resolve_hardware(args) -> Hardware:
    if args.bandwidth is not None or args.peak_flops is not None:
        if args.bandwidth is None or args.peak_flops is None:
            raise ValueError("an ad-hoc profile needs both --bandwidth and --peak-flops")
        if args.hardware is not None:
            raise ValueError("give either --hardware or --bandwidth/--peak-flops, not both")
        extra = {}
        if args.capacity is not None:
            extra["mem_capacity_bytes"] = args.capacity
        fp32 = args.peak_flops_fp32
        if fp32 is not None and args.peak_flops < fp32 / 2:
            raise ValueError(
                f"--peak-flops: expected >= half of --peak-flops-fp32 ({fp32:g} / 2), got "
                f"{args.peak_flops:g}"
            )
        try:
            return hardware_from_spec(
                bandwidth_bytes_per_s=args.bandwidth,
                peak_flops_fp16=args.peak_flops,
                peak_flops_fp32=args.peak_flops_fp32,
                mem_efficiency=args.mem_efficiency,
                kernel_latency_s=args.kernel_latency,
                topk_bytes_per_s=args.topk_rate,
                **extra,
            )
        except ValueError as exc:  # a default derived from the options (fp16/2, 0.06 x BW)
            raise ValueError(f"ad-hoc profile (--bandwidth, --peak-flops, ...): {exc}") from None
    given = [flag for attr, flag in _ADHOC_ONLY.items() if getattr(args, attr) is not None]
    if given:
        raise ValueError(
            f"{', '.join(given)} given without --bandwidth/--peak-flops: "
            "these options only shape an ad-hoc profile"
        )
    return load_hardware("h100-sxm" if args.hardware is None else args.hardware)


def model_and_r(args):
    """The model shape of ``--model`` and SparQ's ``r`` (``--r`` or ``head_dim // 8``)."""
    model = load_model(args.model)
    d = model.head_dim
    r = args.r if args.r is not None else max(1, d // 8)
    if args.k_divisor < 1:
        raise ValueError(f"--k-divisor: expected >= 1, got {args.k_divisor}")
    if r > d:
        raise ValueError(f"--r: expected <= head_dim ({d}) of {model.name}, got {r}")
    return model, r


def compute_rows(args, hw: Hardware, estimates: list | None = None) -> list[dict]:
    """One dict per (batch, S); ``estimates``, when given, receives ``(dense, sparq)``
    :class:`~costmodel.estimate.DecodeEstimate` pairs in the same order."""
    model, r = model_and_r(args)
    if args.seq_lens is None:
        args.seq_lens = list(DEFAULT_SEQ_LENS)
    n_rows = len(args.batch) * len(args.seq_lens)
    if n_rows > MAX_ROWS:
        raise ValueError(
            f"--batch x --seq-lens: expected at most {MAX_ROWS} rows, got "
            f"{len(args.batch)} x {len(args.seq_lens)} = {n_rows}"
        )
    rows = []
    too_short = [S for S in args.seq_lens if S < args.k_divisor]
    if too_short:
        raise ValueError(
            f"k = floor(S / {args.k_divisor}) would be 0 at S = {too_short}: "
            "use a smaller --k-divisor or longer --seq-lens"
        )
    seen = set()
    for B_arg in args.batch:
        for S in args.seq_lens:
            k = S // args.k_divisor
            B = B_arg if B_arg != "max" else fitting_batch(args, hw, model, r, S)
            if (B, S) in seen:
                continue
            seen.add((B, S))
            common = dict(
                hardware=hw,
                batch=B,
                seq_len=S,
                dtype=args.dtype,
                weight_bytes_per_param=args.weight_bytes,
                ideal=args.ideal,
                implementation=args.implementation,
                tp=args.tp,
            )
            dense = estimate_decode(model, method="dense", **common)
            sparq = estimate_decode(
                model,
                method="sparq",
                r=r,
                k=k,
                topk=args.topk,
                store_k_twice=not args.store_k_once,
                gqa_selection=args.gqa_selection,
                **common,
            )
            if estimates is not None:
                estimates.append((dense, sparq))
            mem_needed = dense.weights_bytes + (sparq.attention.traffic.kv_cache_bytes)
            cap = hw.mem_capacity_bytes
            rows.append(
                {
                    "model": model.name,
                    "hardware": hw.name,
                    "batch": B,
                    "seq_len": S,
                    "r": r,
                    "k": k,
                    "k_divisor": args.k_divisor,
                    "implementation": args.implementation,
                    "dtype": dense.attention.params["dtype"],
                    "weight_bytes_per_param": args.weight_bytes,
                    "store_k_twice": not args.store_k_once,
                    "topk": "none" if args.ideal else args.topk,
                    "gqa_selection": args.gqa_selection,
                    "ideal": bool(args.ideal),
                    "dense_attn_bytes": dense.attention.bytes,
                    "dense_attn_time_s": dense.attention.time_s,
                    "dense_attn_bound": dense.attention.bound,
                    "sparq_attn_bytes": sparq.attention.bytes,
                    "sparq_attn_time_s": sparq.attention.time_s,
                    "sparq_attn_bound": sparq.attention.bound,
                    "attn_speedup": dense.attention.time_s / sparq.attention.time_s,
                    "weights_bytes": dense.weights_bytes,
                    "dense_step_time_s": dense.time_s,
                    "sparq_step_time_s": sparq.time_s,
                    "step_speedup": dense.time_s / sparq.time_s,
                    "dense_step_bound": dense.bound,
                    "sparq_step_bound": sparq.bound,
                    "tp": args.tp,
                    "dense_allreduce_s": dense.allreduce_s,
                    "memory_needed_bytes": mem_needed,
                    "fits_in_memory": bool(mem_needed <= cap),
                    "max_batch_dense": max_batch(dense, cap),
                    "max_batch_sparq": max_batch(sparq, cap),
                }
            )
    return rows


def compute_request_rows(args, hw: Hardware, requests: list | None = None) -> list[dict]:
    """``--prompt-len P --gen-len N``: one dict per batch size, dense and SparQ requests
    (:func:`costmodel.request.estimate_request`); ``requests``, when given, receives the
    ``(dense, sparq)`` estimates."""
    model, r = model_and_r(args)
    P, N = args.prompt_len, args.gen_len
    rows = []
    batches = []
    for B in args.batch:
        B = B if B != "max" else fitting_batch(args, hw, model, r, P + N)
        if B not in batches:
            batches.append(B)
    for B in batches:
        common = dict(
            hardware=hw,
            batch=B,
            prompt_len=P,
            gen_len=N,
            dtype=args.dtype,
            weight_bytes_per_param=args.weight_bytes,
            ideal=args.ideal,
            implementation=args.implementation,
            tp=args.tp,
        )
        dense = estimate_request(model, method="dense", **common)
        sparq = estimate_request(
            model,
            method="sparq",
            r=r,
            k_divisor=args.k_divisor,
            topk=args.topk,
            store_k_twice=not args.store_k_once,
            gqa_selection=args.gqa_selection,
            **common,
        )
        if requests is not None:
            requests.append((dense, sparq))
        last = sparq.last_step
        mem_needed = last.weights_bytes + last.attention.traffic.kv_cache_bytes
        cap = hw.mem_capacity_bytes
        rows.append(
            {
                "model": model.name,
                "hardware": hw.name,
                "batch": B,
                "prompt_len": P,
                "gen_len": N,
                "tp": args.tp,
                "r": r,
                "k_divisor": args.k_divisor,
                "implementation": args.implementation,
                "dtype": dtype_bytes(args.dtype)[0],
                "weight_bytes_per_param": args.weight_bytes,
                "store_k_twice": not args.store_k_once,
                "topk": "none" if args.ideal else args.topk,
                "gqa_selection": args.gqa_selection,
                "ideal": bool(args.ideal),
                "dense_prefill_s": dense.prefill.time_s,
                "sparq_prefill_s": sparq.prefill.time_s,
                "prefill_bound": dense.prefill.weights_bound,
                "prefill_allreduce_s": dense.prefill.allreduce_s,
                "dense_decode_s": dense.decode_s,
                "sparq_decode_s": sparq.decode_s,
                "decode_speedup": dense.decode_s / sparq.decode_s,
                "dense_first_step_s": dense.first_step.time_s,
                "dense_last_step_s": dense.last_step.time_s,
                "sparq_first_step_s": sparq.first_step.time_s,
                "sparq_last_step_s": sparq.last_step.time_s,
                "dense_request_s": dense.time_s,
                "sparq_request_s": sparq.time_s,
                "request_speedup": dense.time_s / sparq.time_s,
                "dense_tokens_per_s": dense.tokens_per_s,
                "sparq_tokens_per_s": sparq.tokens_per_s,
                "decode_sampled": sparq.decode_sampled,
                "memory_needed_bytes": mem_needed,
                "fits_in_memory": bool(mem_needed <= cap),
                "max_batch_dense": max_batch(dense.last_step, cap),
                "max_batch_sparq": max_batch(last, cap),
            }
        )
    return rows


def print_request_table(rows: list[dict], hw: Hardware, settings: dict, out=None) -> None:
    out = sys.stdout if out is None else out
    for line in header_lines(settings):
        print(line, file=out)
    r0 = rows[0]
    print(
        f"request = prefill of {r0['prompt_len']} tokens + {r0['gen_len']} decode steps "
        f"(S = {r0['prompt_len'] + 1} .. {r0['prompt_len'] + r0['gen_len']}); "
        "x = dense time / SparQ time",
        file=out,
    )
    head = (
        f"{'B':>4} | {'prefill':>9} {'bound':>7} | {'dense dec':>10} {'SparQ dec':>10} "
        f"{'dec x':>6} | {'dense req':>10} {'SparQ req':>10} {'req x':>6} | "
        f"{'dense tok/s':>11} {'SparQ tok/s':>11} | fits | max B d/SparQ"
    )
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        print(
            f"{r['batch']:>4} | {_fmt_time(r['dense_prefill_s']):>9} {r['prefill_bound']:>7} | "
            f"{_fmt_time(r['dense_decode_s']):>10} {_fmt_time(r['sparq_decode_s']):>10} "
            f"{r['decode_speedup']:>5.2f}x | {_fmt_time(r['dense_request_s']):>10} "
            f"{_fmt_time(r['sparq_request_s']):>10} {r['request_speedup']:>5.2f}x | "
            f"{r['dense_tokens_per_s']:>11.1f} {r['sparq_tokens_per_s']:>11.1f} | "
            f"{'yes' if r['fits_in_memory'] else ' NO'}  | "
            f"{r['max_batch_dense']}/{r['max_batch_sparq']}",
            file=out,
        )
    if any(r["decode_sampled"] for r in rows):
        print(
            "decode sums: trapezoid rule over 1025 evenly spaced steps (more than 1024 steps)",
            file=out,
        )
    print(_wrap(_fits_note(hw, rows) + " (at the last step's S)"), file=out)


def fitting_batch(args, hw: Hardware, model, r: int, S: int) -> int:
    """``--batch max`` at ``S``: the largest batch whose weights and SparQ KV cache fit one
    device (at least 1: a row that does not fit even then says so)."""
    probe = estimate_decode(
        model,
        method="sparq",
        hardware=hw,
        batch=1,
        seq_len=S,
        r=r,
        k=max(1, S // args.k_divisor),
        dtype=args.dtype,
        weight_bytes_per_param=args.weight_bytes,
        store_k_twice=not args.store_k_once,
        gqa_selection=args.gqa_selection,
        tp=args.tp,
    )
    return max(1, max_batch(probe, hw.mem_capacity_bytes))


def max_batch(est, capacity: float) -> int:
    """Largest batch whose weights and KV cache (at the estimate's S, per device) fit in
    ``capacity`` bytes: ``floor((capacity - weights) / KV bytes per sequence)``, 0 when
    not even the weights fit."""
    per_seq = est.attention.traffic.kv_cache_bytes / est.batch
    free = capacity - est.weights_bytes
    return max(0, int(free // per_seq)) if free > 0 else 0


def settings_used(args, hw: Hardware, model, r: int) -> dict:
    """Every setting that changes the numbers, with the profile's values as the estimate
    uses them (``--ideal``: ``eta = 1``, ``t0 = 0``, free top-k)."""
    dname, _ = dtype_bytes(args.dtype)
    ideal = bool(args.ideal)
    topk = "none" if ideal else args.topk
    if ideal:
        profile = {
            "name": hw.name,
            "mem_bandwidth_bytes_per_s": hw.mem_bandwidth_bytes_per_s,
            "peak_flops": hw.peak_flops(dname),
            "mem_efficiency": 1.0,
            "flop_efficiency": 1.0,
            "kernel_latency_s": 0.0,
            "topk_bytes_per_s": None,
            "topk_latency_s": None,
        }
    else:
        profile = {
            "name": hw.name,
            "mem_bandwidth_bytes_per_s": hw.mem_bandwidth_bytes_per_s,
            "peak_flops": hw.peak_flops(dname),
            "mem_efficiency": hw.mem_efficiency,
            "flop_efficiency": hw.flop_efficiency,
            "kernel_latency_s": hw.kernel_latency_s,
            "topk_bytes_per_s": None
            if topk == "none"
            else hw.topk_bytes_per_s * (BUCKETED_TOPK_SPEEDUP if topk == "bucketed" else 1.0),
            "topk_latency_s": None
            if topk == "none"
            else (hw.topk_latency_s if hw.topk_latency_s is not None else hw.kernel_latency_s),
        }
    profile["mem_capacity_bytes"] = hw.mem_capacity_bytes
    if args.implementation == "eager":
        for key in ("host_dispatch_s", "sync_latency_s", "op_mem_efficiency", "op_device_s"):
            profile[key] = getattr(hw, key, None)
    if args.tp > 1:
        profile["link_bandwidth_bytes_per_s"] = hw.link_bandwidth_bytes_per_s
        profile["allreduce_latency_s"] = 0.0 if ideal else hw.allreduce_latency_s
    return {
        "profile": profile,
        "model": model.name,
        "dtype": dname,
        "weight_bytes_per_param": args.weight_bytes,
        "r": r,
        "k_rule": f"floor(S / {args.k_divisor})",
        "k_divisor": args.k_divisor,
        "store_k_twice": not args.store_k_once,
        "topk": topk,
        "gqa_selection": args.gqa_selection,
        "ideal": ideal,
        "implementation": args.implementation,
        "tp": args.tp,
        "prompt_len": args.prompt_len,
        "gen_len": args.gen_len,
    }


def header_lines(settings: dict) -> list[str]:
    """The table's header: every setting of ``settings`` that changed the numbers."""
    p = settings["profile"]
    if settings["ideal"]:
        eff = "--ideal: eta_mem 1, eta_flop 1, t0 0, top-k free (bytes / peak bandwidth)"
    else:
        eff = (
            f"eta_mem {p['mem_efficiency']:.3g}, eta_flop {p['flop_efficiency']:.3g}, "
            f"t0 {p['kernel_latency_s'] * 1e6:.3g} us"
        )
        if p["topk_bytes_per_s"] is None:
            eff += ", top-k free (--topk none)"
        else:
            eff += (
                f", top-k {settings['topk']} {p['topk_bytes_per_s'] / 1e9:.3g} GB/s + "
                f"{p['topk_latency_s'] * 1e6:.3g} us"
            )
    line1 = (
        f"{settings['model']} on {p['name']} ({p['mem_bandwidth_bytes_per_s'] / 1e12:.3g} TB/s, "
        f"{_fmt_bytes(p['mem_capacity_bytes'])}; {eff})"
    )
    wb = settings["weight_bytes_per_param"]
    line2 = (
        f"{settings['dtype']} KV"
        + ("" if wb is None else f", {wb:g} bytes/weight")
        + f"; SparQ r={settings['r']}, k=S/{settings['k_divisor']} (floor), "
        + ("K stored twice" if settings["store_k_twice"] else "K stored once (--store-k-once)")
        + f", GQA selection {settings['gqa_selection']}; implementation "
        + settings["implementation"]
    )
    if settings["implementation"] == "eager":
        line2 += (
            f" (attention op by op, wall clock: host dispatch "
            f"{(p.get('host_dispatch_s') or 0) * 1e6:.3g} us/op, sync "
            f"{(p.get('sync_latency_s') or 0) * 1e6:.3g} us)"
        )
    lines = [line1, line2]
    if settings.get("tp", 1) > 1:
        lines.append(
            f"tensor parallel over {settings['tp']} devices: heads and weights split, 2 "
            f"all-reduces per layer at {p['link_bandwidth_bytes_per_s'] / 1e9:.3g} GB/s per "
            f"direction + {p['allreduce_latency_s'] * 1e6:.3g} us each; figures per device"
        )
    return lines


def _fmt_bytes(x: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} B"


def _fmt_time(t: float) -> str:
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} us"


def print_table(rows: list[dict], hw: Hardware, settings: dict, out=None) -> None:
    out = sys.stdout if out is None else out
    for line in header_lines(settings):
        print(line, file=out)
    print(
        "attention = all layers; step = weights + attention"
        + (" + all-reduces" if settings.get("tp", 1) > 1 else ""),
        file=out,
    )
    head = (
        f"{'B':>3} {'S':>7} | {'dense attn':>10} {'time':>9} {'bound':>7} | "
        f"{'SparQ attn':>10} {'time':>9} {'bound':>7} | {'attn x':>6} | "
        f"{'dense step':>10} {'SparQ step':>10} {'step x':>6} | fits | max B d/SparQ"
    )
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        print(
            f"{r['batch']:>3} {r['seq_len']:>7} | {_fmt_bytes(r['dense_attn_bytes']):>10} "
            f"{_fmt_time(r['dense_attn_time_s']):>9} {r['dense_attn_bound']:>7} | "
            f"{_fmt_bytes(r['sparq_attn_bytes']):>10} {_fmt_time(r['sparq_attn_time_s']):>9} "
            f"{r['sparq_attn_bound']:>7} | {r['attn_speedup']:>5.2f}x | "
            f"{_fmt_time(r['dense_step_time_s']):>10} {_fmt_time(r['sparq_step_time_s']):>10} "
            f"{r['step_speedup']:>5.2f}x | {'yes' if r['fits_in_memory'] else ' NO'}  | "
            f"{r['max_batch_dense']}/{r['max_batch_sparq']}",
            file=out,
        )
    print(_wrap(_fits_note(hw, rows)), file=out)
    for line in legend_lines(rows):
        print(_wrap(line), file=out)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100, subsequent_indent="  ")


def legend_lines(rows: list[dict]) -> list[str]:
    """What the columns mean, and why SparQ loses where it does (first rows it loses in)."""
    lines = [
        "columns: B = batch, S = tokens in the cache; attn = all layers' attention (bytes, "
        "time, bound); attn x / step x = dense time / SparQ time of the attention / of the "
        "whole decode step",
        "bound: memory = bytes / bandwidth; latency = fixed cost per kernel (t0 per launch, "
        "the top-k's own latency); compute = FLOPs / peak; topk = top-k throughput",
    ]
    losing = [r for r in rows if r["attn_speedup"] < 1 and r["sparq_attn_bound"] == "latency"]
    if losing:
        r = losing[0]
        ratio = r["dense_attn_bytes"] / r["sparq_attn_bytes"]
        lines.append(
            f"SparQ loses where its attention is latency-bound (e.g. B={r['batch']}, "
            f"S={r['seq_len']}): it moves {ratio:.1f}x fewer bytes, but runs 3 kernels per "
            "layer (step 1, top-k, gathered attention) against dense's 1, and at small batch "
            "and short S those fixed costs outweigh the bytes saved; it wins once the bytes "
            "dominate (larger B or S)"
        )
    return lines


def _fits_note(hw: Hardware, rows: list[dict]) -> str:
    dev = "one device" if rows[0]["tp"] == 1 else f"each of {rows[0]['tp']} devices"
    note = (
        "fits = weights + SparQ KV cache (K stored twice unless --store-k-once) within "
        f"{_fmt_bytes(hw.mem_capacity_bytes)} of {dev}; max B = the largest batch that fits at "
        "that S, dense / SparQ"
    )
    if not all(r["fits_in_memory"] for r in rows):
        note += "; rows marked NO need more memory (try --tp)"
    return note


def breakdown_rows(rows: list[dict], estimates: list) -> list[dict]:
    """Per-op rows (:func:`costmodel.estimate.decode_ops`) of every (batch, S) and method:
    whole-model bytes, FLOPs and time, and one layer's where the op runs once per layer."""
    out = []
    for row, pair in zip(rows, estimates, strict=True):
        for est in pair:
            L = est.n_layers
            for op in decode_ops(est):
                out.append(
                    {
                        "batch": row["batch"],
                        "seq_len": est.seq_len,
                        "method": est.method,
                        "phase": "decode step",
                        "op": op.op,
                        "part": op.part,
                        "calls": op.calls,
                        "bytes": op.bytes,
                        "flops": op.flops,
                        "time_s": op.time_s,
                        "bound": op.bound,
                        "layer_bytes": op.bytes / L if op.per_layer else None,
                        "layer_flops": op.flops / L if op.per_layer else None,
                        "layer_time_s": op.time_s / L if op.per_layer else None,
                    }
                )
    return out


def request_breakdown_rows(requests: list) -> list[dict]:
    """``--breakdown`` of whole requests: the prefill's ops (the weights' GEMMs, causal
    attention, the all-reduces when split) and the ops of the last decode step, per
    request of ``requests`` (``(dense, sparq)`` :class:`~costmodel.request.RequestEstimate`
    pairs)."""
    out = []
    for pair in requests:
        for req in pair:
            pre, L = req.prefill, req.last_step.n_layers
            ops = [
                ("weights GEMMs (layers + output proj.)", "weights",
                 pre.weights_bytes, pre.weights_flops, pre.weights_s, pre.weights_bound,
                 L + 1, False),
                ("causal attention (+ KV cache write)", "attention",
                 pre.attention_bytes, pre.attention_flops, pre.attention_s,
                 pre.attention_bound, L, True),
            ]  # fmt: skip
            if req.tp > 1:
                ops.append(
                    (f"all-reduce (2 per layer, {req.tp} devices)", "communication",
                     2 * L * 2 * (req.tp - 1) / req.tp * pre.allreduce_message_bytes, 0.0,
                     pre.allreduce_s, "communication", 2 * L, True)
                )  # fmt: skip
            for name, part, nb, nf, t, bound, calls, per_layer in ops:
                out.append(
                    {
                        "batch": req.batch,
                        "seq_len": req.prompt_len,
                        "method": req.method,
                        "phase": "prefill",
                        "op": name,
                        "part": part,
                        "calls": calls,
                        "bytes": nb,
                        "flops": nf,
                        "time_s": t,
                        "bound": bound,
                        "layer_bytes": nb / L if per_layer else None,
                        "layer_flops": nf / L if per_layer else None,
                        "layer_time_s": t / L if per_layer else None,
                    }
                )
            out.extend(breakdown_rows([{"batch": req.batch}], [(req.last_step,)]))
    return out


def _fmt_flops(x: float) -> str:
    for unit, scale in (("PF", 1e15), ("TF", 1e12), ("GF", 1e9), ("MF", 1e6), ("kF", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} F"


def print_breakdown(brows: list[dict], n_layers: int, out=None) -> None:
    """The per-op table: one block per (batch, S)."""
    out = sys.stdout if out is None else out
    head = (
        f"{'op':<40} | {'bytes':>9} {'FLOPs':>9} {'time':>9} | {'bytes':>9} {'FLOPs':>9} "
        f"{'time':>9} {'share':>5} | bound"
    )
    sub = f"{'':<40} | {'one layer':^29} | {f'whole model ({n_layers} layers)':^35} |"
    key = None

    def key_of(x):
        return (x["batch"], x["seq_len"], x["method"], x["phase"])

    for b in brows:
        if key_of(b) != key:
            key = key_of(b)
            total = sum(x["time_s"] for x in brows if key_of(x) == key)
            meth = "dense" if b["method"] == "dense" else "SparQ"
            what = "prefill of P" if b["phase"] == "prefill" else "decode step, S"
            print(
                f"\n{meth} {what}={b['seq_len']}, B={b['batch']}: {_fmt_time(total)}",
                file=out,
            )
            print(sub, file=out)
            print(head, file=out)
            print("-" * len(head), file=out)
        if b["layer_time_s"] is None:
            layer = f"{'-':>9} {'-':>9} {'-':>9}"
        else:
            layer = (
                f"{_fmt_bytes(b['layer_bytes']):>9} {_fmt_flops(b['layer_flops']):>9} "
                f"{_fmt_time(b['layer_time_s']):>9}"
            )
        print(
            f"{b['op'][:40]:<40} | {layer} | {_fmt_bytes(b['bytes']):>9} "
            f"{_fmt_flops(b['flops']):>9} {_fmt_time(b['time_s']):>9} "
            f"{100 * b['time_s'] / total:>4.0f}% | {b['bound']}",
            file=out,
        )


def check_output_path(flag: str, path: str | None, what: str) -> None:
    """Refuse an output path whose directory does not exist (or that is a directory)
    before any work is done."""
    if path is None:
        return
    if not path.strip() or Path(path).is_dir():
        raise ValueError(f"{flag}: expected a {what} file path, got {path!r}")
    parent = Path(path).parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"{flag}: {str(parent)!r}: Not a directory (got {path!r})")
    if not parent.is_dir():
        raise ValueError(f"{flag}: directory {str(parent)!r} does not exist (got {path!r})")


def write_csv(path: str, rows: list[dict]) -> None:
    """The rows as CSV: one header line (the row keys), one line per row."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            w.writerow({k: "" if v is None else v for k, v in row.items()})


def run(args) -> int:
    check_output_path("--plot", args.plot, "PNG")
    check_output_path("--roofline", args.roofline, "PNG")
    check_output_path("--csv", args.csv, "CSV")
    request = args.prompt_len is not None or args.gen_len is not None
    if request:
        if args.prompt_len is None or args.gen_len is None:
            raise ValueError("--prompt-len and --gen-len: expected both (a whole request)")
        if args.seq_lens is not None:
            raise ValueError(
                "--seq-lens: not with --prompt-len/--gen-len (the request sets S from "
                "P + 1 to P + N)"
            )
        for flag in ("--plot", "--roofline"):
            if getattr(args, flag[2:]) is not None:
                raise ValueError(
                    f"{flag}: plots decode steps vs S; not with --prompt-len/--gen-len"
                )
    hw = resolve_hardware(args)
    compare = []
    if args.compare is not None:
        if args.plot is None:
            raise ValueError("--compare: adds devices to --plot; give --plot FILE.png too")
        names = [x.strip() for x in args.compare.split(",") if x.strip()]
        if not names:
            raise ValueError(f"--compare: expected profile names, got {args.compare!r}")
        compare = [load_hardware(n) for n in names]
    for flag, value in (("--plot", args.plot), ("--roofline", args.roofline)):
        if value is not None:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise ValueError(f"{flag}: needs matplotlib (pip install matplotlib)") from None
    model, r = model_and_r(args)
    settings = settings_used(args, hw, model, r)
    if request:
        requests: list = []
        rows = compute_request_rows(args, hw, requests)
        brows = request_breakdown_rows(requests) if args.breakdown else None
        if args.json:
            doc = {"version": version(), "settings": settings, "hardware": hw.name, "rows": rows}
            if brows is not None:
                doc["breakdown"] = brows
            json.dump(doc, sys.stdout, indent=1)
            print()
        else:
            print_request_table(rows, hw, settings)
            if brows is not None:
                print_breakdown(brows, model.n_layers)
        if args.csv is not None:
            write_csv(args.csv, rows)
            if not args.json:
                print(f"wrote {args.csv}")
        return 0
    estimates: list = []
    rows = compute_rows(args, hw, estimates)
    brows = breakdown_rows(rows, estimates) if args.breakdown else None
    if args.json:
        doc = {"version": version(), "settings": settings, "hardware": hw.name, "rows": rows}
        if brows is not None:
            doc["breakdown"] = brows
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        print_table(rows, hw, settings)
        if brows is not None:
            print_breakdown(brows, model.n_layers)
    if args.csv is not None:
        write_csv(args.csv, rows)
        if not args.json:
            print(f"wrote {args.csv}")
    sparq_options = dict(
        store_k_twice=not args.store_k_once,
        gqa_selection=args.gqa_selection,
        topk=args.topk,
    )
    if args.plot is not None:
        from costmodel.plot import plot_decode

        plot_decode(
            args.plot,
            hardware=[hw] + [h for h in compare if h.name != hw.name],
            model=model,
            batches=sorted({row["batch"] for row in rows}),
            seq_min=min(row["seq_len"] for row in rows),
            seq_max=max(row["seq_len"] for row in rows),
            r=r,
            k_divisor=args.k_divisor,
            dtype=args.dtype,
            sparq_options=sparq_options,
            decode_options=dict(
                weight_bytes_per_param=args.weight_bytes,
                ideal=args.ideal,
                implementation=args.implementation,
                tp=args.tp,
            ),
        )
        if not args.json:
            print(f"wrote {args.plot}")
    if args.roofline is not None:
        from costmodel.plot import plot_roofline

        plot_roofline(
            args.roofline,
            hardware=hw,
            model=model,
            rows=rows,
            dtype=args.dtype,
            sparq_options=sparq_options,
            ideal=args.ideal,
        )
        if not args.json:
            print(f"wrote {args.roofline}")
    return 0
