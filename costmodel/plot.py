"""Plots for ``sparq estimate``: decode time and SparQ speed-up vs S (``--plot``) and the
roofline chart (``--roofline``).

matplotlib is imported lazily (only here, only when plotting) with the Agg backend. Each
function returns the data it drew (``{"series": [...], ...}``, read back from the figure's
own lines), so a caller or a test can check what the figure shows.
"""

from __future__ import annotations

import math

from costmodel.estimate import estimate_attention, estimate_decode
from costmodel.hardware import Hardware, load_hardware
from costmodel.shapes import load_model

__all__ = ["plot_decode", "plot_roofline", "plot_estimate", "crossover", "seq_grid"]

_STYLES = ("-", "--", ":", "-.")


def seq_grid(lo: int, hi: int, points: int = 25) -> list[int]:
    """``points`` sequence lengths spaced evenly in log S from ``lo`` to ``hi`` (distinct
    ints, both ends included)."""
    if hi <= lo:
        return [lo]
    out = sorted({round(lo * (hi / lo) ** (i / (points - 1))) for i in range(points)})
    return out


def crossover(seqs: list[int], speedups: list[float]) -> float | None:
    """The first S where the speed-up crosses 1 from below (interpolated linearly in log S),
    ``seqs[0]`` when it is already above 1 there, None when it never reaches 1."""
    if speedups[0] >= 1:
        return float(seqs[0])
    for (s0, y0), (s1, y1) in zip(
        zip(seqs, speedups, strict=True), zip(seqs[1:], speedups[1:], strict=True), strict=False
    ):
        if y0 < 1 <= y1:
            t = (1 - y0) / (y1 - y0)
            return float(math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0))))
    return None


def _lines_data(fig) -> list[dict]:
    """Every labelled line of ``fig``: its axes' title, label and data."""
    out = []
    for ax in fig.axes:
        for line in ax.get_lines():
            label = line.get_label()
            if label.startswith("_"):
                continue
            out.append(
                {
                    "axes": ax.get_title(),
                    "label": label,
                    "x": [float(v) for v in line.get_xdata()],
                    "y": [float(v) for v in line.get_ydata()],
                    "color": line.get_color(),
                    "linestyle": line.get_linestyle(),
                }
            )
    return out


