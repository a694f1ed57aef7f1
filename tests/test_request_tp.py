"""Whole requests (prefill + decode steps), tensor parallelism and the largest batch that
fits, against hand calculations.

Numbers typed from public configs and the shipped profile TOMLs: Llama 2 7B (32 layers,
d_model 4096, 32 heads, d 128, FFN 11008, vocab 32000), Llama 3 70B (80 layers, d_model
8192, 64 heads, 8 KV heads, FFN 28672, vocab 128256); h100-sxm: 3.35e12 B/s, eta_mem 0.92,
989e12 FLOP/s fp16, eta_flop 0.7, t0 10 us, 80e9 bytes, NVLink 450e9 B/s per direction,
all-reduce latency 10 us.
"""

from __future__ import annotations

import json

import pytest

from costmodel.estimate import allreduce_time, decode_ops, estimate_decode
from costmodel.hardware import load_hardware
from costmodel.request import EXACT_STEPS, estimate_prefill, estimate_request
from costmodel.shapes import ModelShape
from sparq_cli import main

BW = 0.92 * 3.35e12
FL = 0.7 * 989e12
T0 = 10e-6
LINK = 450e9
AR_LAT = 10e-6
L7 = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096)  # Llama 2 7B layers' params
H7 = 32000 * 4096 + 4096 + 4096  # output projection + final norm + embedding row
L70 = 80 * (2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192)
H70 = 128256 * 8192 + 8192 + 8192


def test_prefill_by_hand():
    P = 4096
    pre = estimate_prefill("llama-2-7b", hardware="h100-sxm", batch=1, prompt_len=P)
    w_bytes = (L7 + H7) * 2
    w_flops = 2 * L7 * P + 2 * H7  # every position through the layers, the head for one
    assert pre.weights_bytes == w_bytes and pre.weights_flops == w_flops
    assert pre.weights_s == pytest.approx(33 * T0 + max(w_bytes / BW, w_flops / FL), rel=1e-12)
    assert pre.weights_bound == "compute"
    layer_bytes = P * (2 * 32 + 2 * 32) * 128 * 2 + P * 2 * 32 * 128 * 2  # Q,K,V,O + cache
    layer_flops = 2 * 32 * 128 * P * (P + 1)  # QK^T and PV over P(P+1)/2 causal pairs
    assert pre.attention_bytes == 32 * layer_bytes
    assert pre.attention_flops == 32 * layer_flops
    assert pre.attention_s == pytest.approx(
        32 * T0 + max(32 * layer_bytes / BW, 32 * layer_flops / FL), rel=1e-12
    )
    assert pre.allreduce_s == 0
    assert pre.time_s == pytest.approx(pre.weights_s + pre.attention_s, rel=1e-15)
    # K stored twice writes one more copy of K per position
    twice = estimate_prefill("llama-2-7b", hardware="h100-sxm", batch=1, prompt_len=P,
                             store_k_twice=True)  # fmt: skip
    assert twice.kv_write_bytes - pre.kv_write_bytes == 32 * P * 32 * 128 * 2


def test_prefill_tp_by_hand():
    P, B, tp = 2048, 2, 4
    pre = estimate_prefill("llama-3-70b", hardware="h100-sxm", batch=B, prompt_len=P, tp=tp)
    assert pre.weights_bytes == pytest.approx((L70 + H70) / tp * 2, rel=1e-15)
    msg = B * P * 8192 * 2
    one = AR_LAT + 2 * (tp - 1) / tp * msg / LINK
    assert pre.allreduce_s == pytest.approx(2 * 80 * one, rel=1e-12)
    heads = 64 // tp
    layer_flops = 2 * B * heads * 128 * P * (P + 1)
    assert pre.attention_flops == 80 * layer_flops


def test_decode_tp_by_hand():
    tp, B, S = 4, 8, 8192
    e = estimate_decode("llama-3-70b", hardware="h100-sxm", batch=B, seq_len=S, tp=tp)
    one = AR_LAT + 2 * (tp - 1) / tp * (B * 8192 * 2) / LINK
    assert e.n_allreduce == 160
    assert e.allreduce_s == pytest.approx(160 * one, rel=1e-12)
    assert e.weights_bytes == pytest.approx((L70 + H70) * 2 / tp, rel=1e-15)
    assert e.weights_s == pytest.approx(81 * T0 + (L70 + H70) * 2 / tp / BW, rel=1e-12)
    # attention of 16 query heads and 2 KV heads per device: K and V of 2 heads
    kv = 80 * B * 2 * 2 * S * 128 * 2
    small = 80 * B * (16 * 128 * 2 * 2 + 2 * 128 * 2 * 2)  # q read, output, new k and v
    assert e.attention.bytes == kv + small
    assert e.time_s == pytest.approx(e.weights_s + e.attention.time_s + e.allreduce_s, rel=1e-15)
    ops = {o.op: o for o in decode_ops(e)}
    ar = ops["all-reduce (2 per layer, 4 devices)"]
    assert ar.time_s == e.allreduce_s and ar.calls == 160
    assert sum(o.time_s for o in ops.values()) == pytest.approx(e.time_s, rel=1e-12)
    assert allreduce_time(1e6, 1, load_hardware("h100-sxm")) == 0.0


