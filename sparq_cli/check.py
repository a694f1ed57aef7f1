"""``sparq check``: judge an implementation's outputs against golden cases, step by step."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from reference.precision import PRECISIONS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("golden", help="directory written by `sparq golden`")
    p.add_argument("outputs", help="directory with <case>.npz holding any of the step arrays:"
                   " components, approx_logits, positions, alpha, v_mean, out")  # fmt: skip
    p.add_argument("--allow-missing", action="store_true",
                   help="do not fail when a case has no outputs file")  # fmt: skip
    p.add_argument("--dtype", default=None, choices=PRECISIONS,
                   help="implementation compute dtype (default: the case dtype)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from reference.validation import check_sparq, load_cases

    cases = load_cases(args.golden)
    outdir = Path(args.outputs)
    if not outdir.is_dir():
        raise FileNotFoundError(f"outputs: not a directory: {outdir}")
    n_pass = n_fail = n_missing = 0
    for case in cases:
        f = outdir / f"{case.name}.npz"
        if not f.exists():
            print(f"case {case.name}: no {f.name} in {outdir} (not provided)")
            n_missing += 1
            continue
        with np.load(f) as z:
            outputs = {k: z[k] for k in z.files}
        report = check_sparq(case, outputs, dtype=args.dtype)
        print(report)
        n_pass += report.passed
        n_fail += not report.passed
    print(f"{n_pass} passed, {n_fail} failed, {n_missing} not provided")
    return 1 if n_fail or (n_missing and not args.allow_missing) else 0
