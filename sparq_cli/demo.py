"""``sparq demo``: dense vs SparQ attention on a built-in random case."""

from __future__ import annotations

import argparse

import numpy as np

from sparq_cli.cli import int_arg

#: most elements of one K or V cache (``batch x kv_heads x seq_len x head_dim``) and of q
#: (``batch x heads x head_dim``) the demo builds: 2**24 float64 = 128 MiB each
MAX_ELEMENTS = 2**24
#: most cached positions (``batch x kv_heads x seq_len``): each carries scores, indices and
#: mask entries besides its d cache values (2**21: ~0.7 GB peak, ~3 s at d = 8)
MAX_POSITIONS = 2**21


def add_arguments(p: argparse.ArgumentParser) -> None:
    pos = int_arg(lo=1, hi=MAX_ELEMENTS)
    p.add_argument("--batch", type=pos, default=2, help="B (default 2)")
    p.add_argument("--heads", type=pos, default=8, help="query heads H (default 8)")
    p.add_argument("--kv-heads", type=pos, default=2, help="KV heads Hkv, dividing H (default 2)")
    p.add_argument("--seq-len", type=pos, default=2048, help="S (default 2048)")
    p.add_argument("--head-dim", type=pos, default=128, help="d (default 128)")
    p.add_argument("--r", type=pos, default=16, help="query components kept, <= d (default 16)")
    p.add_argument("--k", type=pos, default=128, help="positions kept, <= S (default 128)")
    p.add_argument(
        "--local-window",
        type=int_arg(lo=0, hi=MAX_ELEMENTS),
        default=32,
        help="last positions always kept, <= k (default 32 = k/4)",
    )
    p.add_argument("--seed", type=int_arg(lo=0), default=0, help="random seed >= 0 (default 0)")
    p.epilog = (
        f"Sizes are positive; B*Hkv*S <= {MAX_POSITIONS} (2**21) positions; B*Hkv*S*d and "
        f"B*H*d <= {MAX_ELEMENTS} (2**24) elements."
    )  # fmt: skip


def check_args(args: argparse.Namespace) -> None:
    """The combinations the options must satisfy, as ``ValueError`` naming the options
    (each option's own range is checked by argparse)."""
    B, H, Hkv, S, d = args.batch, args.heads, args.kv_heads, args.seq_len, args.head_dim
    if H % Hkv:
        raise ValueError(f"--heads ({H}): expected a multiple of --kv-heads ({Hkv})")
    if args.r > d:
        raise ValueError(f"--r: expected <= --head-dim ({d}), got {args.r}")
    if args.k > S:
        raise ValueError(f"--k: expected <= --seq-len ({S}), got {args.k}")
    if args.local_window > args.k:
        raise ValueError(f"--local-window: expected <= --k ({args.k}), got {args.local_window}")
    positions = B * Hkv * S
    if positions > MAX_POSITIONS:
        raise ValueError(
            f"--batch x --kv-heads x --seq-len: expected at most {MAX_POSITIONS} cached "
            f"positions, got {B} x {Hkv} x {S} = {positions}"
        )
    cache = B * Hkv * S * d
    if cache > MAX_ELEMENTS:
        raise ValueError(
            f"--batch x --kv-heads x --seq-len x --head-dim: expected at most {MAX_ELEMENTS} "
            f"cache elements, got {B} x {Hkv} x {S} x {d} = {cache}"
        )
    q = B * H * d
    if q > MAX_ELEMENTS:
        raise ValueError(
            f"--batch x --heads x --head-dim: expected at most {MAX_ELEMENTS} query elements, "
            f"got {B} x {H} x {d} = {q}"
        )


def run(args: argparse.Namespace) -> int:
    from reference import dense_attention, sparq_attention

    check_args(args)
    rng = np.random.default_rng(args.seed)
    B, H, Hkv, S, d = args.batch, args.heads, args.kv_heads, args.seq_len, args.head_dim
    # Heavy-tailed query components (as in trained models, paper Fig. 3) shared within a GQA
    # group, and a few keys aligned with the group's query, so that attention is peaked.
    g = H // Hkv
    base = rng.standard_t(df=2, size=(B, Hkv, 1, d))
    q = (base + 0.3 * rng.normal(size=(B, Hkv, g, d))).reshape(B, H, d)
    K = rng.normal(size=(B, Hkv, S, d))
    heavy = rng.choice(S, size=min(S, 8), replace=False)
    K[:, :, heavy] += 0.5 * base / np.linalg.norm(base, axis=-1, keepdims=True) * np.sqrt(d)
    V = rng.normal(size=(B, Hkv, S, d))
    mask = np.ones((B, S), dtype=bool)
    mask[1:, : S // 4] = False  # left padding in the other batch rows

    dense = dense_attention(q, K, V, mask=mask)
    st = sparq_attention(
        q, K, V, r=args.r, k=args.k, local_window=args.local_window, mask=mask, return_steps=True
    )
    err = np.abs(st.out - dense).max()
    rel = np.linalg.norm(st.out - dense) / np.linalg.norm(dense)
    print(
        f"q {q.shape}  k_cache/v_cache {K.shape}  mask {mask.shape} ({mask.sum(1).tolist()} valid)"
    )
    print(f"SparQ r={args.r} k={args.k} local_window={args.local_window} (float64 reference)")
    print(f"components (b=0, kv head 0): {st.components[0, 0].tolist()}")
    sel = np.sort(st.positions[0, 0][st.positions[0, 0] >= 0])
    print(f"selected positions (b=0, kv head 0, sorted, {sel.size}): {sel[:12].tolist()} ...")
    found = np.isin(heavy, st.positions[0, 0]).sum()
    print(f"planted heavy positions: {np.sort(heavy).tolist()} ({found}/{heavy.size} selected)")
    print(f"alpha (b=0): {np.array2string(st.alpha[0], precision=4)}")
    print(f"max |SparQ - dense| = {err:.3e}; relative L2 error = {rel:.3e}")
    return 0
