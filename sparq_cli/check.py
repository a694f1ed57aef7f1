"""``sparq check``: judge an implementation's outputs against golden cases, step by step.

Exit status: 0 when at least one case was judged and every judged case passed (and no
case's outputs file is missing, unless ``--allow-missing``); 1 when a case failed, a case's
outputs file is missing, or no case was judged at all (an empty golden set, or every file
missing); 2 for an unusable golden directory or outputs file (``sparq check: error: ...``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from reference.precision import PRECISIONS

EXIT_HELP = (
    "exit status: 0 if at least one case was judged and every judged case passed; 1 if a"
    " case failed, a case has no outputs file (unless --allow-missing) or no case was judged"
    " (an empty golden set); 2 if the golden directory or an outputs file cannot be used"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("golden", help="directory written by `sparq golden`")
    p.add_argument("outputs", help="directory with <case>.npz holding any of the step arrays:"
                   " components, temperature, approx_logits, positions, alpha, v_mean, y, out"
                   " (with --dtype bfloat16, uint16 arrays of float steps are read as"
                   " bfloat16 bit patterns)")  # fmt: skip
    p.add_argument("--allow-missing", action="store_true",
                   help="do not fail when a case has no outputs file")  # fmt: skip
    p.add_argument("--dtype", default=None, choices=PRECISIONS,
                   help="implementation compute dtype (default: the case dtype)")  # fmt: skip
    p.add_argument("--json", action="store_true",
                   help="print one JSON document instead of the tables: {reports: [per-case"
                   " CheckReport.to_dict()], not_provided: [case names], summary: {cases,"
                   " passed, failed, not_provided, largest_ratio}}")  # fmt: skip
    p.epilog = EXIT_HELP


def _largest_ratio(reports) -> float | None:
    """The largest max_error / tolerance over every step of every report (None if none)."""
    from reference._checker_io import step_ratio

    ratios = [
        step_ratio(r.max_error, r.tolerance)
        for rep in reports
        for r in rep.results
        if step_ratio(r.max_error, r.tolerance) is not None
    ]
    return max(ratios, default=None)


def run(args: argparse.Namespace) -> int:
    from reference._checker_io import _json_float
    from reference.validation import check_sparq, load_cases

    cases = load_cases(args.golden)
    outdir = Path(args.outputs)
    if not outdir.is_dir():
        raise FileNotFoundError(f"outputs: not a directory: {outdir}")
    say = (lambda *a: None) if args.json else print
    reports, missing = [], []
    for case in cases:
        f = outdir / f"{case.name}.npz"
        if not f.exists():
            say(f"case {case.name}: no {f.name} in {outdir} (not provided)")
            missing.append(case.name)
            continue
        with np.load(f) as z:
            outputs = {k: z[k] for k in z.files}
        try:
            report = check_sparq(case, outputs, dtype=args.dtype)
        except (TypeError, ValueError) as exc:  # e.g. an unknown step name in the file
            raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"{f}: {exc}") from exc
        say(report)
        reports.append(report)
    n_pass = sum(r.passed for r in reports)
    n_fail = len(reports) - n_pass
    if args.json:
        doc = dict(
            reports=[r.to_dict() for r in reports],
            not_provided=missing,
            summary=dict(
                cases=len(cases),
                passed=n_pass,
                failed=n_fail,
                not_provided=len(missing),
                largest_ratio=_json_float(_largest_ratio(reports)),
            ),
        )
        print(json.dumps(doc, indent=1, allow_nan=False))
    else:
        print(f"{n_pass} passed, {n_fail} failed, {len(missing)} not provided")
        if not reports:
            print("no case was judged: nothing passed" + (" (no cases)" if not cases else ""))
    if n_fail or not reports:
        return 1
    return 1 if missing and not args.allow_missing else 0
