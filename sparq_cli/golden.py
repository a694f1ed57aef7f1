"""``sparq golden``: write golden validation cases (inputs, every intermediate, manifest)."""

from __future__ import annotations

import argparse

from reference.precision import PRECISIONS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="directory to write <case>.npz + manifest.json")
    p.add_argument("--dtype", default="float16", choices=PRECISIONS,
                   help="dtype of the stored inputs, the kernel dtype")  # fmt: skip
    p.add_argument("--suite", default="all", choices=("all", "standard", "adversarial"))
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")


def run(args: argparse.Namespace) -> int:
    from reference.validation import adversarial_cases, save_cases, standard_cases

    cases = []
    if args.suite in ("all", "standard"):
        cases += standard_cases(args.dtype, seed=args.seed)
    if args.suite in ("all", "adversarial"):
        cases += adversarial_cases(args.dtype, seed=args.seed + 100)
    path = save_cases(cases, args.out)
    for c in cases:
        print(f"{c.name:<18} {c.shape:<30} {c.description}")
    print(f"wrote {len(cases)} cases and {path}")
    return 0
