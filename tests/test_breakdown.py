"""Per-op breakdown of a decode step (``costmodel.estimate.decode_ops``,
``sparq estimate --breakdown``) against hand calculations.

Llama 2 7B (public config: 32 layers, d_model 4096, FFN 11008, vocab 32000, no GQA) on the
h100-sxm profile (3.35e12 B/s, eta_mem 0.92, t0 10 us; values typed from the TOML).
"""

from __future__ import annotations

import json

import pytest

from costmodel.estimate import decode_ops, estimate_decode
from sparq_cli import main

BW = 0.92 * 3.35e12
T0 = 10e-6
LAYER_PARAMS = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096  # q,k,v,o + gated FFN + 2 norms
HEAD_PARAMS = 32000 * 4096 + 4096 + 4096  # output projection + final norm + embedding row


def _ops(method, **kw):
    e = estimate_decode("llama-2-7b", hardware="h100-sxm", batch=1, seq_len=32768,
                        method=method, **kw)  # fmt: skip
    return e, {o.op: o for o in decode_ops(e)}


def test_weights_ops_by_hand():
    e, ops = _ops("dense")
    w = ops["weights GEMVs (attention + FFN)"]
    assert w.bytes == 2 * 32 * LAYER_PARAMS
    assert w.flops == 2 * 32 * LAYER_PARAMS  # 2 FLOPs per weight, batch 1
    assert w.time_s == pytest.approx(32 * (T0 + 2 * LAYER_PARAMS / BW), rel=1e-12)
    assert w.time_s / 32 == pytest.approx(141.33e-6, rel=1e-4)
    assert w.calls == 32 and w.per_layer and w.bound == "memory"
    h = ops["output projection + final norm"]
    assert h.bytes == 2 * HEAD_PARAMS
    assert h.time_s == pytest.approx(T0 + 2 * HEAD_PARAMS / BW, rel=1e-12)
    assert h.calls == 1 and not h.per_layer


def test_dense_attention_op_by_hand():
    _, ops = _ops("dense")
    a = ops["dense attention"]
    kv = 2 * 32 * 32768 * 128 * 2  # K and V of one layer, fp16
    assert a.bytes / 32 == pytest.approx(kv, rel=1e-4)
    assert a.time_s == pytest.approx(32 * (T0 + a.bytes / 32 / BW), rel=1e-12)
    assert a.bound == "memory"


@pytest.mark.parametrize("implementation", ["fused", "eager"])
@pytest.mark.parametrize("method", ["dense", "sparq"])
def test_ops_add_up_to_the_step(method, implementation):
    kw = dict(r=16, k=2048) if method == "sparq" else {}
    e = estimate_decode("llama-2-7b", hardware="h200-sxm", batch=4, seq_len=8192,
                        method=method, implementation=implementation, **kw)  # fmt: skip
    ops = decode_ops(e)
    assert sum(o.time_s for o in ops) == pytest.approx(e.time_s, rel=1e-12)
    assert sum(o.bytes for o in ops if o.part == "weights") == e.weights_bytes
    if implementation == "fused" and method == "sparq":
        assert [o.op for o in ops if o.part == "attention"] == [
            "SparQ step 1 (approximate scores)",
            "SparQ top-k",
            "SparQ gathered attention",
        ]


def test_decode_ops_type_error():
    with pytest.raises(TypeError, match="est: expected a DecodeEstimate"):
        decode_ops("llama-2-7b")


def test_cli_breakdown_json_and_table(capsys):
    argv = ["estimate", "--batch", "1", "--seq-lens", "32768", "--breakdown"]
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (row,) = data["rows"]
    for method, total in (("dense", row["dense_step_time_s"]), ("sparq", row["sparq_step_time_s"])):
        ops = [b for b in data["breakdown"] if b["method"] == method]
        assert sum(b["time_s"] for b in ops) == pytest.approx(total, rel=1e-12)
        for b in ops:
            assert b["bound"] in ("memory", "compute", "latency", "topk")
            if b["layer_time_s"] is not None:
                assert b["layer_time_s"] == pytest.approx(b["time_s"] / 32)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dense decode step, S=32768, B=1" in out and "SparQ top-k" in out
    assert "whole model (32 layers)" in out and "141.3 us" in out
