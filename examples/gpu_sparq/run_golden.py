"""Run the golden cases through the GPU SparQ kernels and write ``<case>.npz`` for ``sparq check``.

    sparq golden --out gold16 --dtype float16
    python examples/gpu_sparq/run_golden.py gold16 outs16          # needs torch + triton + a GPU
    sparq check gold16 outs16

Only numpy, torch and triton are needed (no install of this package). ``TRITON_INTERPRET=1``
with ``--device cpu`` runs the same kernels in Triton's interpreter (small cases only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    import torch
    from kernels import Config, sparq_gpu

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("golden", help="directory written by `sparq golden`")
    ap.add_argument("outputs", help="directory to write <case>.npz")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--only", nargs="*", help="case names to run (default: all)")
    ap.add_argument("--fma", action="store_true", help="same as --step1 fma")
    ap.add_argument("--step1", choices=("dot", "fma", "loop", "fmac"), default=None,
                    help="step-1 variant (default fma, the benchmark's pick)")  # fmt: skip
    ap.add_argument("--select", default="tour", choices=("radix", "topk", "tour", "tourk"),
                    help="exact top-k: Triton radix select, torch.topk, or the tournament "
                         "over runs of --tour positions (default)")  # fmt: skip
    ap.add_argument("--tour", type=int, default=8, help="run length of the tournament")
    ap.add_argument("--bs", type=int, default=2048, help="step 1's block of positions")
    ap.add_argument("--warps", type=int, default=4, help="step 1's warps")
    ap.add_argument("--config", help="a bench.py configuration name (overrides the options "
                    "above), e.g. fma-bs1024-bk64-tp4096-tour8")  # fmt: skip
    a = ap.parse_args(argv)
    gold, outdir = Path(a.golden), Path(a.outputs)
    outdir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((gold / "manifest.json").read_text())
    tdtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}
    for e in manifest["cases"]:
        if a.only and e["name"] not in a.only:
            continue
        if e["dtype"] not in tdtype:
            print(f"{e['name']}: skipped ({e['dtype']}: the kernels take fp16/bf16 caches)")
            continue
        with np.load(gold / e["file"], allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("q", "k_cache", "v_cache", "mask")}
        dt = tdtype[e["dtype"]]
        for n in ("q", "k_cache", "v_cache"):
            if e["arrays"][n].get("storage") == "bfloat16-bits":
                arrays[n] = (arrays[n].astype(np.uint32) << 16).view(np.float32)
        q, K, V = (torch.from_numpy(arrays[n]).to(a.device).to(dt).contiguous()
                   for n in ("q", "k_cache", "v_cache"))  # fmt: skip
        Kt = K.transpose(-1, -2).contiguous()
        mask = torch.from_numpy(arrays["mask"]).to(a.device)
        if a.config:
            from bench import parse_config

            cfg = parse_config(a.config, Config)
        else:
            cfg = Config(step1=a.step1 or "fma", select=a.select,
                         tour=a.tour, bs=a.bs, s1_warps=a.warps)  # fmt: skip
        steps = sparq_gpu(q, K, Kt, V, mask, config=cfg, **e["params"])
        np.savez(outdir / e["file"], **{n: (t.float() if t.is_floating_point() else t).cpu().numpy()
                                        for n, t in steps.items()})  # fmt: skip
        print(f"{e['name']}: done on {a.device} in {e['dtype']}", flush=True)


if __name__ == "__main__":
    main()
