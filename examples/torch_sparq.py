"""A straightforward PyTorch SparQ implementation, validated against the reference.

This is the kind of implementation a kernel author starts from (it follows the public
evaluation code's tensor program, in the GPU's dtype), and shows how to run the golden cases
through an implementation and judge it with ``sparq check``:

    sparq golden --out gold16 --dtype float16
    python examples/torch_sparq.py gold16 outs16 --device cuda     # needs torch (+ a GPU)
    sparq check gold16 outs16

Only numpy and torch are needed to run the implementation (no install of this package), so
the middle command can run on a GPU machine on its own. Results on an H100 are recorded in
docs/validation.md.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def _bucketed_row(score, valid, n_local, n_sel, num_buckets, k_per_bucket, interleaved):
    """Step 4 with the bucketed top-k (Key et al. 2024) for one row: ``score`` (S,) with the
    local window forced to +inf, ``valid`` the valid positions in index order. The
    ``n_sel - n_local`` non-local positions come from the buckets of the non-local valid
    positions (compacted, index order; interleaved: bucket j = {j, j + b, ...}, else
    consecutive slices, the first n % b one longer): each bucket's top k_b, then the top of
    those candidates. Returns the chosen positions, local window first."""
    import torch

    nv = valid.numel()
    rest = valid[: nv - n_local]
    need = n_sel - n_local
    local = valid[nv - n_local :]
    if need <= 0 or n_sel >= nv:
        return torch.cat([local, rest[score[rest].topk(max(need, 0)).indices]])
    b = min(num_buckets, rest.numel())
    t = torch.arange(rest.numel(), device=score.device)
    if interleaved:
        ids = t % b
    else:
        base, rem = divmod(rest.numel(), b)
        sizes = torch.full((b,), base, device=score.device)
        sizes[:rem] += 1
        ids = torch.repeat_interleave(torch.arange(b, device=score.device), sizes)
    cand = []
    for j in range(b):
        members = rest[ids == j]
        cand.append(members[score[members].topk(min(k_per_bucket, members.numel())).indices])
    cand = torch.cat(cand)
    return torch.cat([local, cand[score[cand].topk(need).indices]])


def sparq_torch(q, K, V, mask, *, r, k, local_window=0, reallocate=True, temperature="l1",
                group_score="logits", selection="group", topk="exact", num_buckets=None,
                k_per_bucket=1, interleaved=True):  # fmt: skip
    """SparQ for one decode step. ``q (B, H, d)``, ``K, V (B, Hkv, S, d)`` (same dtype and
    device), ``mask (B, S)`` bool. Returns a dict of the steps (torch tensors)."""
    import torch

    B, H, d = q.shape
    Hkv0, S = K.shape[1], K.shape[2]
    w_mask = mask[:, None, :, None].to(torch.float32)
    v_mean = ((V.float() * w_mask).sum(2) / w_mask.sum(2)).to(V.dtype)  # (B, Hkv, d)
    if selection == "head":
        K = K.repeat_interleave(H // Hkv0, dim=1)
        V = V.repeat_interleave(H // Hkv0, dim=1)
    Hkv = K.shape[1]
    g = H // Hkv
    qg = q.view(B, Hkv, g, d)
    # Step 1: components (top-r of the group's summed |q|).
    i1 = qg.abs().sum(2).topk(r, dim=-1).indices  # (B, Hkv, r)
    qs = qg.gather(-1, i1[:, :, None, :].expand(B, Hkv, g, r))
    Ks = K.gather(-1, i1[:, :, None, :].expand(B, Hkv, S, r))
    # Steps 2-3: temperature and approximate logits.
    if temperature == "l1":
        tau = (d * qs.abs().float().sum(-1) / qg.abs().float().sum(-1)).sqrt()
    elif temperature == "sqrt_d":
        tau = torch.full((B, Hkv, g), math.sqrt(d), device=q.device)
    else:
        tau = torch.full((B, Hkv, g), math.sqrt(r), device=q.device)
    s = (qs @ Ks.transpose(-1, -2)) / tau[..., None].to(q.dtype)  # (B, Hkv, g, S)
    s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
    # Step 4: group score, forced local window, top-k.
    p = torch.softmax(s.float(), dim=-1)
    score = s.float().sum(2) if group_score == "logits" else p.sum(2)
    score = score.masked_fill(~mask[:, None, :], float("-inf"))
    recent = mask.flip(-1).cumsum(-1).flip(-1)  # valid positions at or after j
    local = mask & (recent <= local_window)
    score = score.masked_fill(local[:, None, :], float("inf"))
    kk = min(k, S)
    idx = score.topk(kk, dim=-1).indices  # (B, Hkv, kk)
    chosen_ok = mask[:, None, :].expand(B, Hkv, S).gather(-1, idx)
    if topk == "bucketed":  # a Python loop over rows: clear, not fast
        idx = torch.zeros_like(idx)
        chosen_ok = torch.zeros_like(chosen_ok)
        for b in range(B):
            valid = mask[b].nonzero().flatten()
            n_sel, n_local = min(k, valid.numel()), min(local_window, valid.numel())
            for h in range(Hkv):
                row = _bucketed_row(score[b, h], valid, n_local, n_sel, num_buckets,
                                    k_per_bucket, interleaved)  # fmt: skip
                idx[b, h, : row.numel()] = row
                chosen_ok[b, h, : row.numel()] = True
    positions = torch.where(chosen_ok, idx, torch.full_like(idx, -1))
    if k > S:
        positions = torch.cat([positions, positions.new_full((B, Hkv, k - S), -1)], dim=-1)
    # Step 5: alpha.
    sel = p.gather(-1, idx[:, :, None, :].expand(B, Hkv, g, kk))
    alpha = (sel * chosen_ok[:, :, None, :]).sum(-1)  # (B, Hkv, g)
    if not reallocate:
        alpha = torch.ones_like(alpha)
    alpha = alpha.to(q.dtype)
    # Step 7: exact attention over the chosen positions.
    Kk = K.gather(2, idx[..., None].expand(B, Hkv, kk, d))
    Vk = V.gather(2, idx[..., None].expand(B, Hkv, kk, d))
    logits = (qg @ Kk.transpose(-1, -2)) / math.sqrt(d)
    logits = logits.masked_fill(~chosen_ok[:, :, None, :], float("-inf"))
    w = torch.softmax(logits.float(), dim=-1).to(q.dtype)
    y = w @ Vk  # (B, Hkv, g, d)
    vm = v_mean.repeat_interleave(H // Hkv0, dim=1) if selection == "head" else v_mean
    out = alpha[..., None] * y + (1 - alpha[..., None]) * vm[:, :, None, :]
    return dict(components=i1, approx_logits=s.reshape(B, H, S), positions=positions,
                alpha=alpha.reshape(B, H), v_mean=v_mean, out=out.reshape(B, H, d))  # fmt: skip


def main(argv=None):
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("golden", help="directory written by `sparq golden`")
    ap.add_argument("outputs", help="directory to write <case>.npz")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    gold, outdir = Path(a.golden), Path(a.outputs)
    outdir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((gold / "manifest.json").read_text())
    tdtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
              "float64": torch.float64}  # fmt: skip
    for e in manifest["cases"]:
        with np.load(gold / e["file"], allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("q", "k_cache", "v_cache", "mask")}
        dt = tdtype[e["dtype"]]
        for n in ("q", "k_cache", "v_cache"):
            if e["arrays"][n].get("storage") == "bfloat16-bits":
                # uint16 bit patterns of bfloat16 values: widen exactly via float32
                arrays[n] = (arrays[n].astype(np.uint32) << 16).view(np.float32)
        q, K, V = (torch.from_numpy(arrays[n]).to(a.device).to(dt)
                   for n in ("q", "k_cache", "v_cache"))  # fmt: skip
        mask = torch.from_numpy(arrays["mask"]).to(a.device)
        steps = sparq_torch(q, K, V, mask, **e["params"])
        np.savez(outdir / e["file"], **{n: (t.float() if t.is_floating_point() else t).cpu().numpy()
                                        for n, t in steps.items()})  # fmt: skip
        print(f"{e['name']}: done on {a.device} in {e['dtype']}")


if __name__ == "__main__":
    main()
