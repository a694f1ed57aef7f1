"""Plots for ``sparq estimate --plot``: a roofline chart and speedup-vs-S across profiles.

matplotlib is imported lazily (only here, only when plotting) with the Agg backend.
"""

from __future__ import annotations

from costmodel.estimate import estimate_attention, estimate_decode
from costmodel.hardware import Hardware, load_hardware
from costmodel.shapes import load_model

__all__ = ["plot_estimate"]


def plot_estimate(
    path: str,
    *,
    hardware: Hardware,
    model: str,
    rows: list[dict],
    profiles: list[str],
    r: int,
    k_divisor: int,
    dtype: str = "float16",
    batch: int = 1,
    sparq_options: dict | None = None,
    decode_options: dict | None = None,
) -> None:
    """Write a two-panel PNG.

    Left: the roofline of ``hardware`` (attainable FLOP/s = min(eta_flop * peak,
    AI * eta_mem * BW)) with the operating points of dense and SparQ attention and of the
    weight matmuls for each batch in ``rows``. Right: whole-decode-step SparQ speedup vs
    sequence length at ``batch`` for every profile in ``profiles``.

    ``sparq_options`` (``store_k_twice``, ``gqa_selection``, ``topk``) go to every SparQ
    estimate and ``decode_options`` (``weight_bytes_per_param``, ``ideal``) to every
    :func:`costmodel.estimate.estimate_decode` call (``ideal`` to the attention points too),
    so the chart prices what the table does.
    Sequence lengths below ``k_divisor`` (``k`` would be 0) are left out of the right panel.
    """
    sparq_options = dict(sparq_options or {})
    decode_options = dict(decode_options or {})
    ideal = bool(decode_options.get("ideal", False))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = load_model(model)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    bw = hardware.mem_efficiency * hardware.mem_bandwidth_bytes_per_s
    peak = hardware.flop_efficiency * hardware.peak_flops(dtype)
    ai = np.logspace(-1, 4, 200)
    ax1.loglog(ai, np.minimum(peak, ai * bw), "k-", label=f"{hardware.name} roofline")
    ax1.axvline(peak / bw, color="k", ls=":", lw=0.8)
    markers = {"dense": "o", "sparq": "s"}
    for B in sorted({row["batch"] for row in rows}):
        for row in (x for x in rows if x["batch"] == B):
            S = row["seq_len"]
            for meth in ("dense", "sparq"):
                kw = dict(r=row["r"], k=row["k"], **sparq_options) if meth == "sparq" else {}
                kw["ideal"] = ideal
                e = estimate_attention(
                    meth,
                    hardware=hardware,
                    batch=B,
                    n_heads=m.n_heads,
                    n_kv_heads=m.n_kv_heads,
                    seq_len=S,
                    head_dim=m.head_dim,
                    dtype=dtype,
                    n_layers=m.n_layers,
                    resident=False,
                    **kw,
                )
                x = e.flops / e.bytes
                ax1.loglog(
                    x,
                    e.flops / e.time_s,
                    markers[meth],
                    color="C0" if meth == "dense" else "C1",
                    alpha=0.4 + 0.6 * (B > 1),
                )
        w_ai = 2.0 * B / (rows[0]["weights_bytes"] / m.params_read_per_step)
        ax1.loglog(w_ai, min(peak, w_ai * bw), "^", color="C2")
        ax1.annotate(f"weights B={B}", (w_ai, min(peak, w_ai * bw)), fontsize=7)
    ax1.plot([], [], "o", color="C0", label="dense attention (each S, B)")
    ax1.plot([], [], "s", color="C1", label="SparQ attention (each S, B)")
    ax1.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax1.set_ylabel("achieved FLOP/s (model)")
    ax1.set_title(f"Roofline: {m.name} decode on {hardware.name}")
    ax1.legend(fontsize=7)

    seqs = [2**p for p in range(10, 18) if 2**p >= k_divisor]
    for i, name in enumerate(profiles):
        hw = load_hardware(name)
        sp = []
        for S in seqs:
            kw = dict(hardware=hw, batch=batch, seq_len=S, dtype=dtype, **decode_options)
            d = estimate_decode(m, method="dense", **kw)
            s = estimate_decode(m, method="sparq", r=r, k=S // k_divisor, **sparq_options, **kw)
            sp.append(d.time_s / s.time_s)
        # 10 default colours: change the line style every 10 profiles so none look alike
        style = ("-", "--", ":", "-.")[(i // 10) % 4]
        ax2.semilogx(seqs, sp, style, lw=1.2 + (name == hardware.name), label=name)
    ax2.axhline(1.0, color="k", lw=0.6)
    ax2.set_xlabel("sequence length S")
    ax2.set_ylabel("decode-step speedup (dense / SparQ)")
    ax2.set_title(f"{m.name}, batch {batch}, r={r}, k=S/{k_divisor}")
    ax2.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
