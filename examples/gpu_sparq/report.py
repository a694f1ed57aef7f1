"""Tables for docs/gpu.md from the benchmark results and the checker's JSON reports.

python examples/gpu_sparq/report.py bench docs/data/gpu_bench.json
python examples/gpu_sparq/report.py validation OUT.json NAME=CONFIG:check.json ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def bench_table(path):
    res = json.loads(Path(path).read_text())
    pts = res["points"]
    dense = {}
    for p in pts:
        if p["method"] == "sdpa" and "device_s" in p:
            key = (p["B"], p["Hkv"], p["S"])
            dense.setdefault(key, {})[p["backend"]] = p
    rows = [
        "| Hkv | B | S | r | k | SparQ us (config) | best SDPA us (backend) | flash us | speed-up "
        "| model SparQ us | model speed-up | measured/model | step 1 TB/s | select us | wall us |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in pts:
        if p["method"] != "sparq":
            continue
        key = (p["B"], p["Hkv"], p["S"])
        ds = dense.get(key, {})
        best = min(ds.values(), key=lambda x: x["device_s"]) if ds else None
        flash = ds.get("flash", {}).get("device_s")
        head = f"| {p['Hkv']} | {p['B']} | {p['S'] // 1024}k | {p['r']} | {p['k']} "
        if "device_s" not in p:
            err = next(iter(p["configs"].values()))
            rows.append((head + f"| failed: {err[:40]} " + "| " * 10 + "|").rstrip())
            continue
        t = p["device_s"]
        m = p.get("model") or {}
        ms, msp = m.get("sparq_s", float("nan")), m.get("speedup", float("nan"))
        c = p.get("cumulative_s", {})
        s1 = c.get("step1", 0) - c.get("prologue", 0)
        bw = p["step1_bytes"] / s1 / 1e12 if isinstance(s1, float) and s1 > 0 else float("nan")
        sel = c.get("select", 0) - c.get("step1", 0)
        rows.append(
            head
            + f"| {t * 1e6:.0f} ({p['config']}) | {best['device_s'] * 1e6:.0f} ({best['backend']}) "
            + f"| {flash * 1e6:.0f} | {best['device_s'] / t:.2f} "
            + f"| {ms * 1e6:.0f} | {msp:.2f} | {t / ms:.2f} | {bw:.2f} | {sel * 1e6:.0f} "
            + f"| {p['wall_s'] * 1e6:.0f} |"
        )
    return "\n".join(rows)


def validation(out, items):
    summary = []
    for item in items:
        name, rest = item.split("=", 1)
        config, path = rest.split(":", 1)
        d = json.loads(Path(path).read_text())
        worst = {}
        for rep in d["reports"]:
            for r in rep["results"]:
                ratio = r.get("ratio")
                if isinstance(ratio, (int, float)) and ratio > worst.get("ratio", -1):
                    worst = dict(ratio=ratio, case=rep["case"], step=r["step"])
        summary.append(dict(suite=name, config=config, dtypes=sorted({r["dtype"] for r in
                            d["reports"]}), cases=[r["case"] + " (" + r["shape"] + ")" for r in
                            d["reports"]], summary=d["summary"], largest=worst,
                            not_provided=d["not_provided"]))  # fmt: skip
    Path(out).write_text(json.dumps(summary, indent=1))
    for s in summary:
        sm = s["summary"]
        print(f"| {s['suite']} | {'/'.join(s['dtypes']) or '-'} | {s['config']} | {sm['cases']} "
              f"| {sm['passed']} | {sm['failed']} | {sm['not_provided']} "
              f"| {s['largest'].get('ratio', float('nan')):.3f} "
              f"({s['largest'].get('case', '-')}, {s['largest'].get('step', '-')}) |")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "bench":
        print(bench_table(sys.argv[2]))
    else:
        validation(sys.argv[2], sys.argv[3:])