def plot_decode(
    path: str,
    *,
    hardware: list[Hardware],
    model: str,
    batches: list[int],
    seq_min: int,
    seq_max: int,
    r: int,
    k_divisor: int,
    dtype: str = "float16",
    sparq_options: dict | None = None,
    decode_options: dict | None = None,
) -> dict:
    """Write a two-panel PNG for each profile of ``hardware`` (the chosen one first, then
    the ``--compare`` ones) and each batch of ``batches``.

    Left: time of one decode step (ms, log-log) vs S: whole step (dense solid, SparQ
    dashed) for each (device, batch). Right: whole-step SparQ speed-up (dense / SparQ) vs S,
    the line 1 (no gain) and each crossover (first S where SparQ wins) marked with a dot and
    its value. Colours are distinct per (device, batch); the line style tells the device
    (right panel) or the method (left). S runs over 25 log-spaced values from ``seq_min``
    to ``seq_max`` (never below ``k_divisor``).

    ``sparq_options`` (``store_k_twice``, ``gqa_selection``, ``topk``) go to every SparQ
    estimate and ``decode_options`` (``weight_bytes_per_param``, ``ideal``,
    ``implementation``, ``tp``) to every :func:`costmodel.estimate.estimate_decode` call.

    Returns ``{"series": [...], "crossovers": [...]}``: each drawn line (axes title, label
    ``"<device> B=<batch> ..."``, x, y) and ``{"hardware", "batch", "seq_len"}`` per
    crossover (``seq_len`` None when SparQ never wins in the range).
    """
    sparq_options = dict(sparq_options or {})
    decode_options = dict(decode_options or {})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = load_model(model)
    seqs = seq_grid(max(seq_min, k_divisor), max(seq_max, k_divisor))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    cmap = plt.get_cmap("tab10" if len(hardware) * len(batches) <= 10 else "tab20")
    crossings = []
    i = 0
    for h_i, hw in enumerate(hardware):
        for B in batches:
            color = cmap(i % cmap.N)
            i += 1
            dense_t, sparq_t = [], []
            for S in seqs:
                kw = dict(hardware=hw, batch=B, seq_len=S, dtype=dtype, **decode_options)
                d = estimate_decode(m, method="dense", **kw)
                s = estimate_decode(m, method="sparq", r=r, k=S // k_divisor, **sparq_options, **kw)
                dense_t.append(d.time_s * 1e3)
                sparq_t.append(s.time_s * 1e3)
            tag = f"{hw.name} B={B}"
            ax1.loglog(seqs, dense_t, "-", color=color, label=f"{tag} dense")
            ax1.loglog(seqs, sparq_t, "--", color=color, label=f"{tag} SparQ")
            sp = [a / b for a, b in zip(dense_t, sparq_t, strict=True)]
            style = _STYLES[h_i % len(_STYLES)]
            ax2.semilogx(seqs, sp, style, color=color, lw=1.6, label=tag)
            x = crossover(seqs, sp)
            crossings.append({"hardware": hw.name, "batch": B, "seq_len": x})
            if x is not None and x > seqs[0]:
                ax2.plot([x], [1.0], "o", color=color)
                ax2.annotate(f"{x / 1024:.1f}k", (x, 1.0), textcoords="offset points",
                             xytext=(3, -12), fontsize=7, color=color)  # fmt: skip
    ax1.set_xlabel("sequence length S (tokens)")
    ax1.set_ylabel("time per decode step (ms)")
    ax1.set_title(f"{m.name} decode step: dense (solid) vs SparQ (dashed)")
    ax1.legend(fontsize=7, ncol=1 if i <= 4 else 2)
    ax2.axhline(1.0, color="k", lw=0.8, label="_no gain")
    ax2.set_xlabel("sequence length S (tokens)")
    ax2.set_ylabel("SparQ speed-up of the decode step (dense / SparQ)")
    ax2.set_title(f"SparQ r={r}, k=S/{k_divisor}; dots: crossover (SparQ wins from there)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    data = {"series": _lines_data(fig), "crossovers": crossings, "seq_lens": seqs}
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return data


def plot_roofline(
    path: str,
    *,
    hardware: Hardware,
    model: str,
    rows: list[dict],
    dtype: str = "float16",
    sparq_options: dict | None = None,
    ideal: bool = False,
) -> dict:
    """Write the roofline of ``hardware`` (attainable FLOP/s = min(eta_flop * peak,
    AI * eta_mem * BW)) with the operating points of dense and SparQ attention (each (batch,
    S) row of ``rows``) and of the weight GEMVs per batch.

    Decode attention's arithmetic intensity is about the GQA group size g FLOP/byte for
    every S and batch (each K/V byte meets g query heads), so its points sit on top of each
    other: the chart says so instead of pretending to separate them. Returns the drawn
    lines as :func:`plot_decode` does."""
    sparq_options = dict(sparq_options or {})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = load_model(model)
    fig, ax = plt.subplots(1, 1, figsize=(7.5, 5.2))
    bw = hardware.mem_efficiency * hardware.mem_bandwidth_bytes_per_s
    peak = hardware.flop_efficiency * hardware.peak_flops(dtype)
    ai = np.logspace(-1, 4, 200)
    ax.loglog(ai, np.minimum(peak, ai * bw), "k-", label=f"{hardware.name} roofline")
    ax.axvline(peak / bw, color="k", ls=":", lw=0.8, label="_ridge")
    pts = {"dense": ([], []), "sparq": ([], [])}
    for row in rows:
        for meth in ("dense", "sparq"):
            kw = dict(r=row["r"], k=row["k"], **sparq_options) if meth == "sparq" else {}
            e = estimate_attention(
                meth,
                hardware=hardware,
                batch=row["batch"],
                n_heads=m.n_heads,
                n_kv_heads=m.n_kv_heads,
                seq_len=row["seq_len"],
                head_dim=m.head_dim,
                dtype=dtype,
                n_layers=m.n_layers,
                resident=False,
                ideal=ideal,
                **kw,
            )
            pts[meth][0].append(e.flops / e.bytes)
            pts[meth][1].append(e.flops / e.time_s)
    ax.loglog(*pts["dense"], "o", color="C0", ls="none", label="dense attention (every B, S)")
    ax.loglog(*pts["sparq"], "s", color="C1", ls="none", mfc="none",
              label="SparQ attention (every B, S)")  # fmt: skip
    for j, B in enumerate(sorted({row["batch"] for row in rows})):
        w_ai = 2.0 * B / (rows[0]["weights_bytes"] / m.params_read_per_step)
        ax.loglog([w_ai], [min(peak, w_ai * bw)], "^", color=f"C{(j + 2) % 10}",
                  ls="none", label=f"weight GEMVs B={B}")  # fmt: skip
    g = m.n_heads // m.n_kv_heads
    ax.annotate(
        f"attention: ~{g} FLOP/byte (GQA group g={g})\nfor every S and batch",
        (max(pts["dense"][0]), max(pts["dense"][1])),
        textcoords="offset points",
        xytext=(10, -30),
        fontsize=7,
    )
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved FLOP/s (model)")
    ax.set_title(f"Roofline: {m.name} decode on {hardware.name}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    data = {"series": _lines_data(fig)}
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return data


def plot_estimate(path: str, *, hardware: Hardware, model: str, rows: list[dict], r: int,
                  k_divisor: int, dtype: str = "float16", profiles: list[str] | None = None,
                  batch: int | None = None, sparq_options: dict | None = None,
                  decode_options: dict | None = None) -> dict:  # fmt: skip
    """The decode-time / speed-up chart of ``rows``' batches and S range on ``hardware``
    (and ``profiles``, by name, compared); kept for callers of the old two-panel plot.
    ``batch`` restricts it to one batch."""
    batches = [batch] if batch is not None else sorted({row["batch"] for row in rows})
    hws = [hardware] + [load_hardware(n) for n in (profiles or []) if n != hardware.name]
    return plot_decode(
        path,
        hardware=hws,
        model=model,
        batches=batches,
        seq_min=min(row["seq_len"] for row in rows),
        seq_max=max(row["seq_len"] for row in rows),
        r=r,
        k_divisor=k_divisor,
        dtype=dtype,
        sparq_options=sparq_options,
        decode_options=decode_options,
    )
