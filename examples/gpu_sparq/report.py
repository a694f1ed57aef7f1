"""Tables for docs/gpu.md from the benchmark results and the checker's JSON reports.

python examples/gpu_sparq/report.py bench docs/data/gpu_bench.json
python examples/gpu_sparq/report.py plot docs/data/gpu_bench_run3.json docs/gpu_speedup.png
python examples/gpu_sparq/report.py validation OUT.json NAME=CONFIG:check.json ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _dense_best(pts):
    dense = {}
    for p in pts:
        if p["method"] == "sdpa" and "device_s" in p:
            dense.setdefault((p["B"], p["Hkv"], p["S"]), {})[p["backend"]] = p
    return dense


def _phases(p):
    """(prologue, step 1, selection, attention + combine) in seconds, from the cumulative
    times of the call cut after each phase."""
    c = p.get("cumulative_s", {})
    if not all(isinstance(c.get(n), float) for n in ("prologue", "step1", "select")):
        return None
    t = p["device_s"]
    return c["prologue"], c["step1"] - c["prologue"], c["select"] - c["step1"], t - c["select"]


def bench_table(path):
    """Markdown table of every SparQ point (and a summary line: how many of the points the
    model calls memory-bound are within 25% of its prediction)."""
    res = json.loads(Path(path).read_text())
    pts = res["points"]
    dense = _dense_best(pts)
    rows = [
        "| Hkv | B | S | r | k | SparQ us (config) | best SDPA us (backend) | flash us | speed-up "
        "| model us | model speed-up | measured/model | model bound "
        "| prologue / step 1 / select / attend us | step 1 TB/s | wall us |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    within = mem = 0
    for p in pts:
        if p["method"] != "sparq":
            continue
        key = (p["B"], p["Hkv"], p["S"])
        ds = dense.get(key, {})
        best = min(ds.values(), key=lambda x: x["device_s"]) if ds else None
        flash = ds.get("flash", {}).get("device_s", float("nan"))
        head = f"| {p['Hkv']} | {p['B']} | {p['S'] // 1024}k | {p['r']} | {p['k']} "
        if "device_s" not in p:
            err = next(iter(p["configs"].values()))
            rows.append((head + f"| failed: {err[:40]} " + "| " * 11 + "|").rstrip())
            continue
        t = p["device_s"]
        m = p.get("model") or {}
        ms, msp = m.get("sparq_s", float("nan")), m.get("speedup", float("nan"))
        bound = m.get("bound", "-")
        if bound == "memory":
            mem += 1
            within += abs(t / ms - 1) <= 0.25
        ph = _phases(p)
        if ph:
            phs = " / ".join(f"{x * 1e6:.0f}" for x in ph)
            # phases under 5 us are within the noise of the differences
            bw = f"{p['step1_bytes'] / ph[1] / 1e12:.2f}" if ph[1] > 5e-6 else "-"
        else:
            phs, bw = "-", "-"
        rows.append(
            head
            + f"| {t * 1e6:.0f} ({p['config']}) | {best['device_s'] * 1e6:.0f} ({best['backend']}) "
            + f"| {flash * 1e6:.0f} | {best['device_s'] / t:.2f} "
            + f"| {ms * 1e6:.0f} | {msp:.2f} | {t / ms:.2f} | {bound} | {phs} | {bw} "
            + f"| {p['wall_s'] * 1e6:.0f} |"
        )
    rows.append("")
    rows.append(f"Memory-bound (model) points within 25% of the model: {within} of {mem}.")
    return "\n".join(rows)


def plot(path, out):
    """Speed-up over the best SDPA against S, measured (solid) and the model's (dashed), one
    panel per (Hkv, k rule), one colour per batch; a fifth panel: measured / model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.loads(Path(path).read_text())
    pts = res["points"]
    dense = _dense_best(pts)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    colours = {1: "tab:blue", 16: "tab:orange", 64: "tab:green"}
    ratio_ax = axes[0][2]
    for row, hkv in enumerate((32, 8)):
        for col, small in enumerate((True, False)):
            ax = axes[row][col]
            for B, colour in colours.items():
                sel = [
                    p for p in pts
                    if p["method"] == "sparq" and p["Hkv"] == hkv and p["B"] == B
                    and (p["k"] == 128) == small and "device_s" in p
                ]  # fmt: skip
                sel.sort(key=lambda p: p["S"])
                if not sel:
                    continue
                S = [p["S"] for p in sel]
                best = [min(x["device_s"] for x in dense[(B, hkv, p["S"])].values()) for p in sel]
                meas = [b / p["device_s"] for b, p in zip(best, sel, strict=True)]
                model = [p["model"]["speedup"] for p in sel]
                ax.plot(S, meas, "o-", color=colour, label=f"B={B} measured")
                ax.plot(S, model, "s--", color=colour, alpha=0.6, label=f"B={B} model")
                ratio_ax.plot([p["device_s"] / p["model"]["sparq_s"] for p in sel], meas,
                              "o" if small else "^", color=colour, alpha=0.7)  # fmt: skip
            ax.set_xscale("log", base=2)
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.axhline(3.0, color="grey", lw=0.8, ls=":")
            name = "MHA" if hkv == 32 else "GQA g=4"
            rk = "r=32, k=128" if small else "r=16, k=S/8"
            ax.set_title(f"{name} (H=32, Hkv={hkv}), {rk}")
            ax.set_xlabel("S")
            ax.set_ylabel("speed-up over best SDPA")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    ratio_ax.axvline(1.0, color="grey", lw=0.8)
    for x in (0.75, 1.25):
        ratio_ax.axvline(x, color="grey", lw=0.8, ls=":")
    ratio_ax.set_xscale("log", base=2)
    ratio_ax.set_xlabel("measured time / model time (dotted: +-25%)")
    ratio_ax.set_ylabel("speed-up over best SDPA")
    ratio_ax.set_title("every point (o: k=128, ^: k=S/8; colour: B)")
    ratio_ax.grid(alpha=0.3)
    axes[1][2].axis("off")
    fig.suptitle(f"SparQ decode step vs SDPA, {res.get('device', '')}, {pts[0]['dtype']}")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


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
    elif sys.argv[1] == "plot":
        plot(sys.argv[2], sys.argv[3])
    else:
        validation(sys.argv[2], sys.argv[3:])
