"""How often the attention benchmark's targets are met: several runs, tallied.

The development host's memory and core speeds move from one minute to the next, so a single
run of ``bench_attention.py`` says little about a target near its threshold. This script runs
it several times, one run after another, each in a fresh process, and prints for every target
in how many runs it was met, with each run's value. By default each run is a rows-only run at
S = 32768 (``--seq-lens 32768 --rows-only``: the rows the SparQ targets are judged on,
about 80 s a run on the 2-vCPU development host)::

    python benchmarks/target_runs.py                    # 5 runs, about 7 minutes
    python benchmarks/target_runs.py --runs 3 --json FILE
    python benchmarks/target_runs.py --runs 2 -- --quick   # arguments after -- go to each run

Nothing else should run on the machine meanwhile (the runs time memory and core speeds).
The JSON file (default ``benchmarks/results/target-runs-<hostname>.json``) holds every run's
targets, its git revision and load averages, and the tally.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "bench_attention.py")
DEFAULT_RUN_ARGS = ("--seq-lens", "32768", "--rows-only")


def tally(runs: list[list[dict]]) -> list[dict]:
    """Per target, over ``runs`` (each the ``targets`` list of one run's JSON: dicts with
    ``target``, ``met`` (True, False, or None for an informational line) and ``value``):
    ``{"target", "met", "judged", "runs", "values"}``, targets in the order they first
    appear. ``met`` counts the runs that met it, ``judged`` the runs that judged it (``met``
    not None), ``runs`` the runs that printed it; ``values`` holds every run's value, in run
    order (None for a run that did not print the target)."""
    names: list[str] = []
    for targets in runs:
        for t in targets:
            if t["target"] not in names:
                names.append(t["target"])
    out = []
    for name in names:
        rows = [next((t for t in targets if t["target"] == name), None) for targets in runs]
        out.append(
            dict(
                target=name,
                met=sum(1 for t in rows if t is not None and t["met"] is True),
                judged=sum(1 for t in rows if t is not None and t["met"] is not None),
                runs=sum(1 for t in rows if t is not None),
                values=[None if t is None else t["value"] for t in rows],
            )
        )
    return out


def format_tally(rows: list[dict]) -> str:
    """The tally as text: one line per target, then each run's value on its own line."""
    lines = []
    for r in rows:
        if r["judged"]:
            head = f"met in {r['met']} of {r['judged']} runs"
        else:
            head = f"information only (printed by {r['runs']} of {len(r['values'])} runs)"
        lines.append(f"{r['target']}: {head}")
        for i, v in enumerate(r["values"], 1):
            if v is not None:
                lines.append(f"    run {i}: {v}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs of bench_attention.py (5)")
    ap.add_argument("--json", default=None, help="output JSON file")
    ap.add_argument(
        "run_args",
        nargs="*",
        help="arguments for each run, after -- (default: --seq-lens 32768 --rows-only)",
    )
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error(f"--runs: expected a positive number of runs, got {a.runs}")
    if "--json" in a.run_args:
        ap.error("--json: give it to this script, not to each run (each run's JSON is kept)")
    run_args = list(a.run_args) or list(DEFAULT_RUN_ARGS)
    out_path = a.json or os.path.join(HERE, "results", f"target-runs-{socket.gethostname()}.json")
    t0 = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.runs):
            path = os.path.join(tmp, f"run{i}.json")
            cmd = [sys.executable, BENCH, *run_args, "--json", path]
            print(f"run {i + 1} of {a.runs}: {' '.join(cmd[1:-2])}", flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
                print(f"run {i + 1} failed (exit status {done.returncode})", file=sys.stderr)
                return 1
            with open(path) as f:
                res = json.load(f)
            runs.append(
                dict(
                    git=res["environment"].get("git"),
                    load_average_before=res.get("load_average_before"),
                    load_average_after=res.get("load_average_after"),
                    elapsed_s=res.get("elapsed_s"),
                    targets=res["targets"],
                )
            )
            for t in res["targets"]:
                verdict = "info" if t["met"] is None else "met" if t["met"] else "NOT met"
                print(f"  [{verdict}] {t['target']}: {t['value']}", flush=True)
    rows = tally([r["targets"] for r in runs])
    print(f"\nTargets over {a.runs} runs ({' '.join(run_args)}; {time.perf_counter() - t0:.0f} s)")
    print(format_tally(rows))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(dict(run_args=run_args, runs=runs, tally=rows), f, indent=1)
    print(f"results: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
