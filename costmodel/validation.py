"""Predicted vs published / measured numbers (the table in docs/costmodel.md).

Run ``python -m costmodel.validation`` to print the table in Markdown. Every row names its
source and the configuration assumed where the source is silent; the errors are reported as
they come out, including where the model misses.
"""

from __future__ import annotations

import json
from pathlib import Path

from costmodel.estimate import estimate_attention, estimate_decode, speedup
from costmodel.traffic import transfers

__all__ = ["comparison_rows", "markdown_table"]

Q8_0 = 34 / 32  # llama.cpp Q8_0: 32 int8 weights + one fp16 scale per block


def _row(quantity, source, published, predicted, unit, note=""):
    err = (predicted - published) / published if published else float("nan")
    return dict(
        quantity=quantity,
        source=source,
        published=published,
        predicted=predicted,
        unit=unit,
        error=err,
        note=note,
    )


def _h100_measurements() -> dict | None:
    here = Path(__file__).resolve().parents[1] / "docs" / "costmodel_h100_measurements.json"
    if here.is_file():
        return json.loads(here.read_text())
    return None


def comparison_rows() -> list[dict]:
    rows: list[dict] = []
    # --- paper formulas -----------------------------------------------------------------
    for S, pub, src in (
        (4096, 6.4, "paper Table 4 (theoretical)"),
        (16384, 7.53, "paper §6 IPU (theoretical)"),
    ):
        el = transfers("sparq", seq_len=S, head_dim=128, r=32, k=128) - 4 * 128
        rows.append(
            _row(
                f"SparQ/dense transfers ratio, S={S}",
                src,
                pub,
                2 * S * 128 / el,
                "x",
                "2Sd/(rS+2kd), r 32, k 128, d 128",
            )
        )
    ipu = speedup(hardware="ipu-bow", r=32, k=128, batch=1, n_heads=32, seq_len=16384, head_dim=128)
    rows.append(
        _row(
            "IPU measured speedup, S=16384",
            "paper §6 IPU (measured 7.41x)",
            7.41,
            ipu.ratio,
            "x",
            "ipu-bow profile, batch 1, 32 heads assumed (SRAM)",
        )
    )
    ipu_i = speedup(
        hardware="ipu-bow",
        r=32,
        k=128,
        batch=1,
        n_heads=32,
        seq_len=16384,
        head_dim=128,
        ideal=True,
    )
    rows.append(
        _row(
            "IPU measured speedup, ideal model",
            "paper §6 IPU (measured 7.41x)",
            7.41,
            ipu_i.ratio,
            "x",
            "same, ideal=True (no t0, free top-k)",
        )
    )
    # --- Table 4 microbenchmark ---------------------------------------------------------
    t4 = dict(batch=64, n_heads=32, seq_len=4096, head_dim=128)
    for hw, dense_us, twice_us, once_us, x2, x1 in (
        ("a100-40gb-sxm", 49, 16, 38, 3.02, 1.28),
        ("a10g", 128, 31, None, 4.17, None),
    ):
        d = estimate_attention("dense", hardware=hw, **t4)
        s2 = estimate_attention("sparq", hardware=hw, r=32, k=128, **t4)
        s1 = estimate_attention("sparq", hardware=hw, r=32, k=128, store_k_twice=False, **t4)
        src = "paper Table 4"
        rows.append(_row(f"{hw} dense, per sequence", src, dense_us, d.time_s / 64 * 1e6, "us"))
        rows.append(
            _row(
                f"{hw} SparQ K twice, per sequence",
                src,
                twice_us,
                s2.time_s / 64 * 1e6,
                "us",
                f"top-k {s2.topk_s / s2.time_s:.0%} of SparQ time",
            )
        )
        rows.append(_row(f"{hw} speedup K twice", src, x2, d.time_s / s2.time_s, "x"))
        if once_us is not None:
            rows.append(
                _row(f"{hw} SparQ K once, per sequence", src, once_us, s1.time_s / 64 * 1e6, "us")
            )
            rows.append(_row(f"{hw} speedup K once", src, x1, d.time_s / s1.time_s, "x"))
    # --- the authors' blog (bytes / peak bandwidth) -------------------------------------
    for S, kv, w, tot in ((1024, 0.3, 8.6, 8.9), (131072, 43.0, None, 51.8)):
        e = estimate_decode("llama-2-7b", hardware="a100-40gb-sxm", batch=1, seq_len=S, ideal=True)
        c = estimate_decode("llama-2-7b", hardware="a100-40gb-sxm", batch=1, seq_len=S)
        src = "authors' blog (Llama 2 7B, A100, B 1)"
        rows.append(
            _row(
                f"blog KV time, S={S}",
                src,
                kv,
                e.attention.time_s * 1e3,
                "ms",
                f"ideal; calibrated model {c.attention.time_s * 1e3:.2f}",
            )
        )
        if w is not None:
            rows.append(
                _row(
                    f"blog weights time, S={S}",
                    src,
                    w,
                    e.weights_s * 1e3,
                    "ms",
                    f"ideal; calibrated model {c.weights_s * 1e3:.2f}",
                )
            )
        rows.append(
            _row(
                f"blog total step, S={S}",
                src,
                tot,
                e.time_s * 1e3,
                "ms",
                f"ideal; calibrated model {c.time_s * 1e3:.2f}",
            )
        )
    # --- end to end -----------------------------------------------------------------------
    cpu = {4096: 1.14, 8192: 1.26, 16384: 1.57, 32768: 1.73, 65536: 2.06, 131072: 2.54}
    for S, pub in cpu.items():
        kw = dict(hardware="epyc-7763", batch=1, seq_len=S, weight_bytes_per_param=Q8_0)
        d = estimate_decode("llama-2-7b", method="dense", **kw)
        s = estimate_decode("llama-2-7b", method="sparq", r=11, k=S // 12, **kw)
        rows.append(
            _row(
                f"CPU llama.cpp step speedup, S={S}",
                "spec (llama.cpp port, EPYC)",
                pub,
                d.time_s / s.time_s,
                "x",
                "epyc-7763 profile, Q8_0 weights, r=11, k=S/12",
            )
        )
    gpu = {4096: 0.99, 8192: 1.09, 16384: 1.31, 32768: 1.68, 45056: 1.88}
    for S, pub in gpu.items():
        kw = dict(hardware="h100-pcie", batch=1, seq_len=S, dtype="bfloat16")
        d = estimate_decode("llama-2-7b", method="dense", **kw)
        s = estimate_decode(
            "llama-2-7b", method="sparq", r=16, k=S // 16, gqa_selection="per_head", **kw
        )
        rows.append(
            _row(
                f"GPU gpt-fast step speedup, S={S}",
                "spec (gpt-fast port, H100 PCIe)",
                pub,
                d.time_s / s.time_s,
                "x",
                "h100-pcie profile, r=16, k=S/16",
            )
        )
    # --- App. D linear fits ----------------------------------------------------------------
    a = [
        estimate_decode("llama-2-7b", hardware="a100-40gb-sxm", batch=1, seq_len=S)
        for S in (1024, 2048)
    ]
    slope = (a[1].time_s - a[0].time_s) / 1024
    icpt = a[0].time_s - slope * 1024
    src = "paper App. D fit (llama.cpp, A100)"
    rows.append(
        _row(
            "A100 step time slope per token",
            src,
            4.686e-7,
            slope,
            "s",
            "a100-40gb-sxm, fp16 weights and KV assumed",
        )
    )
    rows.append(_row("A100 step time intercept", src, 9.481e-3, icpt, "s"))
    # --- this repo's H100 measurements ----------------------------------------------------
    m = _h100_measurements()
    if m is not None:
        for row in m["attention"]:
            if row["batch"] == 1 and row["seq_len"] not in (1024, 4096, 65536):
                continue
            e = estimate_attention(
                "dense",
                hardware="h100-sxm",
                batch=row["batch"],
                n_heads=32,
                seq_len=row["seq_len"],
                head_dim=128,
            )
            rows.append(
                _row(
                    f"H100 SDPA B={row['batch']} S={row['seq_len']}",
                    "this repo (H100 SXM)",
                    row["sdpa_default_s"] * 1e6,
                    e.time_s * 1e6,
                    "us",
                    e.bound,
                )
            )
    return rows


def markdown_table(rows: list[dict] | None = None) -> str:
    rows = comparison_rows() if rows is None else rows
    out = [
        "| quantity | source | published / measured | predicted | error | note |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(v):
        return f"{v:.4g}"

    for r in rows:
        out.append(
            f"| {r['quantity']} | {r['source']} | {fmt(r['published'])} {r['unit']} | "
            f"{fmt(r['predicted'])} {r['unit']} | {r['error']:+.1%} | {r['note']} |"
        )
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    print(markdown_table())