def test_tp_replicates_kv_heads_beyond_their_count():
    e = estimate_decode("llama-3-70b", hardware="h100-sxm", batch=1, seq_len=4096, tp=16)
    assert e.attention.params["n_heads"] == 4 and e.attention.params["n_kv_heads"] == 1


ODD = ModelShape(name="odd", description="24 heads, 6 KV heads", n_layers=2, d_model=1536,
                 n_heads=24, n_kv_heads=6, head_dim=64, ffn_dim=4096, vocab_size=1000,
                 gated_ffn=True, linear_bias=False, norm_bias=False,
                 tied_embeddings=False)  # fmt: skip


@pytest.mark.parametrize(
    ("model", "hw", "tp", "message"),
    [
        ("llama-3-70b", "h100-sxm", 3, "tp: expected a divisor of n_heads (64)"),
        ("llama-3-70b", "h100-sxm", 0, "tp: expected"),
        ("llama-3-70b", "l4", 2, "tp: 2 devices need the profile fields"),
        (ODD, "h100-sxm", 4, "tp: expected a divisor or a multiple of n_kv_heads (6)"),
    ],
)
def test_tp_errors(model, hw, tp, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        estimate_decode(model, hardware=hw, batch=1, seq_len=4096, tp=tp)


def test_request_sums_the_decode_steps():
    P, N = 1000, 7
    req = estimate_request("llama-2-7b", hardware="h100-sxm", batch=2, prompt_len=P, gen_len=N,
                           method="sparq", r=16, k_divisor=16)  # fmt: skip
    steps = [
        estimate_decode(
            "llama-2-7b",
            hardware="h100-sxm",
            batch=2,
            seq_len=P + i + 1,
            method="sparq",
            r=16,
            k=(P + i + 1) // 16,
        ).time_s  # fmt: skip
        for i in range(N)
    ]
    assert req.decode_s == pytest.approx(sum(steps), rel=1e-15)
    assert req.first_step.seq_len == P + 1 and req.last_step.seq_len == P + N
    assert req.time_s == pytest.approx(req.prefill.time_s + sum(steps), rel=1e-15)
    assert req.tokens_per_s == pytest.approx(2 * N / req.time_s)
    assert not req.decode_sampled


def test_long_generation_trapezoid_close_to_the_exact_sum():
    P, N = 4096, EXACT_STEPS + 500
    req = estimate_request("llama-2-7b", hardware="h100-sxm", batch=1, prompt_len=P, gen_len=N)
    exact = sum(
        estimate_decode("llama-2-7b", hardware="h100-sxm", batch=1, seq_len=P + i + 1).time_s
        for i in range(N)
    )
    assert req.decode_sampled
    assert req.decode_s == pytest.approx(exact, rel=1e-6)


def test_request_errors():
    with pytest.raises(ValueError, match="prompt_len: k = floor"):
        estimate_request("llama-2-7b", hardware="h100-sxm", batch=1, prompt_len=5, gen_len=3,
                         method="sparq", r=16)  # fmt: skip
    with pytest.raises(ValueError, match="gen_len: expected"):
        estimate_request("llama-2-7b", hardware="h100-sxm", batch=1, prompt_len=2**24,
                         gen_len=10)  # fmt: skip


def _json(capsys, argv):
    rc = main(["estimate", *argv, "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return json.loads(cap.out)


def test_cli_request_rows(capsys):
    data = _json(capsys, ["--prompt-len", "2048", "--gen-len", "16", "--batch", "1,4"])
    assert data["settings"]["prompt_len"] == 2048 and data["settings"]["gen_len"] == 16
    for row in data["rows"]:
        lib = estimate_request("llama-2-7b", hardware="h100-sxm", batch=row["batch"],
                               prompt_len=2048, gen_len=16)  # fmt: skip
        assert row["dense_request_s"] == pytest.approx(lib.time_s, rel=1e-15)
        assert row["request_speedup"] == pytest.approx(
            row["dense_request_s"] / row["sparq_request_s"]
        )
    assert main(["estimate", "--prompt-len", "2048", "--gen-len", "16"]) == 0
    out = capsys.readouterr().out
    assert "request = prefill of 2048 tokens + 16 decode steps" in out


def test_cli_max_batch_by_hand(capsys):
    (row,) = _json(capsys, ["--batch", "1", "--seq-lens", "4096"])["rows"]
    free = 80e9 - (L7 + H7) * 2
    dense_kv = 32 * 2 * 32 * 4096 * 128 * 2  # K and V, all layers, one sequence
    assert row["max_batch_dense"] == int(free // dense_kv) == 31
    assert row["max_batch_sparq"] == int(free // (1.5 * dense_kv)) == 20  # K stored twice


def test_cli_tp_header_and_rows(capsys):
    data = _json(capsys, ["--model", "llama-3-70b", "--tp", "4", "--batch", "8",
                          "--seq-lens", "8192"])  # fmt: skip
    (row,) = data["rows"]
    assert row["tp"] == 4 and data["settings"]["tp"] == 4
    assert data["settings"]["profile"]["link_bandwidth_bytes_per_s"] == LINK
    one = AR_LAT + 2 * 3 / 4 * (8 * 8192 * 2) / LINK
    assert row["dense_allreduce_s"] == pytest.approx(160 * one, rel=1e-12)
    assert main(["estimate", "--model", "llama-3-70b", "--tp", "4", "--batch", "8",
                 "--seq-lens", "8192"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "tensor parallel over 4 devices" in out and "+ all-reduces" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prompt-len", "100"], "--prompt-len and --gen-len: expected both"),
        (["--prompt-len", "100", "--gen-len", "4", "--seq-lens", "4096"], "--seq-lens: not with"),
        (["--model", "llama-3-70b", "--tp", "3"], "tp: expected a divisor of n_heads (64)"),
        (["--tp", "2", "--hardware", "l4"], "tp: 2 devices need the profile fields"),
    ],
)
def test_cli_request_errors(capsys, argv, message):
    assert main(["estimate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparq estimate: error: ") and message in err, err


def test_cli_link_overrides_by_hand(capsys):
    # an L4 profile has no link fields; the flags give them (PCIe-class 32 GB/s, 20 us)
    argv = ["--hardware", "l4", "--tp", "2", "--link-bandwidth", "32e9",
            "--allreduce-latency", "20e-6", "--batch", "4", "--seq-lens", "8192"]  # fmt: skip
    data = _json(capsys, argv)
    (row,) = data["rows"]
    one = 20e-6 + 2 * (1 / 2) * (4 * 4096 * 2) / 32e9
    assert row["dense_allreduce_s"] == pytest.approx(64 * one, rel=1e-12)
    assert data["settings"]["profile"]["link_bandwidth_bytes_per_s"] == 32e9
    assert data["settings"]["profile"]["allreduce_latency_s"] == 20e-6
    assert main(["estimate", "--link-bandwidth", "32e9"]) == 2
    assert "--link-bandwidth: apply with --tp above 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["estimate", "--tp", "2", "--link-bandwidth", "-1"])
    assert "argument --link-bandwidth: expected a positive number" in capsys.readouterr().err


def test_cli_request_breakdown(capsys):
    argv = ["--model", "llama-3-70b", "--tp", "4", "--prompt-len", "2048", "--gen-len", "8",
            "--batch", "2", "--breakdown"]  # fmt: skip
    data = _json(capsys, argv)
    (row,) = data["rows"]
    for method in ("dense", "sparq"):
        pre = [b for b in data["breakdown"] if b["method"] == method and b["phase"] == "prefill"]
        assert sum(b["time_s"] for b in pre) == pytest.approx(row[f"{method}_prefill_s"])
        step = [b for b in data["breakdown"] if b["method"] == method and b["phase"] != "prefill"]
        assert {b["seq_len"] for b in step} == {2048 + 8}
        assert sum(b["time_s"] for b in step) == pytest.approx(row[f"{method}_last_step_s"])
        (ar,) = [b for b in pre if b["part"] == "communication"]
        msg = 2 * 2048 * 8192 * 2  # B x P x d_model x 2 bytes
        assert ar["bytes"] == pytest.approx(160 * 2 * 3 / 4 * msg)
        assert ar["time_s"] == pytest.approx(160 * (AR_LAT + 2 * 3 / 4 * msg / LINK))
    assert main(["estimate", *argv]) == 0
    out = capsys.readouterr().out
    assert "SparQ prefill of P=2048, B=2" in out and "SparQ decode step, S=2056, B=2" in out
