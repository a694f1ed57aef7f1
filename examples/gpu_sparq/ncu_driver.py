"""One SparQ call (up to the selection) for Nsight Compute, at B=64, S=16k, r=32, k=128.

    ncu --set full --kernel-name regex:'_step1_kernel|[Tt]op[Kk]|Kth|Blockwise|[Ss]ort' \\
        -o rep python examples/gpu_sparq/ncu_driver.py --hkv 32 --fma

Inputs are random fp16, every position valid (as in bench.py); the mask state is computed
before the profiled call. ``--fma``: the FMA step 1 (the benchmark's pick for MHA); without it
``tl.dot`` (GQA's pick); ``--step1 loop`` the row loop. ``--select`` picks the selection
(default ``torch.topk``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    import torch
    from kernels import Config, mask_state, sparq_gpu

    ap = argparse.ArgumentParser()
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--S", type=int, default=16384)
    ap.add_argument("--hkv", type=int, default=32)
    ap.add_argument("--r", type=int, default=32)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--fma", action="store_true", help="same as --step1 fma")
    ap.add_argument("--step1", choices=("dot", "fma", "loop", "fmac"), default=None)
    ap.add_argument("--bs", type=int, default=512)
    ap.add_argument("--warps", type=int, default=4)
    ap.add_argument("--select", default="topk", choices=("topk", "radix", "tour"))
    ap.add_argument("--tour", type=int, default=16)
    ap.add_argument("--stop", default="select", help="stop after this phase ('none': whole step)")
    ap.add_argument("--prologue", default="sort", choices=("sort", "loop"))
    ap.add_argument("--calls", type=int, default=1)
    a = ap.parse_args(argv)
    H, d, lw = 32, 128, 32
    dev, dt = torch.device("cuda"), torch.float16
    torch.manual_seed(0)
    K = torch.randn(a.B, a.hkv, a.S, d, device=dev, dtype=dt)
    Kt = K.transpose(-1, -2).contiguous()
    V = torch.randn(a.B, a.hkv, a.S, d, device=dev, dtype=dt)
    q = torch.randn(a.B, H, d, device=dev, dtype=dt)
    mask = torch.ones(a.B, a.S, dtype=torch.bool, device=dev)
    state = mask_state(mask, lw)
    vmean = torch.zeros(a.B, a.hkv, d, device=dev, dtype=torch.float32)
    cfg = Config(step1=a.step1 or ("fma" if a.fma else "dot"), bs=a.bs, s1_warps=a.warps,
                 select=a.select, tour=a.tour, prologue=a.prologue)  # fmt: skip
    torch.cuda.synchronize()
    for _ in range(a.calls):
        idx = sparq_gpu(q, K, Kt, V, mask, r=a.r, k=a.k, local_window=lw, reallocate=False,
                        v_mean=vmean, state=state, return_steps=False, config=cfg,
                        stop_after=None if a.stop == "none" else a.stop)  # fmt: skip
    torch.cuda.synchronize()
    print("ok", type(idx).__name__, flush=True)


if __name__ == "__main__":
    main()
