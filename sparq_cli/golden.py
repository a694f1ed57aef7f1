"""``sparq golden``: write golden validation cases (inputs, every intermediate, manifest)."""

from __future__ import annotations

import argparse

from reference.precision import PRECISIONS
from sparq_cli.cli import int_arg

#: most elements of one K or V cache of a custom case (``B x Hkv x S x d``; 2**31 is
#: B=16, Hkv=32, S=32768, d=128: 4 GiB per cache in float16). Cases above
#: ``reference.validation.ROWWISE_ELEMENTS`` are built one batch row at a time, so float64
#: copies are only ever of one row: ``Hkv x S x d`` at most :data:`MAX_ROW_ELEMENTS`.
MAX_CACHE_ELEMENTS = 2**31
#: most elements of one batch row of a cache (2**28: 2 GiB per float64 copy of a row)
MAX_ROW_ELEMENTS = 2**28


def _shape(text: str) -> tuple[int, int, int, int, int]:
    parts = text.split(",")
    if len(parts) != 5:
        raise argparse.ArgumentTypeError(f"expected B,H,Hkv,S,d (5 ints), got {text!r}")
    try:
        B, H, Hkv, S, d = (int(x, 10) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected B,H,Hkv,S,d (5 ints), got {text!r}") from None
    if min(B, H, Hkv, S, d) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    if H % Hkv:
        raise argparse.ArgumentTypeError(f"expected H a multiple of Hkv, got H={H}, Hkv={Hkv}")
    if B * Hkv * S * d > MAX_CACHE_ELEMENTS or B * H * d > MAX_CACHE_ELEMENTS:
        raise argparse.ArgumentTypeError(
            f"expected B*Hkv*S*d <= {MAX_CACHE_ELEMENTS} (2**31), got {B * Hkv * S * d}"
        )
    if Hkv * S * d > MAX_ROW_ELEMENTS:
        raise argparse.ArgumentTypeError(
            f"expected Hkv*S*d <= {MAX_ROW_ELEMENTS} (2**28: one batch row is widened to"
            f" float64 for the truth), got {Hkv * S * d}"
        )
    return B, H, Hkv, S, d


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="directory to write <case>.npz + manifest.json")
    p.add_argument("--dtype", default="float16", choices=PRECISIONS,
                   help="dtype of the stored inputs, the kernel dtype")  # fmt: skip
    p.add_argument("--suite", default=None, choices=("all", "standard", "adversarial"),
                   help="built-in cases (default: all; not with --shape)")  # fmt: skip
    p.add_argument("--seed", type=int_arg(lo=0), default=0, help="base seed (default 0)")
    c = p.add_argument_group("one custom case (instead of --suite)")
    c.add_argument("--shape", type=_shape, metavar="B,H,Hkv,S,d",
                   help="batch, query heads, KV heads, sequence length, head dim")  # fmt: skip
    c.add_argument("--name", default="custom", help="case name (default custom)")
    c.add_argument("--r", type=int_arg(lo=1), help="query components kept (<= d)")
    c.add_argument("--k", type=int_arg(lo=1), help="positions kept")
    c.add_argument("--local-window", type=int_arg(lo=0), default=0, help="(default 0)")
    c.add_argument("--topk", choices=("exact", "bucketed"), default="exact",
                   help="step 4: exact top-k (default) or the bucketed top-k")  # fmt: skip
    c.add_argument("--num-buckets", type=int_arg(lo=1), help="with --topk bucketed")
    c.add_argument("--k-per-bucket", type=int_arg(lo=1), default=1, help="(default 1)")
    c.add_argument("--contiguous", action="store_true",
                   help="contiguous buckets (default interleaved)")  # fmt: skip
    c.add_argument("--selection", choices=("group", "head"), default="group",
                   help="one selection per KV group (default) or per query head")  # fmt: skip
    c.add_argument("--group-score", choices=("logits", "probs"), default="logits",
                   help="group score: summed logits (default) or summed probabilities")  # fmt: skip
    c.add_argument("--temperature", choices=("l1", "sqrt_d", "sqrt_r"), default="l1",
                   help="step 2: L1 coverage (default), sqrt(d) or sqrt(r)")  # fmt: skip
    c.add_argument("--no-reallocate", action="store_true", help="alpha = 1 (no v_mean mixing)")
    c.add_argument("--values", choices=("normal", "heavy", "ties"), default="heavy",
                   help="inputs (default heavy: a few keys aligned with q)")  # fmt: skip
    c.add_argument("--holes", action="store_true", help="masks with holes as well as padding")


def _custom_case(args: argparse.Namespace):
    from reference.validation import make_case

    if args.r is None or args.k is None:
        raise ValueError("--shape: --r and --k are required with a custom shape")
    B, H, Hkv, S, d = args.shape
    options = dict(temperature=args.temperature, group_score=args.group_score,
                   selection=args.selection, reallocate=not args.no_reallocate)  # fmt: skip
    if args.topk == "bucketed":
        options.update(topk="bucketed", num_buckets=args.num_buckets,
                       k_per_bucket=args.k_per_bucket, interleaved=not args.contiguous)  # fmt: skip
    elif args.num_buckets is not None or args.k_per_bucket != 1 or args.contiguous:
        raise ValueError("--num-buckets, --k-per-bucket, --contiguous: only with --topk bucketed")
    return make_case(
        args.name, B=B, H=H, Hkv=Hkv, S=S, d=d, r=args.r, k=args.k,
        local_window=args.local_window, dtype=args.dtype, seed=args.seed, values=args.values,
        holes=args.holes, description=f"custom: {' '.join(f'{k}={v}' for k, v in options.items())}",
        **options,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from reference.validation import adversarial_cases, save_cases, standard_cases

    if args.shape is not None:
        if args.suite is not None:
            raise ValueError("--suite: not with --shape (a custom case is written on its own)")
        cases = [_custom_case(args)]
    else:
        suite = args.suite or "all"
        cases = []
        if suite in ("all", "standard"):
            cases += standard_cases(args.dtype, seed=args.seed)
        if suite in ("all", "adversarial"):
            cases += adversarial_cases(args.dtype, seed=args.seed + 100)
    path = save_cases(cases, args.out)
    for c in cases:
        print(f"{c.name:<18} {c.shape:<30} {c.description}")
    print(f"wrote {len(cases)} cases and {path}")
    return 0
