# ruff: noqa: B023, F821  (closures over loop variables are timed immediately; names are del-ed after)
"""Measure dense (and PyTorch-level SparQ) decode attention and plain bandwidth on one GPU.

Calibration data for the cost model (``costmodel``): kernel latency floor, streaming
bandwidth efficiency, L2 residency, the efficiency of the matmul-softmax-matmul dense path
versus SDPA, and the time of ``torch.topk`` (which the cost model prices as its own term).

Usage (on a machine with a CUDA GPU and PyTorch)::

    python benchmarks/gpu_decode_attention.py --out "$OUT/gpu_decode_attention.json"

Every timing is the median over ``--iters`` individually event-timed eager calls after warm-up,
so it includes the per-call launch gap of eager PyTorch (that is the decode regime).
The JSON is rewritten after every measurement, so a run cut short still leaves data.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F


def _timeit(fn, iters: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)) * 1e-3


def _loop_time(fn, n: int) -> float:
    """Average time per call of ``n`` back-to-back calls (launch throughput)."""
    fn()
    torch.cuda.synchronize()
    a = torch.cuda.Event(enable_timing=True)
    b = torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) * 1e-3 / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--max-seconds", type=float, default=240.0)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU (syntax check)")
    args = ap.parse_args()
    t_start = time.time()
    global _timeit, _loop_time
    if args.dry_run:
        dev = torch.device("cpu")

        class _P:
            name, total_memory, multi_processor_count = "cpu", 2**40, 0

        props = _P()
        torch.cuda.synchronize = lambda: None

        def _timeit(fn, iters, warmup=1):  # noqa: F811
            fn()
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t

        def _loop_time(fn, n):  # noqa: F811
            return _timeit(fn, 1)
    else:
        dev = torch.device("cuda")
        props = torch.cuda.get_device_properties(dev)
    small = args.dry_run
    res: dict = {
        "device_name": props.name,
        "total_memory_bytes": props.total_memory,
        "sm_count": props.multi_processor_count,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "iters": args.iters,
        "timing": "median of individually CUDA-event-timed eager calls after 3 warm-up calls",
        "launch": {},
        "read": [],
        "copy": [],
        "attention": [],
        "topk": [],
        "sparq_torch": [],
    }

    def save() -> None:
        res["elapsed_s"] = time.time() - t_start
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)

    def out_of_time() -> bool:
        return time.time() - t_start > args.max_seconds

    # --- launch latency -------------------------------------------------------------
    x = torch.zeros(1, device=dev)
    res["launch"]["tiny_add_event_median_s"] = _timeit(lambda: x.add_(1), 200)
    res["launch"]["tiny_add_loop_mean_s"] = _loop_time(lambda: x.add_(1), 2000)
    save()

    # --- read / copy bandwidth sweep ---------------------------------------------------
    for nbytes in [2**p for p in (range(20, 22) if small else range(20, 34))]:  # 1 MiB .. 8 GiB
        n = nbytes // 2
        a = torch.ones(n, dtype=torch.float16, device=dev)
        t_read = _timeit(lambda: a.sum(dtype=torch.float32), args.iters)
        res["read"].append({"bytes": nbytes, "time_s": t_read, "bytes_per_s": nbytes / t_read})
        if nbytes <= 2**32:
            b = torch.empty_like(a)
            t_copy = _timeit(lambda: b.copy_(a), args.iters)
            res["copy"].append(
                {"bytes_moved": 2 * nbytes, "time_s": t_copy, "bytes_per_s": 2 * nbytes / t_copy}
            )
            del b
        del a
        save()
    torch.cuda.empty_cache()

    # --- dense decode attention: SDPA (default + each backend) and matmul-softmax-matmul ---
    H, d = 32, 128
    seqs = [64, 128] if small else [1024, 2048, 4096, 8192, 16384, 32768, 65536]
    backends = {}
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backends = {
            "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "math": SDPBackend.MATH,
        }
    except Exception as exc:  # pragma: no cover
        res["sdpa_backend_error"] = repr(exc)

    for B in (1, 2) if small else (1, 64):
        for S in seqs:
            if out_of_time():
                break
            kv_bytes = 2 * B * H * S * d * 2
            if kv_bytes > 0.8 * props.total_memory:
                continue
            try:
                q = torch.randn(B, H, 1, d, dtype=torch.float16, device=dev)
                k = torch.randn(B, H, S, d, dtype=torch.float16, device=dev)
                v = torch.randn(B, H, S, d, dtype=torch.float16, device=dev)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                continue
            scale = 1.0 / math.sqrt(d)
            row = {"batch": B, "heads": H, "head_dim": d, "seq_len": S, "kv_bytes": kv_bytes}

            def unfused():
                s = torch.matmul(q, k.transpose(-1, -2)) * scale
                p = torch.softmax(s.float(), dim=-1).to(torch.float16)
                return torch.matmul(p, v)

            row["unfused_s"] = _timeit(unfused, args.iters)
            row["sdpa_default_s"] = _timeit(
                lambda: F.scaled_dot_product_attention(q, k, v), args.iters
            )
            for name, be in backends.items():
                try:
                    with sdpa_kernel(be):
                        row[f"sdpa_{name}_s"] = _timeit(
                            lambda: F.scaled_dot_product_attention(q, k, v), args.iters
                        )
                except Exception as exc:
                    row[f"sdpa_{name}_error"] = type(exc).__name__
            res["attention"].append(row)
            save()
            del q, k, v
            torch.cuda.empty_cache()

    # --- torch.topk on decode-shaped score rows -------------------------------------------
    for rows in (32, 2048):
        for S in (256, 512) if small else (4096, 16384, 65536):
            if out_of_time():
                break
            s = torch.randn(rows, S, dtype=torch.float16, device=dev)
            for kk in sorted({128, S // 16}):
                t = _timeit(lambda: torch.topk(s, kk, dim=-1), args.iters)
                res["topk"].append(
                    {"rows": rows, "n": S, "k": kk, "time_s": t, "input_bytes_per_s": s.nbytes / t}
                )
            del s
            save()

    # --- PyTorch-level SparQ (Table 4 shape: B 64, H 32, d 128, r 32, k 128) ------------
    sparq_cases = [(64, 4096, 32, 128), (64, 16384, 16, 1024), (1, 32768, 16, 2048)]
    if small:
        sparq_cases = [(2, 512, 8, 32)]
    for B, S, r, kk in sparq_cases:
        if out_of_time():
            break
        q = torch.randn(B, H, 1, d, dtype=torch.float16, device=dev)
        k = torch.randn(B, H, S, d, dtype=torch.float16, device=dev)
        v = torch.randn(B, H, S, d, dtype=torch.float16, device=dev)
        kt = k.transpose(-1, -2).contiguous()  # (B, H, d, S): the second copy of K
        vmean = v.float().mean(dim=2, keepdim=True).to(torch.float16)
        i1 = torch.topk(q.abs(), r, dim=-1).indices  # (B, H, 1, r)

        def step1_twice():
            kr = torch.gather(kt, 2, i1.transpose(-1, -2).expand(B, H, r, S))  # (B,H,r,S)
            return torch.matmul(torch.gather(q, 3, i1), kr)

        def step1_once():
            kr = torch.gather(k, 3, i1.expand(B, H, S, r))  # strided column gather
            return torch.matmul(torch.gather(q, 3, i1), kr.transpose(-1, -2))

        s_hat = step1_twice()

        def step_topk():
            return torch.topk(s_hat, kk, dim=-1).indices

        i2 = step_topk().transpose(-1, -2)  # (B, H, k, 1)

        def step_gather_attend():
            kg = torch.gather(k, 2, i2.expand(B, H, kk, d))
            vg = torch.gather(v, 2, i2.expand(B, H, kk, d))
            p = torch.softmax((torch.matmul(q, kg.transpose(-1, -2)) / math.sqrt(d)).float(), -1)
            y = torch.matmul(p.to(torch.float16), vg)
            return 0.9 * y + 0.1 * vmean

        def full(step1):
            def f():
                s1 = step1()
                idx = torch.topk(s1, kk, dim=-1).indices.transpose(-1, -2)
                kg = torch.gather(k, 2, idx.expand(B, H, kk, d))
                vg = torch.gather(v, 2, idx.expand(B, H, kk, d))
                p = torch.softmax(
                    (torch.matmul(q, kg.transpose(-1, -2)) / math.sqrt(d)).float(), -1
                )
                return 0.9 * torch.matmul(p.to(torch.float16), vg) + 0.1 * vmean

            return f

        row = {"batch": B, "heads": H, "head_dim": d, "seq_len": S, "r": r, "k": kk}
        row["step1_twice_s"] = _timeit(step1_twice, args.iters)
        row["step1_once_s"] = _timeit(step1_once, args.iters)
        row["topk_s"] = _timeit(step_topk, args.iters)
        row["gather_attend_s"] = _timeit(step_gather_attend, args.iters)
        row["sparq_twice_total_s"] = _timeit(full(step1_twice), args.iters)
        row["sparq_once_total_s"] = _timeit(full(step1_once), args.iters)

        def dense():
            s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
            return torch.matmul(torch.softmax(s.float(), -1).to(torch.float16), v)

        row["dense_unfused_s"] = _timeit(dense, args.iters)
        row["dense_sdpa_s"] = _timeit(lambda: F.scaled_dot_product_attention(q, k, v), args.iters)
        res["sparq_torch"].append(row)
        save()
        del q, k, v, kt
        torch.cuda.empty_cache()

    res["finished"] = True
    save()


if __name__ == "__main__":
    main()
