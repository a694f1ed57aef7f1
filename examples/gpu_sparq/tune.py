"""Tune the GPU SparQ step at one size: step-1 variants (cut after step 1), then selections.

    PYTHONPATH=. python examples/gpu_sparq/tune.py --out tune.json --B 64 --S 16384 --hkv 32

Step 1 is timed alone (``stop_after="step1"``) for every variant x block of positions x
warps; the selections are then timed as whole calls with the fastest step 1. Device time as
in bench.py (a CUDA graph over enough input copies to defeat the L2 cache).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import _sparq, make_copies, time_graph  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--S", type=int, default=16384)
    ap.add_argument("--hkv", type=int, default=32)
    ap.add_argument("--rk", default="32,128", help="r,k pairs separated by ';' (k 0: S/8)")
    ap.add_argument("--dtype", default="float16", choices=("float16", "bfloat16"))
    ap.add_argument(
        "--step1",
        default="",
        help="step-1 variants MODE-bsN-wN, comma-separated "
        "(default: fma and dot at bs 256-1024, w 4-8; loop at bs 256-2048, w 2-8)",
    )
    ap.add_argument("--selects", default="topk,radix,tour4,tour8,tour16,tour32,tour64")
    a = ap.parse_args(argv)
    import torch
    from kernels import Config, mask_state, sparq_gpu

    dev, H, d = torch.device("cuda"), 32, 128
    dt = getattr(torch, a.dtype)
    B, S, Hkv = a.B, a.S, a.hkv
    copies = make_copies(torch, B=B, H=H, Hkv=Hkv, S=S, d=d, dtype=dt, dev=dev)
    n = len(copies)
    mask = torch.ones(B, S, dtype=torch.bool, device=dev)
    vmean = torch.zeros(B, Hkv, d, device=dev, dtype=torch.float32)
    res = dict(B=B, S=S, H=H, Hkv=Hkv, d=d, dtype=a.dtype, copies=n, runs=[])
    t0 = time.time()
    for rk in a.rk.split(";"):
        r, k = (int(x) for x in rk.split(","))
        k = k or S // 8
        lw = 32 if k == 128 else 64
        kw = dict(r=r, k=k, local_window=lw, v_mean=vmean, return_steps=False,
                  state=mask_state(mask, lw))  # fmt: skip
        step1 = {}
        variants = [v.split("-") for v in a.step1.split(",")] if a.step1 else [
            (mode, f"bs{bs}", f"w{w}") for mode in ("fma", "dot", "loop")
            for bs in (256, 512, 1024, 2048) for w in (2, 4, 8)
            if mode == "loop" or (bs <= 1024 and w > 2)]  # fmt: skip
        for mode, bs, w in variants:
            bs, w = int(bs[2:]), int(w[1:])
            cfg = Config(step1=mode, bs=bs, s1_warps=w, select="topk")
            name = f"{mode}-bs{bs}-w{w}"
            try:
                fns = [partial(_sparq, sparq_gpu, c, mask, cfg,
                               dict(kw, stop_after="step1")) for c in copies]  # fmt: skip
                step1[name] = time_graph(fns, torch, max_s=0.2)
            except Exception as ex:  # noqa: BLE001
                step1[name] = f"{type(ex).__name__}: {str(ex)[:160]}"
        ok = {kname: v for kname, v in step1.items() if isinstance(v, float)}
        best = min(ok, key=ok.get)
        mode, bs, w = best.split("-")
        base = dict(step1=mode, bs=int(bs[2:]), s1_warps=int(w[1:]))
        full = {}
        for name in a.selects.split(","):
            sel = (
                "tourk" if name.startswith("tourk") else "tour" if name.startswith("tour") else name
            )
            tour = int(name[len(sel) :]) if sel.startswith("tour") else 16
            cfg = Config(select=sel, tour=tour, **base)
            try:
                fns = [partial(_sparq, sparq_gpu, c, mask, cfg, kw) for c in copies]
                full[name] = time_graph(fns, torch, max_s=0.2)
            except Exception as ex:  # noqa: BLE001
                full[name] = f"{type(ex).__name__}: {str(ex)[:160]}"
        res["runs"].append(dict(r=r, k=k, local_window=lw, step1_s=step1, best_step1=best,
                                step1_bytes=B * Hkv * (r * S * 2 + S * 4 + S),
                                full_s=full))  # fmt: skip
        Path(a.out).write_text(json.dumps(res, indent=1))
        print(
            f"r={r} k={k}: best step 1 {best} {ok[best] * 1e6:.0f} us; "
            + ", ".join(f"{n_}={v * 1e6:.0f}" for n_, v in full.items() if isinstance(v, float))
            + f" ({time.time() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
