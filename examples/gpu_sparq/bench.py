"""Time the GPU SparQ step against SDPA (default, cuDNN, flash) on one CUDA device.

    PYTHONPATH=. python examples/gpu_sparq/bench.py --out gpu_bench.json [--quick]

Device time: a CUDA graph of ``n`` calls cycling over ``n`` copies of the inputs (enough to
defeat the L2 cache) replayed between CUDA events, per call. Wall time: one eager call between
``torch.cuda.synchronize()``s (median). Each point carries the cost model's fused prediction
for the ``h200-sxm`` profile when ``costmodel`` is importable (``PYTHONPATH=.`` from the
repository root); ``--predict FILE`` adds the predictions to an existing results file offline.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

L2_DEFEAT_BYTES = 256 << 20


def _predict(p):
    try:
        import costmodel
    except Exception:  # noqa: BLE001 - optional
        return None
    common = dict(hardware="h200-sxm", batch=p["B"], n_heads=p["H"], n_kv_heads=p["Hkv"],
                  seq_len=p["S"], head_dim=p["d"], dtype=p["dtype"],
                  implementation="fused")  # fmt: skip
    dense = costmodel.estimate_attention("dense", **common)
    out = {"dense_s": dense.time_s}
    if "r" in p:
        e = costmodel.estimate_attention("sparq", r=p["r"], k=p["k"], **common)
        out.update(sparq_s=e.time_s, bound=e.bound, speedup=dense.time_s / e.time_s,
                   kernels={s.kernel: s.time_s for s in e.kernels})  # fmt: skip
    return out


DEFAULT_CONFIGS = (
    "fma-bs2048-tour8,fma-bs1024-tour8,fma-bs1024-topk,fma-bs1024-tp4096-tour8,"
    "fma-bs1024-bk64-tp4096-tour8,fma-bs1024-as4-tour8"
)


#: numeric parts of a configuration name: prefix -> Config field (the number follows it)
_INT_PARTS = {
    "bs": "bs",
    "w": "s1_warps",
    "bk": "bk",
    "aw": "at_warps",
    "as": "at_stages",
    "ch": "s1_chunk",
    "ss": "s1_stages",
    "tp": "target_programs",
}


def parse_config(name, Config):
    """``{fma|dot|loop}[-bs{N}][-w{N}][-sorted][-psort|-ploop][-bk{N}][-aw{N}][-as{N}][-tp{N}][-ch{N}][-ss{N}]-``
    ``{topk|radix|tour{N}|tourk{N}}`` -> Config (step 1's block and warps, sorted positions, the
    prologue, the gathered attention's block, warps and pipeline stages, the selection)."""
    parts = name.split("-")
    kw = dict(step1=parts[0])
    for p in parts[1:-1]:
        prefix = p.rstrip("0123456789")
        if prefix in _INT_PARTS:
            kw[_INT_PARTS[prefix]] = int(p[len(prefix) :])
        elif p == "sorted":
            kw["sort_positions"] = True
        elif p in ("psort", "ploop"):
            kw["prologue"] = p[1:]
        else:
            raise ValueError(f"config {name!r}: unknown part {p!r}")
    sel = parts[-1]
    if sel.startswith("tourk"):
        kw.update(select="tourk", tour=int(sel[5:] or 8))
    elif sel.startswith("tour"):
        kw.update(select="tour", tour=int(sel[4:] or 16))
    else:
        kw["select"] = sel
    return Config(**kw)


def make_copies(torch, *, B, H, Hkv, S, d, dtype, dev):
    """``n`` copies ``(q, K, V, Kt)`` of random inputs (seed 0), ``n`` chosen so that they
    total at least ``L2_DEFEAT_BYTES`` (at most 16)."""
    copy_bytes = 3 * B * Hkv * S * d * 2
    n = min(16, max(1, math.ceil(L2_DEFEAT_BYTES / copy_bytes)))
    torch.manual_seed(0)
    copies = []
    for _ in range(n):
        K = torch.randn(B, Hkv, S, d, device=dev, dtype=dtype)
        V = torch.randn(B, Hkv, S, d, device=dev, dtype=dtype)
        Kt = K.transpose(-1, -2).contiguous()
        q = torch.randn(B, H, d, device=dev, dtype=dtype)
        copies.append((q, K, V, Kt))
    return copies


def _sdpa(F, sdpa_kernel, be, c, gqa):
    q4 = c[0][:, :, None, :]
    if be is None:
        return F.scaled_dot_product_attention(q4, c[1], c[2], enable_gqa=gqa)
    with sdpa_kernel(be):
        return F.scaled_dot_product_attention(q4, c[1], c[2], enable_gqa=gqa)


def _sparq(sparq_gpu, c, mask, cfg, kw):
    """One timed SparQ call. ``kw`` carries the mask state and v_mean: both are per decode
    step, shared by every layer (the running mean is updated by the cache append)."""
    return sparq_gpu(c[0], c[1], c[3], c[2], mask, config=cfg, **kw)


def time_graph(fns, torch, max_s=0.4):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    g.replay()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    g.replay()
    e1.record()
    torch.cuda.synchronize()
    t1 = e0.elapsed_time(e1) / 1e3
    reps = int(min(50, max(5, max_s / max(t1, 1e-6))))
    ts = []
    for _ in range(reps):
        e0.record()
        g.replay()
        e1.record()
        torch.cuda.synchronize()
        ts.append(e0.elapsed_time(e1) / 1e3 / len(fns))
    del g
    return statistics.median(ts)


def time_wall(f, torch, n=15):
    f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        f()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="a few points only")
    ap.add_argument("--seqs", default="4096,16384,65536")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--hkv", default="32,8", help="KV head counts (H = 32)")
    ap.add_argument("--predict", help="add predictions to this results file (no GPU) and exit")
    ap.add_argument("--budget-s", type=float, default=1e9, help="stop starting new points after")
    ap.add_argument(
        "--configs",
        default=DEFAULT_CONFIGS,
        help="SparQ configurations to try at each point (fastest is reported)",
    )
    ap.add_argument("--dtype", default="float16", choices=("float16", "bfloat16"))
    ap.add_argument("--rk", default="32,128;16,0", help="r,k pairs (k 0: S/8)")
    a = ap.parse_args(argv)
    if a.predict:
        res = json.loads(Path(a.predict).read_text())
        for p in res["points"]:
            p["model"] = _predict(p)
        Path(a.out).write_text(json.dumps(res, indent=1))
        return
    import torch
    import torch.nn.functional as F
    from kernels import Config, mask_state, sparq_gpu
    from torch.nn.attention import SDPBackend, sdpa_kernel

    t_start = time.time()
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    res = {"device": props.name, "torch": torch.__version__, "cuda": torch.version.cuda,
           "points": [], "notes": []}  # fmt: skip
    try:
        import triton

        res["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        pass
    outp = Path(a.out)

    def flush():
        outp.write_text(json.dumps(res, indent=1))

    d, dtype = 128, getattr(torch, a.dtype)
    heads = [(32, int(x)) for x in a.hkv.split(",")]
    batches = [int(x) for x in a.batches.split(",")]
    seqs = [int(x) for x in a.seqs.split(",")]
    configs = {name: parse_config(name, Config) for name in a.configs.split(",")}
    rks = [tuple(int(x) for x in rk.split(",")) for rk in a.rk.split(";")]
    if a.quick:
        heads, batches, seqs = [(32, 32)], [64], [16384]
    free_bytes = torch.cuda.mem_get_info()[0]
    for S in seqs:
        for H, Hkv in heads:
            for B in batches:
                if time.time() - t_start > a.budget_s:
                    res["notes"].append(f"stopped at B={B} S={S} H={H} Hkv={Hkv}: time budget")
                    flush()
                    return
                copy_bytes = 3 * B * Hkv * S * d * 2
                if copy_bytes * 1.15 + (1 << 30) > free_bytes:
                    res["notes"].append(f"skipped B={B} S={S} Hkv={Hkv}: K, V, Kt do not fit")
                    continue
                copies = make_copies(torch, B=B, H=H, Hkv=Hkv, S=S, d=d, dtype=dtype, dev=dev)
                n = len(copies)
                mask = torch.ones(B, S, dtype=torch.bool, device=dev)
                vmean = torch.zeros(B, Hkv, d, device=dev, dtype=torch.float32)
                base = dict(B=B, H=H, Hkv=Hkv, S=S, d=d, dtype=a.dtype, copies=n)
                # dense SDPA
                for name, be in (("default", None), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                                 ("flash", SDPBackend.FLASH_ATTENTION)):  # fmt: skip
                    p = dict(base, method="sdpa", backend=name)
                    try:
                        fns = [partial(_sdpa, F, sdpa_kernel, be, c, H != Hkv) for c in copies]
                        p["device_s"] = time_graph(fns, torch)
                        p["wall_s"] = time_wall(fns[0], torch)
                    except Exception as ex:  # noqa: BLE001
                        p["error"] = f"{type(ex).__name__}: {str(ex)[:200]}"
                    p["model"] = _predict(p)
                    res["points"].append(p)
                    flush()
                # SparQ
                for r, k in rks:
                    k = k or S // 8
                    lw = 32 if k == 128 else 64
                    p = dict(base, method="sparq", r=r, k=k, local_window=lw, configs={})
                    best = None
                    kw = dict(r=r, k=k, local_window=lw, v_mean=vmean, return_steps=False,
                              state=mask_state(mask, lw))  # fmt: skip
                    for cname, cfg in configs.items():
                        try:
                            fns = [partial(_sparq, sparq_gpu, c, mask, cfg, kw)
                                   for c in copies]  # fmt: skip
                            t = time_graph(fns, torch)
                            p["configs"][cname] = t
                            if best is None or t < p["configs"][best]:
                                best = cname
                        except Exception as ex:  # noqa: BLE001
                            p["configs"][cname] = f"{type(ex).__name__}: {str(ex)[:200]}"
                    if best is not None:
                        cfg = configs[best]
                        p["config"], p["device_s"] = best, p["configs"][best]
                        p["wall_s"] = time_wall(
                            partial(_sparq, sparq_gpu, copies[0], mask, cfg, kw), torch
                        )
                        phases = {}
                        for stop in ("prologue", "step1", "select"):
                            kws = dict(kw, stop_after=stop)
                            fns = [partial(_sparq, sparq_gpu, c, mask, cfg, kws)
                                   for c in copies]  # fmt: skip
                            try:
                                phases[stop] = time_graph(fns, torch)
                            except Exception as ex:  # noqa: BLE001
                                phases[stop] = f"{type(ex).__name__}: {str(ex)[:200]}"
                        p["cumulative_s"] = phases
                        # step 1's bytes: r rows of Kt, the int8 mask state, the fp32 score
                        p["step1_bytes"] = B * Hkv * (r * S * 2 + S * 4 + S)
                    p["model"] = _predict(p)
                    res["points"].append(p)
                    flush()
                del copies
                torch.cuda.empty_cache()
                print(f"done S={S} H={H} Hkv={Hkv} B={B} at {time.time() - t_start:.0f}s",
                      flush=True)  # fmt: skip
    flush()


if __name__ == "__main__":
    main()
