"""Tests of the host (CPU) side of the cost model: the measured-host profile fields and the
host model of the package's reference kernels (costmodel.host).

Every expected time is a hand calculation on a synthetic profile with round numbers, written
out in the test. No timing assertions: measure_host is only checked for positive, finite,
loadable numbers.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from costmodel.estimate import estimate_attention, speedup
from costmodel.hardware import (
    hardware_from_spec,
    hardware_to_toml,
    list_hardware,
    load_hardware,
    measure_host,
    parse_hardware,
)
from costmodel.host import (
    HOST_FIELDS,
    gather_overlap,
    in_core_time,
    predict_reference,
    thread_gain,
    threads_bandwidth,
    widen_overlap,
)
from reference.sparq import KT_SPOT_CHECKS, KT_SPOT_RUN

# Synthetic host: 4 threads; all-thread rates bandwidth 1e10 B/s, gather 2e9 B/s,
# float64 FMA 1e9 /s, exp 1e8 /s, top-k 1e9 B/s, division 4e8 /s, widening 2e9 (float32),
# 1e9 (float16), 8e8 (bfloat16) elements/s; 64-byte lines, eta_mem 1; read/FMA overlap 0
# (the times of a phase's read and in-core work add up; other values tested below); fixed
# cost of a call 1e-5 s (dense) and 2e-5 s (SparQ).
# Per thread (rate / 4): bandwidth 2.5e9, gather 5e8, FMA 2.5e8, exp 2.5e7, top-k 2.5e8,
# division 1e8, widening 5e8 / 2.5e8 / 2e8.
HOST = hardware_from_spec(
    bandwidth_bytes_per_s=1e10,
    peak_flops_fp16=1e11,
    mem_efficiency=1.0,
    mem_transaction_bytes=64,
    topk_bytes_per_s=1e9,
    name="synthetic-host",
).replace(
    kind="cpu",
    threads=4,
    fma_f64_per_s=1e9,
    exp_per_s=1e8,
    gather_bytes_per_s=2e9,
    div_f64_per_s=4e8,
    widen_f32_per_s=2e9,
    widen_f16_per_s=1e9,
    widen_bf16_per_s=8e8,
    stream_fma_overlap=0.0,
    dense_call_s=1e-5,
    sparq_call_s=2e-5,
)


def _phases(e):
    return {s.kernel: s for s in e.kernels}


def _check_optional_rate(field):
    # an optional profile rate: absent from the synthetic host and from the required host
    # fields, and validated as the other rates (positive, at least a plausible 1e6)
    assert getattr(HOST, field) is None and field not in HOST_FIELDS
    with pytest.raises(ValueError, match=rf"{field}: expected > 0"):
        HOST.replace(**{field: -1.0})
    with pytest.raises(ValueError, match=rf"{field}: expected >= 1e\+06"):
        HOST.replace(**{field: 10.0})


# ------------------------------------------------------------------------------ dense
def test_dense_by_hand_compute_bound():
    # B 2, H 8, Hkv 2 (g 4), S 1000, d 64, float32 (e 4): rows = 4 = threads -> 1 wave.
    # per row: K pass reads 1000*64*4 = 256000 B and writes the g*S = 4000 float64 logits,
    #   32000 B: 288000 B -> 288000/2.5e9 = 1.152e-4 s;
    #   FMAs g*S*d = 256000 -> 256000/2.5e8 = 1.024e-3 s, and S*d = 64000 float32 elements
    #   widened -> 64000/5e8 = 1.28e-4 s: in-core work 1.152e-3 s, the larger (the bound);
    #   with overlap 0 the phase costs read + work = 1.2672e-3 s.
    # softmax: the logits read back, 32000 B -> 1.28e-5 s, and g*S = 4000 exps ->
    #   4000/2.5e7 = 1.6e-4 s: 1.728e-4 s. V pass (V and the weights) = K pass. Call: 1e-5 s.
    e = predict_reference(
        "dense", hardware=HOST, batch=2, n_heads=8, n_kv_heads=2, seq_len=1000, head_dim=64,
        dtype="float32",
    )  # fmt: skip
    ph = _phases(e)
    assert list(ph) == ["k_pass", "softmax", "v_pass", "call"]
    assert ph["k_pass"].time_s == pytest.approx(1.2672e-3, rel=1e-12)
    assert ph["k_pass"].memory_s == pytest.approx(1.152e-4, rel=1e-12)
    assert ph["k_pass"].compute_s == pytest.approx(1.152e-3, rel=1e-12)
    assert ph["k_pass"].bound == "compute"
    assert ph["softmax"].time_s == pytest.approx(1.728e-4, rel=1e-12)
    assert ph["softmax"].memory_s == pytest.approx(1.28e-5, rel=1e-12)
    assert ph["v_pass"].time_s == pytest.approx(1.2672e-3, rel=1e-12)
    assert ph["call"].time_s == ph["call"].latency_s == 1e-5
    assert e.time_s == pytest.approx(2 * 1.2672e-3 + 1.728e-4 + 1e-5, rel=1e-12)
    assert e.bound == "compute" and e.latency_s == 1e-5
    # the call's totals by hand: memory = the two passes' traffic 2 * 1.152e-4 and the
    # softmax's 1.28e-5; compute = the passes' in-core work 2 * 1.152e-3 plus the softmax's
    # exps 1.6e-4; no top-k
    assert e.memory_s == pytest.approx(2 * 1.152e-4 + 1.28e-5, rel=1e-12)
    assert e.compute_s == pytest.approx(2 * 1.152e-3 + 1.6e-4, rel=1e-12)
    assert e.topk_s == 0
    # totals over the 4 rows: bytes 4 * (2 * 288000 + 32000); FLOPs 2 x FMAs = 2 * 2 * 4 *
    # 256000
    assert e.bytes == 4 * (2 * 288000 + 32000)
    assert e.flops == 2 * 2 * 4 * 256000
    assert e.params["rows"] == 4 and e.params["waves"] == 1 and e.params["threads"] == 4


def test_dense_by_hand_memory_bound():
    # same shapes, g 1 (H = Hkv = 2), float64 (e 8), FMA rate 1e10 (2.5e9 per thread):
    # K pass bytes 1000*64*8 = 512000 + 1000 logits * 8 = 520000 -> 2.08e-4 s; FMAs 64000
    # -> 2.56e-5 s: memory is the bound; the phase costs 2.336e-4 s (float64 needs no
    # widening). softmax: 8000 B -> 3.2e-6 s, 1000 exps -> 4e-5 s: 4.32e-5 s. rows = 2*2 =
    # 4 -> 1 wave. Call 1e-5 s.
    hw = HOST.replace(fma_f64_per_s=1e10)
    e = predict_reference(
        "dense", hardware=hw, batch=2, n_heads=2, seq_len=1000, head_dim=64, dtype="float64"
    )
    ph = _phases(e)
    assert ph["k_pass"].bound == "memory"
    assert ph["k_pass"].memory_s == pytest.approx(2.08e-4, rel=1e-12)
    assert ph["k_pass"].compute_s == pytest.approx(2.56e-5, rel=1e-12)
    assert e.time_s == pytest.approx(2 * 2.336e-4 + 4.32e-5 + 1e-5, rel=1e-12)
    assert e.bound == "memory"


def test_mem_efficiency_scales_streaming_bandwidth():
    # eta_mem 0.5 halves the streaming bandwidth (1.25e9 per thread): K pass of the
    # memory-bound case above 520000 / 1.25e9 = 4.16e-4 s, plus its FMAs 2.56e-5 s
    hw = HOST.replace(fma_f64_per_s=1e10, mem_efficiency=0.5)
    e = predict_reference(
        "dense", hardware=hw, batch=2, n_heads=2, seq_len=1000, head_dim=64, dtype="float64"
    )
    assert _phases(e)["k_pass"].memory_s == pytest.approx(4.16e-4, rel=1e-12)
    assert _phases(e)["k_pass"].time_s == pytest.approx(4.16e-4 + 2.56e-5, rel=1e-12)


# ---------------------------------------------------------------------------- waves
def test_waves_fewer_rows_than_threads():
    # one row's time t1: dense g 1, S 1000, d 64, float64, FMA 1e10 (memory-bound case):
    # 2 * 2.336e-4 + 4.32e-5 = 5.104e-4 s. 4 threads:
    #   rows 1, 2, 3, 4 -> 1 wave (idle threads; time = t1, not rows/4 * t1)
    #   rows 5..8 -> 2 waves; rows 9 -> 3 waves
    # plus the call's fixed cost, 1e-5 s once whatever the waves
    hw = HOST.replace(fma_f64_per_s=1e10)
    t1 = 2 * 2.336e-4 + 4.32e-5

    def t(batch, n_heads, **kw):
        return predict_reference(
            "dense", hardware=hw, batch=batch, n_heads=n_heads, seq_len=1000, head_dim=64,
            dtype="float64", **kw,
        )  # fmt: skip

    for batch, heads, waves in [(1, 1, 1), (1, 2, 1), (3, 1, 1), (2, 2, 1), (5, 1, 2),
                                (2, 4, 2), (9, 1, 3)]:  # fmt: skip
        e = t(batch, heads)
        assert e.params["waves"] == waves
        assert e.time_s == pytest.approx(waves * t1 + 1e-5, rel=1e-12), (batch, heads)
    # a thread count override changes the waves, not the per-thread rates (profile rate / 4)
    e = t(2, 4, threads=8)
    assert e.params["waves"] == 1 and e.time_s == pytest.approx(t1 + 1e-5, rel=1e-12)
    e = t(2, 4, threads=1)
    assert e.params["waves"] == 8 and e.time_s == pytest.approx(8 * t1 + 1e-5, rel=1e-12)
    # rows are (batch, KV head): 8 query heads sharing 2 KV heads are 2 rows, 1 wave
    e = t(1, 8, n_kv_heads=2)
    assert e.params["rows"] == 2 and e.params["waves"] == 1


def test_n_layers_are_calls_one_after_another():
    kw = dict(hardware=HOST, batch=1, n_heads=4, seq_len=512, head_dim=32, r=4, k=32)
    one = predict_reference("sparq", **kw)
    three = predict_reference("sparq", n_layers=3, **kw)
    assert three.time_s == pytest.approx(3 * one.time_s, rel=1e-12)
    assert three.bytes == 3 * one.bytes


# ---------------------------------------------------------------------------- SparQ
SPARQ = dict(batch=1, n_heads=4, n_kv_heads=1, seq_len=1024, head_dim=64, dtype="float16",
             r=8, k=64)  # fmt: skip


def test_sparq_by_hand_k_once():
    # g 4, S 1024, d 64, fp16 (e 2), r 8, k 64, K stored once, v_mean computed. rows 1.
    # Per-thread rates: bandwidth 2.5e9, gather 5e8, FMA 2.5e8, exp 2.5e7, top-k 2.5e8,
    # division 1e8, float16 widening 2.5e8; overlap 0 (read and in-core work add up).
    # step 1: every K row is prefetched whole: S*d*e = 131072 B streamed, and the g*S
    #   float64 approximate logits written, g*S*8 = 32768 B: 163840 B -> 6.5536e-5 s;
    #   FMAs g*r*S = 32768 -> 1.31072e-4; widened r*S = 8192 -> 3.2768e-5 (in-core work
    #   1.6384e-4); the kept query components divided by tau, g*r = 32 divisions ->
    #   3.2e-7 (their own loop); the softmax normalisers, g*S = 4096 exps / 2.5e7 =
    #   1.6384e-4
    step1 = 6.5536e-5 + 1.6384e-4 + 3.2e-7 + 1.6384e-4
    # group score: g*S adds (priced as FMAs) 4096 / 2.5e8 = 1.6384e-5; no read (summed in
    #   step 1's blocks, in cache)
    # top-k: 8*S = 8192 B / 2.5e8 = 3.2768e-5
    # alpha: g*k = 256 exps / 2.5e7 = 1.024e-5
    # gather K: k*d*e = 8192 B / 5e8 = 1.6384e-5 s; FMAs g*k*d = 16384 / 2.5e8 = 6.5536e-5;
    #   widened k*d = 4096 / 2.5e8 = 1.6384e-5 (overlap 0 here: they add);
    #   gather V the same; gather softmax g*k = 256 / 2.5e7 = 1.024e-5
    # v_mean: S*d*e = 131072 B / 2.5e9 = 5.24288e-5; widened S*d = 65536 / 2.5e8 =
    #   2.62144e-4 and added, S*d = 65536 adds priced as FMAs / 2.5e8 = 2.62144e-4
    # call: 2e-5 s
    expect = {
        "step1": step1,
        "group_score": 1.6384e-5,
        "topk": 3.2768e-5,
        "alpha": 1.024e-5,
        "gather_k": 1.6384e-5 + 6.5536e-5 + 1.6384e-5,
        "gather_softmax": 1.024e-5,
        "gather_v": 1.6384e-5 + 6.5536e-5 + 1.6384e-5,
        "v_mean": 5.24288e-5 + 2.62144e-4 + 2.62144e-4,
        "call": 2e-5,
    }
    e = predict_reference("sparq", hardware=HOST, **SPARQ)
    ph = _phases(e)
    assert list(ph) == list(expect)
    for name, t in expect.items():
        assert ph[name].time_s == pytest.approx(t, rel=1e-12), name
    assert ph["step1"].bound == "compute" and ph["gather_k"].bound == "compute"
    assert ph["step1"].compute_s == pytest.approx(1.6384e-4 + 3.2e-7 + 1.6384e-4, rel=1e-12)
    assert ph["topk"].bound == "topk" and ph["topk"].topk_s == pytest.approx(3.2768e-5)
    assert ph["call"].bound == "latency" and e.latency_s == 2e-5
    assert e.time_s == pytest.approx(sum(expect.values()), rel=1e-12)
    assert e.topk_s == pytest.approx(3.2768e-5)
    by = e.breakdown()
    assert by["step1"] == 163840 and by["group_score"] == 0 and by["alpha"] == 0
    assert by["topk"] == 8192 and by["gather_k"] == 8192 and by["v_mean"] == 131072
    pa = {s.name: s.priced_as for s in e.traffic.steps}
    assert pa["step1"] == "memory" and pa["group_score"] == "memory" and pa["topk"] == "topk"
    assert pa["v_mean"] == "memory" and pa["gather_k"] == "gather" and pa["call"] == "latency"
    counts = e.params["phases"]
    assert counts["step1"] == dict(
        bytes=163840, fma=32768, widen=8192, exps=4096, divisions=32, copies=0.0
    )
    assert counts["v_mean"]["widen"] == 65536 and counts["v_mean"]["fma"] == 65536


def test_sparq_by_hand_k_twice_and_v_mean_supplied():
    # K twice: step 1 streams r*S*e = 8*1024*2 = 16384 B and writes g*S*8 = 32768 B of
    # logits: 49152 B (1.96608e-5 s at 2.5e9); in-core work: g*r*S = 32768 FMAs
    # (1.31072e-4 s) + r*S = 8192 widened (3.2768e-5 s) = 1.6384e-4 s; divisions g*r = 32
    # (3.2e-7 s); the softmax normalisers' g*S = 4096 exps (1.6384e-4 s): 3.476608e-4 s.
    # v_mean supplied: no V
    # read. The k_cache_t spot check gathers 4 runs of 16 consecutive positions, each d = 64
    # segments of the d-major copy (16 * e = 32 B, a whole 64-byte line each) and 16
    # consecutive K rows (16 * d * e = 2048 B): 4 * (64 * 64 + 2048) = 24576 B at 5e8 per
    # thread = 4.9152e-5 s.
    e = predict_reference("sparq", hardware=HOST, store_k_twice=True, v_mean_supplied=True, **SPARQ)
    ph = _phases(e)
    assert "v_mean" not in ph
    assert list(ph)[:2] == ["kt_check", "step1"]
    assert ph["kt_check"].time_s == pytest.approx(4.9152e-5, rel=1e-12)
    assert ph["step1"].time_s == pytest.approx(3.476608e-4, rel=1e-12)
    assert ph["step1"].bound == "compute"
    assert e.breakdown()["step1"] == 49152
    # then as test_sparq_by_hand_k_once: group score 1.6384e-5 (adds), top-k 3.2768e-5,
    # alpha 1.024e-5, the two gathers, the gather softmax 1.024e-5 and the call 2e-5
    gather = 1.6384e-5 + 6.5536e-5 + 1.6384e-5
    expect = (
        4.9152e-5 + 3.476608e-4 + 1.6384e-5 + 3.2768e-5 + 1.024e-5
        + 2 * gather + 1.024e-5 + 2e-5
    )  # fmt: skip
    assert e.time_s == pytest.approx(expect, rel=1e-12)
    # K twice costs +50% cache: 3*S*d*e
    assert e.traffic.kv_cache_bytes == 3 * 1024 * 64 * 2


def test_sparq_step1_fmas_at_the_sweep_rate():
    # As test_sparq_by_hand_k_twice_and_v_mean_supplied, with a measured sweep rate of 4e8
    # FMAs/s (all threads; 1e8 per thread): step 1's g*r*S = 32768 FMAs take 3.2768e-4 s, in
    # place of the FMAs at 2.5e8 per thread and the widening (1.6384e-4 s); its read (49152 B
    # at 2.5e9 per thread, 1.96608e-5 s; read/FMA overlap 0), the divisions (3.2e-7 s) and
    # the normalisers' exps (1.6384e-4 s) add: 3.2768e-4 + 1.96608e-5 + 3.2e-7 + 1.6384e-4
    # = 5.115008e-4 s. The group score's g*S adds (1.6384e-5 s without it) are in the
    # measured sweep pass (g = 4, a multiple of 4): 0. No other phase changes, K once or
    # twice.
    hw = HOST.replace(sweep_fma_per_s=4e8)
    for twice in (True, False):
        base = _phases(predict_reference("sparq", hardware=HOST, store_k_twice=twice, **SPARQ))
        ph = _phases(predict_reference("sparq", hardware=hw, store_k_twice=twice, **SPARQ))
        assert base["group_score"].time_s == pytest.approx(1.6384e-5, rel=1e-12)
        assert ph["group_score"].time_s == 0.0
        for name in ph:
            if name not in ("step1", "group_score"):
                assert ph[name].time_s == pytest.approx(base[name].time_s, rel=1e-12), name
        want = 3.2768e-4 + 3.2e-7 + 1.6384e-4
        assert ph["step1"].compute_s == pytest.approx(want, rel=1e-12)
    ph = _phases(predict_reference("sparq", hardware=hw, store_k_twice=True, **SPARQ))
    assert ph["step1"].time_s == pytest.approx(5.115008e-4, rel=1e-12)
    e = predict_reference("sparq", hardware=hw, **SPARQ)
    assert e.params["per_thread"]["sweep_fma_per_s"] == pytest.approx(1e8)
    # dense has no sweeps: unchanged
    kw = {k: v for k, v in SPARQ.items() if k not in ("r", "k")}
    d0 = predict_reference("dense", hardware=HOST, **kw)
    assert predict_reference("dense", hardware=hw, **kw).time_s == d0.time_s
    # g = 3 (not a multiple of 4): the group score stays priced as adds
    kw3 = dict(SPARQ, n_heads=3)
    ph3 = _phases(predict_reference("sparq", hardware=hw, **kw3))
    assert ph3["group_score"].time_s == pytest.approx(3 * 1024 / 2.5e8, rel=1e-12)


def test_sparq_step7_fmas_no_faster_than_the_attend_rate():
    # As test_sparq_by_hand_k_twice_and_v_mean_supplied, whose gathers cost each (per KV
    # head, 4 threads): the read k*d*e = 8192 B at 5e8 per thread, 1.6384e-5 s, and in-core
    # g*k*d = 16384 FMAs at 2.5e8 per thread (6.5536e-5 s) plus k*d = 4096 float16 elements
    # widened at 2.5e8 (1.6384e-5 s), 8.192e-5 s (read/FMA overlap 0). With a measured rate
    # of step 7's passes on rows in cache of 1e8 FMAs/s (all threads; 2.5e7 per thread) the
    # FMAs take 16384 / 2.5e7 = 6.5536e-4 s, longer: each gather costs 1.6384e-5 + 6.5536e-4
    # = 6.71744e-4 s. At 1e10 (6.5536e-6 s) the FMA and widen rates' 8.192e-5 s stay: the
    # passes are no faster than either. No other phase of SparQ moves. (The
    # rate applies where it was measured: g a multiple of 4, a widened cache dtype.)
    slow = HOST.replace(attend_fma_per_s=1e8)
    fast = HOST.replace(attend_fma_per_s=1e10)
    for twice in (True, False):
        base = _phases(predict_reference("sparq", hardware=HOST, store_k_twice=twice, **SPARQ))
        ph = _phases(predict_reference("sparq", hardware=slow, store_k_twice=twice, **SPARQ))
        phf = _phases(predict_reference("sparq", hardware=fast, store_k_twice=twice, **SPARQ))
        for name in ("gather_k", "gather_v"):
            assert base[name].time_s == pytest.approx(1.6384e-5 + 8.192e-5, rel=1e-12)
            assert ph[name].time_s == pytest.approx(6.71744e-4, rel=1e-12)
            assert ph[name].compute_s == pytest.approx(6.5536e-4, rel=1e-12)
            assert phf[name].time_s == base[name].time_s
        for name in ph:
            if name not in ("gather_k", "gather_v"):
                assert ph[name].time_s == base[name].time_s, name
    e = predict_reference("sparq", hardware=slow, **SPARQ)
    assert e.params["per_thread"]["attend_fma_per_s"] == pytest.approx(2.5e7)
    assert (
        predict_reference("sparq", hardware=HOST, **SPARQ).params["per_thread"]["attend_fma_per_s"]
        is None
    )
    # dense's passes are priced at their own rate (dense_fma_per_s), not at this one
    kw = {k: v for k, v in SPARQ.items() if k not in ("r", "k")}
    for dt in ("float16", "float32"):
        h0 = predict_reference("dense", hardware=HOST, **dict(kw, dtype=dt))
        assert predict_reference("dense", hardware=slow, **dict(kw, dtype=dt)).time_s == h0.time_s
    # per row and layer: two layers, twice the phase
    two = _phases(predict_reference("sparq", hardware=slow, **dict(SPARQ, n_layers=2)))
    assert two["gather_k"].time_s == pytest.approx(2 * 6.71744e-4, rel=1e-12)
    # measured with four heads a block over widened rows: g = 3 (other code) and float64
    # caches (nothing widened) are priced as before
    for kw2 in (dict(SPARQ, n_heads=3), dict(SPARQ, dtype="float64")):
        b = _phases(predict_reference("sparq", hardware=HOST, **kw2))
        s = _phases(predict_reference("sparq", hardware=slow, **kw2))
        assert s["gather_k"].time_s == b["gather_k"].time_s, kw2
        assert s["gather_v"].time_s == b["gather_v"].time_s, kw2
    # the field is optional and validated as the other rates
    _check_optional_rate("attend_fma_per_s")


def test_sparq_step7_heads_left_over_at_the_one_head_rate():
    # SPARQ's shapes (k 64, d 64, 4 threads) with float32 caches (e 4) and g = 1 or 6 heads
    # per KV head. Per thread: gather 5e8 B/s, FMA 2.5e8/s, float32 widening 5e8/s; no
    # overlap (read and in-core work add up). Each gather reads k*d*e = 16384 B, 3.2768e-5 s,
    # and widens k*d = 4096 elements, 8.192e-6 s.
    # g = 1: g*k*d = 4096 FMAs, 1.6384e-5 s: in-core 2.4576e-5 s; the phase 5.7344e-5 s.
    #   The one-head rate 1e8 (2.5e7 per thread): 4096 / 2.5e7 = 1.6384e-4 s, longer: the
    #   gather costs 3.2768e-5 + 1.6384e-4 = 1.96608e-4 s. The four-head rate alone prices
    #   no head there (no block of four).
    # g = 6: 24576 FMAs (9.8304e-5 s) + widening: 1.06496e-4 s, the phase 1.39264e-4 s. The
    #   block of four heads at 1e8 (2.5e7 per thread): 16384 / 2.5e7 = 6.5536e-4 s; the two
    #   left over at 5e7 (1.25e7 per thread): 8192 / 1.25e7 = 6.5536e-4 s; both rates:
    #   1.31072e-3 s, the gather 3.2768e-5 + 1.31072e-3 = 1.343488e-3 s; either alone:
    #   6.5536e-4 s, the gather 6.88128e-4 s.
    # float16 caches: the heads left over take other code (four rows at once in the V
    #   pass), so the one-head rate prices nothing there; the block's rate still applies.
    one = HOST.replace(attend1_fma_per_s=1e8)
    four = HOST.replace(attend_fma_per_s=1e8)
    both = HOST.replace(attend_fma_per_s=1e8, attend1_fma_per_s=5e7)
    g1 = dict(SPARQ, n_heads=1, dtype="float32")
    g6 = dict(SPARQ, n_heads=6, dtype="float32")

    def gather_times(hw, kw):
        ph = _phases(predict_reference("sparq", hardware=hw, **kw))
        return ph["gather_k"].time_s, ph["gather_v"].time_s

    for hw, kw, t in ((HOST, g1, 5.7344e-5), (one, g1, 1.96608e-4), (four, g1, 5.7344e-5),
                      (HOST, g6, 1.39264e-4), (both, g6, 1.343488e-3), (four, g6, 6.88128e-4),
                      (HOST.replace(attend1_fma_per_s=5e7), g6, 6.88128e-4)):  # fmt: skip
        for got in gather_times(hw, kw):
            assert got == pytest.approx(t, rel=1e-12), (hw.attend_fma_per_s, kw["n_heads"])
    e = predict_reference("sparq", hardware=one, **g1)
    assert e.params["per_thread"]["attend1_fma_per_s"] == pytest.approx(2.5e7)
    assert e.params["per_thread"]["attend_fma_per_s"] is None
    # float16: g = 1 as without the rate; g = 6 only the block priced (as in
    # test_sparq_step7_fmas_no_faster_than_the_attend_rate's slow case: 6.71744e-4 s)
    for kw in (dict(g1, dtype="float16"), dict(g1, dtype="float64")):
        assert gather_times(one, kw) == gather_times(HOST, kw), kw["dtype"]
    for got in gather_times(both, dict(g6, dtype="float16")):
        assert got == pytest.approx(6.71744e-4, rel=1e-12)
    # g = 4 has no head left over: the one-head rate prices nothing
    assert gather_times(one, dict(SPARQ, dtype="float32")) == gather_times(
        HOST, dict(SPARQ, dtype="float32")
    )
    # optional and validated as the other rates
    _check_optional_rate("attend1_fma_per_s")


def test_sparq_step1_k_once_copies_at_the_column_copy_rate():
    # As test_sparq_by_hand_k_once, with a measured column-copy rate of 4e8 elements/s (all
    # threads; 1e8 per thread): step 1 with K stored once also copies r*S = 8 * 1024 = 8192
    # elements out of the rows and widens them, 8192 / 1e8 = 8.192e-5 s. The copy is the
    # loop that reads the rows, so the read part of step 1 takes the longer of the stream
    # (6.5536e-5 s there) and the copy: 8.192e-5 s, 1.6384e-5 s more; the in-core part is
    # unchanged. At 4e9 (8.192e-6 s, shorter than the stream) nothing changes. K twice reads
    # the d-major copy in place: no copy, nothing changes. No other phase changes.
    hw = HOST.replace(column_copy_per_s=4e8)
    base = _phases(predict_reference("sparq", hardware=HOST, **SPARQ))
    e = predict_reference("sparq", hardware=hw, **SPARQ)
    ph = _phases(e)
    assert base["step1"].memory_s == pytest.approx(6.5536e-5, rel=1e-12)
    assert ph["step1"].memory_s == pytest.approx(8.192e-5, rel=1e-12)
    assert ph["step1"].time_s - base["step1"].time_s == pytest.approx(1.6384e-5, rel=1e-9)
    assert ph["step1"].compute_s == base["step1"].compute_s
    fast = predict_reference("sparq", hardware=HOST.replace(column_copy_per_s=4e9), **SPARQ)
    assert _phases(fast)["step1"].time_s == base["step1"].time_s
    for name in ph:
        if name != "step1":
            assert ph[name].time_s == base[name].time_s, name
    assert e.params["phases"]["step1"]["copies"] == 8192
    assert e.params["per_thread"]["column_copy_per_s"] == pytest.approx(1e8, rel=1e-12)
    b2 = predict_reference("sparq", hardware=HOST, store_k_twice=True, **SPARQ)
    e2 = predict_reference("sparq", hardware=hw, store_k_twice=True, **SPARQ)
    assert e2.time_s == b2.time_s
    assert e2.params["phases"]["step1"]["copies"] == 0
    # dense copies nothing
    kw = {k: v for k, v in SPARQ.items() if k not in ("r", "k")}
    assert (
        predict_reference("dense", hardware=hw, **kw).time_s
        == predict_reference("dense", hardware=HOST, **kw).time_s
    )
    # the field is optional, validated as the other rates, and survives the TOML round trip
    _check_optional_rate("column_copy_per_s")
    text = hardware_to_toml(hw)
    assert "column_copy_per_s = 400000000.0" in text and "[sources.column_copy_per_s]" in text
    assert parse_hardware(text, "x") == hw


def _check_passes_in_core(base, slow, want):
    """Dense's K and V passes: ``want`` seconds of in-core work in the phases ``slow``,
    more than five times those of ``base``, and the same read."""
    for name in ("k_pass", "v_pass"):
        assert base[name].compute_s < want / 5, name
        assert slow[name].compute_s == pytest.approx(want, rel=1e-12), name
        assert slow[name].memory_s == base[name].memory_s, name


def test_dense_passes_no_faster_than_the_dense_pass_rate():
    # g 4, S 1024, d 64, float32, one KV head, 4 threads. With a measured rate of dense's
    # passes on rows in cache of 1e8 FMAs/s (all threads; 2.5e7 per thread) the K and V
    # passes' g*S*d = 4 * 1024 * 64 = 262144 FMAs each take 262144 / 2.5e7 = 1.048576e-2 s
    # of in-core work, longer than at the FMA and widen rates; the read is unchanged. At
    # 1e10 the FMA and widen rates stay (no faster than either). float16 rows (their own
    # rate, dense_f16_fma_per_s) and g = 3 (the heads left over take other code) are
    # priced as before, and SparQ does not use the rate.
    kw = {k: v for k, v in SPARQ.items() if k not in ("r", "k")}
    kw32 = dict(kw, dtype="float32")
    slow = HOST.replace(dense_fma_per_s=1e8)
    fast = HOST.replace(dense_fma_per_s=1e10)
    d0 = _phases(predict_reference("dense", hardware=HOST, **kw32))
    ds = _phases(predict_reference("dense", hardware=slow, **kw32))
    df = _phases(predict_reference("dense", hardware=fast, **kw32))
    _check_passes_in_core(d0, ds, 1.048576e-2)
    for name in ("k_pass", "v_pass"):
        assert df[name].time_s == d0[name].time_s
    assert ds["softmax"].time_s == d0["softmax"].time_s
    e = predict_reference("dense", hardware=slow, **kw32)
    assert e.params["per_thread"]["dense_fma_per_s"] == pytest.approx(2.5e7)
    for other in (dict(kw, dtype="float16"), dict(kw32, n_heads=3)):
        assert (
            predict_reference("dense", hardware=slow, **other).time_s
            == predict_reference("dense", hardware=HOST, **other).time_s
        ), other
    assert (
        predict_reference("sparq", hardware=slow, **SPARQ).time_s
        == predict_reference("sparq", hardware=HOST, **SPARQ).time_s
    )
    # optional, validated as the other rates, and kept through the TOML round trip
    _check_optional_rate("dense_fma_per_s")
    assert parse_hardware(hardware_to_toml(slow), "x") == slow


def test_dense_float16_passes_no_faster_than_their_own_rate():
    # The same case in float16 (e = 2): a measured rate of dense's float16 passes of 1e8
    # FMAs/s (2.5e7 per thread) makes each pass's 262144 FMAs take 1.048576e-2 s of in-core
    # work; the float32 rate does not touch float16 rows, the float16 rate neither float32
    # nor bfloat16 rows, and g = 3 keeps its price.
    kw = {k: v for k, v in SPARQ.items() if k not in ("r", "k")}
    kw16 = dict(kw, dtype="float16")
    slow = HOST.replace(dense_f16_fma_per_s=1e8)
    d0 = _phases(predict_reference("dense", hardware=HOST, **kw16))
    ds = _phases(predict_reference("dense", hardware=slow, **kw16))
    _check_passes_in_core(d0, ds, 1.048576e-2)
    e = predict_reference("dense", hardware=slow, **kw16)
    assert e.params["per_thread"]["dense_fma_per_s"] == pytest.approx(2.5e7)
    f32_slow = HOST.replace(dense_fma_per_s=1e8)
    assert (
        predict_reference("dense", hardware=f32_slow, **kw16).time_s
        == predict_reference("dense", hardware=HOST, **kw16).time_s
    )
    for other in (dict(kw, dtype="float32"), dict(kw, dtype="bfloat16"), dict(kw16, n_heads=3)):
        assert (
            predict_reference("dense", hardware=slow, **other).time_s
            == predict_reference("dense", hardware=HOST, **other).time_s
        ), other
    _check_optional_rate("dense_f16_fma_per_s")
    assert parse_hardware(hardware_to_toml(slow), "x") == slow


@pytest.mark.parametrize("dtype, field", [("float32", "dense1_fma_per_s"),
                                          ("float16", "dense1_f16_fma_per_s")])  # fmt: skip
def test_dense_left_over_heads_no_faster_than_the_one_head_rate(dtype, field):
    # S 1024, d 64, one KV head, 4 threads. A one-head rate of 1e8 FMAs/s (2.5e7 per
    # thread): at g = 3 every head is left over, each pass's g*S*d = 3 * 1024 * 64 = 196608
    # FMAs take 196608 / 2.5e7 = 7.86432e-3 s of in-core work; at g = 5 the one head left
    # over takes a fifth of its 327680 FMAs (65536 / 2.5e7 = 2.62144e-3 s), with the
    # blocks' four at their own rate (here 1e8 too: 262144 / 2.5e7 = 1.048576e-2 s, added).
    # g = 4 (no head left over) and the other dtype are priced as before.
    kw = {k: v for k, v in SPARQ.items() if k not in ("r", "k")}
    four = "dense_fma_per_s" if dtype == "float32" else "dense_f16_fma_per_s"
    slow = HOST.replace(**{field: 1e8})
    for g, want in ((3, 7.86432e-3), (5, 2.62144e-3 + 1.048576e-2)):
        hw = slow.replace(**{four: 1e8}) if g == 5 else slow
        a = _phases(predict_reference("dense", hardware=HOST, **dict(kw, dtype=dtype, n_heads=g)))
        b = _phases(predict_reference("dense", hardware=hw, **dict(kw, dtype=dtype, n_heads=g)))
        _check_passes_in_core(a, b, want)
    other = "float16" if dtype == "float32" else "float32"
    for case in (dict(kw, dtype=dtype, n_heads=4), dict(kw, dtype=other, n_heads=3)):
        assert (
            predict_reference("dense", hardware=slow, **case).time_s
            == predict_reference("dense", hardware=HOST, **case).time_s
        ), case
    _check_optional_rate(field)
    assert parse_hardware(hardware_to_toml(slow), "x") == slow


def test_column_copy_microkernel_copies_and_widens_the_components():
    # after one pass, each thread's float64 block holds the components of the rows of the
    # last block of positions, read by NumPy fancy indexing (the oracle), widened by NumPy
    import numba

    from costmodel import _hostbench as hb
    from reference.sparq import _STEP3_BLOCK

    nt = numba.get_num_threads()
    rng = np.random.default_rng(13)
    K3 = rng.standard_normal((nt, 3 * _STEP3_BLOCK + 5, 128)).astype(np.float32)
    comps = np.sort(rng.choice(128, size=16, replace=False)).astype(np.int64)
    raw3 = np.zeros((nt, 16, _STEP3_BLOCK), dtype=np.float32)
    blk3 = np.zeros((nt, 16, _STEP3_BLOCK))
    out = np.zeros(nt)
    hb._copy_columns_kernel(K3, comps, raw3, blk3, 2, out)
    for t in range(nt):
        last = K3[t, 3 * _STEP3_BLOCK :][:, comps].astype(np.float64).T  # 5 rows
        np.testing.assert_array_equal(blk3[t][:, :5], last)
        before = K3[t, 2 * _STEP3_BLOCK : 3 * _STEP3_BLOCK][:, comps].astype(np.float64).T
        np.testing.assert_array_equal(blk3[t][:, 5:], before[:, 5:])  # the block before's


def test_sparq_step1_and_alpha_exps_at_the_exp_sum_rate():
    # As test_sparq_by_hand_k_once / _k_twice_and_v_mean_supplied, with a measured rate of
    # the exps summed without being stored of 2e8 /s (all threads; 5e7 per thread, against
    # exp_per_s's 2.5e7): step 1's g*S = 4096 normaliser exps take 4096 / 5e7 = 8.192e-5 s
    # in place of 1.6384e-4 s, and alpha's g*k = 256 exps 256 / 5e7 = 5.12e-6 s in place of
    # 1.024e-5 s. The gather softmax's g*k = 256 exps (stored) stay at exp_per_s:
    # 1.024e-5 s. Step 1, K once: read 6.5536e-5 + in-core 1.6384e-4 + divisions 3.2e-7 +
    # exps 8.192e-5 = 3.11616e-4 s (compute 1.6384e-4 + 3.2e-7 + 8.192e-5 = 2.4608e-4);
    # K twice: read 1.96608e-5 + 1.6384e-4 + 3.2e-7 + 8.192e-5 = 2.657408e-4 s.
    hw = HOST.replace(exp_sum_per_s=2e8)
    step1 = {False: 3.11616e-4, True: 2.657408e-4}
    for twice in (True, False):
        base = _phases(predict_reference("sparq", hardware=HOST, store_k_twice=twice, **SPARQ))
        ph = _phases(predict_reference("sparq", hardware=hw, store_k_twice=twice, **SPARQ))
        assert list(ph) == list(base)
        assert base["step1"].time_s - ph["step1"].time_s == pytest.approx(8.192e-5, rel=1e-9)
        assert ph["step1"].time_s == pytest.approx(step1[twice], rel=1e-12)
        assert ph["step1"].compute_s == pytest.approx(2.4608e-4, rel=1e-12)
        assert base["alpha"].time_s == pytest.approx(1.024e-5, rel=1e-12)
        assert ph["alpha"].time_s == pytest.approx(5.12e-6, rel=1e-12)
        assert ph["gather_softmax"].time_s == pytest.approx(1.024e-5, rel=1e-12)
        for name in ph:
            if name not in ("step1", "alpha"):
                assert ph[name].time_s == base[name].time_s, name
    e = predict_reference("sparq", hardware=hw, **SPARQ)
    assert e.params["per_thread"]["exp_sum_per_s"] == pytest.approx(5e7, rel=1e-12)
    assert e.params["per_thread"]["exp_per_s"] == pytest.approx(2.5e7, rel=1e-12)
    e0 = predict_reference("sparq", hardware=HOST, **SPARQ)
    assert e0.params["per_thread"]["exp_sum_per_s"] is None
    # the exp counts are the same: only their rate moved
    assert e.params["phases"]["step1"]["exps"] == 4096
    assert e.params["phases"]["alpha"]["exps"] == 256
    # with the sweep rate too (4e8 FMAs/s, test_sparq_step1_fmas_at_the_sweep_rate): K
    # twice, 3.2768e-4 (sweeps) + 1.96608e-5 (read) + 3.2e-7 + 8.192e-5 = 4.295808e-4 s
    both = HOST.replace(sweep_fma_per_s=4e8, exp_sum_per_s=2e8)
    ph = _phases(predict_reference("sparq", hardware=both, store_k_twice=True, **SPARQ))
    assert ph["step1"].time_s == pytest.approx(4.295808e-4, rel=1e-12)
    # dense's softmax exps are stored (exp_nonpos_into, at exp_per_s): unchanged
    kw = {k: v for k, v in SPARQ.items() if k not in ("r", "k")}
    d0 = predict_reference("dense", hardware=HOST, **kw)
    d1 = predict_reference("dense", hardware=hw, **kw)
    assert d1.time_s == d0.time_s
    assert _phases(d1)["softmax"].time_s == pytest.approx(4096 / 2.5e7 + 32768 / 2.5e9)
    # the field is optional, validated as exp_per_s, and survives the TOML round trip
    _check_optional_rate("exp_sum_per_s")
    text = hardware_to_toml(hw)
    assert "exp_sum_per_s = 200000000.0" in text and "[sources.exp_sum_per_s]" in text
    assert parse_hardware(text, "x") == hw


def test_host_summary_prints_the_exp_sum_rate_when_present():
    from sparq_cli.hardware import _host_summary

    assert "exp summed" not in _host_summary(HOST)
    line = _host_summary(HOST.replace(exp_sum_per_s=3.1e9))
    assert "exp 0.10 G/s, exp summed 3.10 G/s, top-k" in line


def test_host_summary_prints_the_one_thread_rates_when_present():
    from sparq_cli.hardware import _host_summary

    assert "one thread" not in _host_summary(HOST)
    line = _host_summary(HOST.replace(thread_bandwidth_bytes_per_s=4e9))
    assert "one thread: read 4.0 GB/s; call" in line
    line = _host_summary(_one_thread_host())
    assert "one thread: read 4.0 GB/s, gather (512 B rows) 0.8 GB/s; call" in line
    line = _host_summary(_one_thread_host().replace(thread_fma_per_s=5e8))
    assert "gather (512 B rows) 0.8 GB/s, float64 FMA 0.5 G/s; call" in line


@pytest.mark.parametrize(
    ("g256", "expect"),
    [
        # t(512) = 512 / 2e9 = 2.56e-7 s; t(256) = 256 / 1e9 = 2.56e-7 s: a row costs 2.56e-7
        # s whatever its length (a = 2 t(256) - t(512) = 2.56e-7, c = 0)
        (1e9, {128: 5e8, 256: 1e9, 512: 2e9, 1024: 4e9}),
        # t(256) = 256 / 1.6e9 = 1.6e-7: a = 3.2e-7 - 2.56e-7 = 6.4e-8 s per row, c =
        # (2.56e-7 - 6.4e-8) / 512 = 3.75e-10 s per byte: t(128) = 1.12e-7, t(1024) = 4.48e-7
        (1.6e9, {128: 128 / 1.12e-7, 256: 1.6e9, 512: 2e9, 1024: 1024 / 4.48e-7}),
        # 256-byte rows faster per byte than 512-byte ones (t(256) = 8.533e-8 < t(512) / 2):
        # no fixed time per row (a clipped to 0), every size at the 512-byte rate
        (3e9, {128: 2e9, 256: 2e9, 512: 2e9, 1024: 2e9}),
        # no 256-byte measurement: the 512-byte rate per byte
        (None, {128: 2e9, 256: 2e9, 512: 2e9, 1024: 2e9}),
        # 256-byte rows slower each than 512-byte ones (t(256) = 3.2e-7 > t(512) = 2.56e-7):
        # the line a = 3.84e-7, c = -2.5e-10 between the two sizes (t(384) = 2.88e-7), flat
        # outside them: t(128) = t(256), t(1024) = t(16384) = t(512)
        (
            8e8,
            {128: 4e8, 256: 8e8, 384: 384 / 2.88e-7, 512: 2e9, 1024: 4e9, 16384: 6.4e10},
        ),
    ],
)
def test_gather_rate_is_the_line_through_the_two_measured_row_sizes(g256, expect):
    from costmodel.host import gather_rate

    hw = HOST.replace(gather256_bytes_per_s=g256)
    for b, rate in expect.items():
        assert gather_rate(hw, b) == pytest.approx(rate, rel=1e-12), b


def test_gather_rate_rejects_bad_input():
    from costmodel.host import gather_rate

    for bad in (0, -1.0, "512", True, None, float("nan")):
        with pytest.raises(ValueError, match="row_bytes: expected a number > 0"):
            gather_rate(HOST, bad)
    assert gather_rate(HOST, np.int64(512)) == pytest.approx(2e9)
    with pytest.raises(ValueError, match="no gather_bytes_per_s"):
        gather_rate(HOST.replace(gather_bytes_per_s=None), 512)


def test_sparq_by_hand_gathers_float16_rows_at_their_own_rate():
    # As test_sparq_by_hand_k_once, with a 256-byte gather rate of 1e9 B/s (all threads): a
    # gathered row costs 2.56e-7 s whatever its length (see the test above), so the kept
    # float16 rows of d = 64 (128 B) gather at 5e8 B/s, 1.25e8 per thread: k*d*e = 8192 B
    # -> 6.5536e-5 s (1.6384e-5 at the 512-byte rate per byte). The k_cache_t spot check
    # gathers rows too: each of a run's d = 64 segments of the d-major copy (one 64-byte
    # line) and the run's 16 K rows (2048 contiguous bytes) cost 2.56e-7 s each over all
    # threads, 1.024e-6 s per thread: 4 runs * (64 + 1) rows = 260 rows -> 2.6624e-4 s
    # (4.9152e-5 s at the 512-byte rate per byte).
    hw = HOST.replace(gather256_bytes_per_s=1e9)
    e = predict_reference("sparq", hardware=hw, store_k_twice=True, **SPARQ)
    ph = _phases(e)
    for name in ("gather_k", "gather_v"):
        assert ph[name].memory_s == pytest.approx(6.5536e-5, rel=1e-12), name
        want = 6.5536e-5 + 6.5536e-5 + 1.6384e-5
        assert ph[name].time_s == pytest.approx(want, rel=1e-12), name
    assert ph["kt_check"].time_s == pytest.approx(2.6624e-4, rel=1e-12)
    assert e.breakdown()["kt_check"] == 4 * (64 * 64 + 2048)  # the bytes are the same
    base = _phases(predict_reference("sparq", hardware=HOST, store_k_twice=True, **SPARQ))
    for name in ph:
        if name not in ("gather_k", "gather_v", "kt_check"):
            assert ph[name].time_s == pytest.approx(base[name].time_s, rel=1e-12), name
    assert e.params["per_thread"]["gather_rows_bytes_per_s"] == pytest.approx(1.25e8)


def test_sparq_kt_check_prices_each_segment_as_a_gathered_row():
    # With gather rates 2e9 (512-byte rows) and 1.6e9 (256-byte rows), all threads: a row of
    # b bytes costs a + c*b with a = 6.4e-8 s and c = 3.75e-10 s/B (the line through the two,
    # see test_gather_rate_is_the_line_through_the_two_measured_row_sizes). d = 64 fp16: a
    # run's 64 segments are 64-byte lines (6.4e-8 + 2.4e-8 = 8.8e-8 s each) and its 16 K
    # rows 2048 contiguous bytes (6.4e-8 + 7.68e-7 = 8.32e-7 s); per thread (4 threads)
    # 4 * (64 * 3.52e-7 + 3.328e-6) = 1.03424e-4 s for 4 runs.
    hw = HOST.replace(gather256_bytes_per_s=1.6e9)
    e = predict_reference("sparq", hardware=hw, store_k_twice=True, **SPARQ)
    ph = _phases(e)
    assert ph["kt_check"].time_s == pytest.approx(1.03424e-4, rel=1e-12)
    assert ph["kt_check"].memory_s == pytest.approx(1.03424e-4, rel=1e-12)
    assert e.breakdown()["kt_check"] == 4 * (64 * 64 + 2048)


def test_sparq_kt_check_k_rows_no_faster_than_the_streaming_read():
    # gather rates 2e9 / 1e9 (512 / 256 bytes, all threads): every row costs 2.56e-7 s, so a
    # run's 16 K rows of d = 128 fp16 (4096 contiguous bytes) would gather at 1.6e10 B/s,
    # above the streaming read (1e10): they are priced at 1e10 (2.5e9 per thread), 1.6384e-6
    # s a run. The 128 segments of a run, 64 B each, cost 1.024e-6 s each per thread:
    # 4 * (128 * 1.024e-6 + 1.6384e-6) = 5.308416e-4 s.
    hw = HOST.replace(gather256_bytes_per_s=1e9)
    kw = {**SPARQ, "head_dim": 128}
    e = predict_reference("sparq", hardware=hw, store_k_twice=True, **kw)
    assert _phases(e)["kt_check"].time_s == pytest.approx(5.308416e-4, rel=1e-12)
    assert e.breakdown()["kt_check"] == 4 * (128 * 64 + 4096)


def test_sparq_kt_check_reads_at_least_a_line_per_segment():
    # d 16 fp16: a run's segment of the d-major copy is 16 * e = 32 B, less than a 64-byte
    # line, so each costs a whole line; its 16 K rows are 16 * 16 * 2 = 512 B:
    # 4 * (16 * 64 + 512) = 6144 B at 5e8 per thread = 1.2288e-5 s (not 4 * (16 * 32 + 512)
    # = 4096 B)
    assert (KT_SPOT_CHECKS, KT_SPOT_RUN) == (64, 16)  # the counts the hand calculation uses
    kw = {**SPARQ, "head_dim": 16, "r": 2, "k": 8}
    e = predict_reference("sparq", hardware=HOST, store_k_twice=True, **kw)
    assert e.breakdown()["kt_check"] == 6144
    assert _phases(e)["kt_check"].time_s == pytest.approx(1.2288e-5, rel=1e-12)


def test_sparq_step1_k_once_streams_whole_rows():
    # K once: the kernel prefetches every line of each K row, so step 1 streams S*d*e bytes
    # whatever r, plus the g*S*8 = 32768 B of logits it writes: d 16 fp16, r 2: 1024 * 32 +
    # 32768 = 65536 B at 2.5e9 per thread = 2.62144e-5 s; in-core
    # work g*r*S = 8192 FMAs at 2.5e11 (3.2768e-8 s) + r*S = 2048 widened at 2.5e8
    # (8.192e-6 s); divisions g*r = 8 at 1e8 (8e-8 s); the normalisers' g*S = 4096 exps at
    # 2.5e7 (1.6384e-4 s). Overlap 0: all add up.
    kw = {**SPARQ, "head_dim": 16, "r": 2, "k": 8}
    e = predict_reference("sparq", hardware=HOST.replace(fma_f64_per_s=1e12), **kw)
    assert e.breakdown()["step1"] == 1024 * 32 + 32768
    expect = 2.62144e-5 + 3.2768e-8 + 8.192e-6 + 8e-8 + 1.6384e-4
    assert _phases(e)["step1"].time_s == pytest.approx(expect, rel=1e-12)
    # r does not change the bytes (r 8 reads the same rows)
    e8 = predict_reference("sparq", hardware=HOST, **{**kw, "r": 8})
    assert e8.breakdown()["step1"] == 1024 * 32 + 32768


def test_overlap_of_widening_and_fmas():
    # dense, float32, g 4, S 1000, d 64, per row and thread: FMAs 4 * 1000 * 64 / 2.5e8 =
    # 1.024e-3 s, widening 64000 / 5e8 = 1.28e-4 s, read 1.152e-4 s (rho 0: added). The
    # in-core work is max + (1 - omega) * min: omega 0 (and a profile without the field)
    # 1.152e-3; omega 0.5 1.024e-3 + 6.4e-5 = 1.088e-3; omega 1 1.024e-3.
    kw = dict(batch=2, n_heads=8, n_kv_heads=2, seq_len=1000, head_dim=64, dtype="float32")
    assert HOST.widen_fma_overlap is None
    cases = ((None, 1.152e-3), (0.0, 1.152e-3), (0.5, 1.088e-3), (1.0, 1.024e-3))
    for omega, core in cases:
        e = predict_reference("dense", hardware=HOST.replace(widen_fma_overlap=omega), **kw)
        assert _phases(e)["k_pass"].time_s == pytest.approx(core + 1.152e-4, rel=1e-12), omega
        assert e.params["widen_fma_overlap"] == (omega or 0.0)
    # float64 widens nothing: the overlap changes nothing
    kw64 = {**kw, "dtype": "float64"}
    t = [predict_reference("dense", hardware=HOST.replace(widen_fma_overlap=o), **kw64).time_s
         for o in (0.0, 1.0)]  # fmt: skip
    assert t[0] == t[1]
    assert in_core_time(2.0, 3.0, 0.25) == 3.0 + 0.75 * 2.0


def test_widen_overlap_of_16_bit_dtypes():
    # dense, g 4, S 1000, d 64, per row and thread: FMAs 1.024e-3 s; float16 widening
    # 64000 / 2.5e8 = 2.56e-4 s, bfloat16 64000 / 2e8 = 3.2e-4 s; read (2-byte elements)
    # 128000 B + the logits 32000 B = 160000 / 2.5e9 = 6.4e-5 s (rho 0: added). The
    # in-core work takes the dtype's own overlap where the profile has it, else the float32
    # one, else 0: max + (1 - omega) * min.
    kw = dict(batch=2, n_heads=8, n_kv_heads=2, seq_len=1000, head_dim=64)
    F, read = 1.024e-3, 6.4e-5
    cases = (
        ("float16", dict(), 2.56e-4, 0.0),
        ("float16", dict(widen_fma_overlap=0.5), 2.56e-4, 0.5),
        ("float16", dict(widen_fma_overlap=0.5, widen_f16_fma_overlap=1.0), 2.56e-4, 1.0),
        ("float16", dict(widen_fma_overlap=1.0, widen_f16_fma_overlap=0.0), 2.56e-4, 0.0),
        ("bfloat16", dict(widen_fma_overlap=1.0), 3.2e-4, 1.0),
        ("bfloat16", dict(widen_fma_overlap=1.0, widen_bf16_fma_overlap=0.0), 3.2e-4, 0.0),
        ("bfloat16", dict(widen_f16_fma_overlap=1.0, widen_bf16_fma_overlap=0.25), 3.2e-4, 0.25),
    )
    for dtype, fields, W, omega in cases:
        hw = HOST.replace(**fields)
        assert widen_overlap(hw, dtype) == omega, (dtype, fields)
        e = predict_reference("dense", hardware=hw, dtype=dtype, **kw)
        core = F + (1.0 - omega) * W
        assert _phases(e)["k_pass"].time_s == pytest.approx(core + read, rel=1e-12), (dtype, fields)
        assert e.params["widen_fma_overlap"] == omega
    # float32 takes widen_fma_overlap whatever the 16-bit fields say
    hw = HOST.replace(widen_fma_overlap=0.5, widen_f16_fma_overlap=1.0, widen_bf16_fma_overlap=1.0)
    assert widen_overlap(hw) == widen_overlap(hw, "float32") == 0.5


def test_overlap_of_read_and_in_core_work():
    # dense, float32, g 4, S 1000, d 64 (the compute-bound case above): per row traffic
    # R = 1.152e-4 s, in-core work C = 1.152e-3 s. A pass costs max(R, C) + (1 - rho) *
    # min(R, C): rho 0 -> R + C = 1.2672e-3; rho 0.5 -> 1.152e-3 + 0.5 * 1.152e-4 =
    # 1.2096e-3; rho 1 -> C = 1.152e-3. Softmax (1.728e-4, its own loop: no credit) and the
    # call (1e-5) unchanged.
    kw = dict(batch=2, n_heads=8, n_kv_heads=2, seq_len=1000, head_dim=64, dtype="float32")
    for rho, k_pass in ((0.0, 1.2672e-3), (0.5, 1.2096e-3), (1.0, 1.152e-3)):
        e = predict_reference("dense", hardware=HOST.replace(stream_fma_overlap=rho), **kw)
        assert _phases(e)["k_pass"].time_s == pytest.approx(k_pass, rel=1e-12), rho
        assert e.time_s == pytest.approx(2 * k_pass + 1.728e-4 + 1e-5, rel=1e-12), rho
        assert e.params["stream_fma_overlap"] == rho
    # SparQ's step 1 with K stored once (rows gathered r elements at a time into a block)
    # and its group score (adds only) get no overlap credit, even at rho 1
    s0 = predict_reference("sparq", hardware=HOST, **SPARQ)
    s1 = predict_reference("sparq", hardware=HOST.replace(stream_fma_overlap=1.0), **SPARQ)
    for name in ("group_score", "step1"):
        assert _phases(s1)[name].time_s == _phases(s0)[name].time_s, name
    # ... its passes over the kept rows (read in place, prefetched in the loop of the FMAs)
    # do: by hand (test_sparq_by_hand_k_once) read 1.6384e-5, in-core 6.5536e-5 +
    # 1.6384e-5 = 8.192e-5; at rho 1 the in-core work alone, at rho 0.5 plus half the read
    for rho in (1.0, 0.5):
        e = _phases(predict_reference("sparq", hardware=HOST.replace(stream_fma_overlap=rho),
                                      **SPARQ))  # fmt: skip
        for name in ("gather_k", "gather_v"):
            want = 8.192e-5 + (1 - rho) * 1.6384e-5
            assert e[name].time_s == pytest.approx(want, rel=1e-12), (name, rho)
    # ... with the profile's own gather/FMA overlap where it has one (the streaming loop's
    # stands in for it where it has none, as in HOST): omega_g 0 adds the read, omega_g 1
    # hides it, whatever rho; the streaming phases keep rho
    assert HOST.gather_fma_overlap is None
    for rho, og in ((1.0, 0.0), (0.0, 1.0), (0.5, 0.25)):
        hw = HOST.replace(stream_fma_overlap=rho, gather_fma_overlap=og)
        s = predict_reference("sparq", hardware=hw, **SPARQ)
        e = _phases(s)
        for name in ("gather_k", "gather_v"):
            want = 8.192e-5 + (1 - og) * 1.6384e-5
            assert e[name].time_s == pytest.approx(want, rel=1e-12), (name, rho, og)
        ref = _phases(predict_reference("sparq", hardware=HOST.replace(stream_fma_overlap=rho),
                                        **SPARQ))  # fmt: skip
        assert e["v_mean"].time_s == ref["v_mean"].time_s
        assert s.params["gather_fma_overlap"] == og and s.params["stream_fma_overlap"] == rho
    assert gather_overlap(HOST.replace(stream_fma_overlap=0.7)) == 0.7
    assert gather_overlap(HOST.replace(gather_fma_overlap=0.2)) == 0.2
    # ... step 1 with K stored twice (the r rows of the d-major copy read in the loop of the
    # FMAs) does: by hand (test_sparq_by_hand_k_twice_and_v_mean_supplied) read 1.96608e-5,
    # in-core work 1.6384e-4, divisions 3.2e-7 and exps 1.6384e-4 (their own loops, no
    # credit): at rho 1, 1.6384e-4 + 3.2e-7 + 1.6384e-4; at rho 0.5, plus 0.5 * 1.96608e-5
    kt = dict(store_k_twice=True, v_mean_supplied=True, **SPARQ)
    side = 3.2e-7 + 1.6384e-4
    for rho, want in ((1.0, 1.6384e-4 + side), (0.5, 1.6384e-4 + 0.5 * 1.96608e-5 + side)):
        e = predict_reference("sparq", hardware=HOST.replace(stream_fma_overlap=rho), **kt)
        assert _phases(e)["step1"].time_s == pytest.approx(want, rel=1e-12), rho
    # ... while the mean of V (one stream: read 5.24288e-5 s; in-core, widening 2.62144e-4 s
    # and adds 2.62144e-4 s) does: the in-core work alone at rho 1
    assert _phases(s1)["v_mean"].time_s == pytest.approx(2 * 2.62144e-4, rel=1e-12)


def test_widen_rate_follows_the_cache_dtype():
    # dense K pass, g 1, S 1000, d 64 with FMAs made free (rate 1e15): the in-core work is
    # the widening of S*d = 64000 elements at the dtype's per-thread rate: float32 5e8 ->
    # 1.28e-4 s, float16 2.5e8 -> 2.56e-4 s, bfloat16 2e8 -> 3.2e-4 s, float64 none (0).
    hw = HOST.replace(fma_f64_per_s=1e15)
    kw = dict(hardware=hw, batch=1, n_heads=1, seq_len=1000, head_dim=64)
    for dt, widen_s in (("float32", 1.28e-4), ("float16", 2.56e-4), ("bf16", 3.2e-4),
                        ("float64", 0.0)):  # fmt: skip
        ph = _phases(predict_reference("dense", dtype=dt, **kw))
        assert ph["k_pass"].compute_s == pytest.approx(widen_s + 64000 / 2.5e14, rel=1e-9), dt
    # the reference reads no other dtype: the model refuses to price one
    with pytest.raises(ValueError, match="dtype: expected float16, bfloat16, float32 or float64"):
        predict_reference("dense", dtype="float8", **kw)


def test_float64_cache_and_dtype_names():
    # float64 caches read 8 B per element: dense K pass 1000*64*8 B plus the 1000 float64
    # logits it writes (8000 B); "fp64" is an alias
    kw = dict(hardware=HOST, batch=1, n_heads=1, seq_len=1000, head_dim=64)
    a = predict_reference("dense", dtype="float64", **kw)
    b = predict_reference("dense", dtype="fp64", **kw)
    assert a.breakdown()["k_pass"] == 520000 == b.breakdown()["k_pass"]
    assert a.traffic.dtype == "float64" and a.traffic.dtype_bytes == 8
    with pytest.raises(ValueError, match="dtype: expected"):
        predict_reference("dense", dtype="int4", **kw)


# ------------------------------------------------------------------ estimate_attention API
def test_estimate_attention_implementation_reference_is_the_host_model():
    kw = dict(hardware=HOST, batch=2, n_heads=8, n_kv_heads=2, seq_len=2048, head_dim=64)
    for method, extra in (("dense", {}), ("sparq", dict(r=8, k=128))):
        a = estimate_attention(method, implementation="reference", **kw, **extra)
        b = predict_reference(method, **kw, **extra)
        assert a == b
    # reference options pass through; store_k_twice defaults to False (S-major cache)
    a = estimate_attention(
        "sparq", implementation="reference", r=8, k=128, v_mean_supplied=True, threads=2, **kw
    )
    assert a.params["v_mean_supplied"] is True and a.params["threads"] == 2
    assert a.params["store_k_twice"] is False
    # speedup works on the reference model too
    sp = speedup(r=8, k=128, implementation="reference", **kw)
    assert sp.ratio == pytest.approx(sp.baseline.time_s / sp.method.time_s)


def test_default_implementation_unchanged():
    # the kernel model is still the default, with K twice unless told otherwise
    kw = dict(hardware="h100-sxm", batch=1, n_heads=32, seq_len=4096, head_dim=128, r=16, k=256)
    default = estimate_attention("sparq", **kw)
    explicit = estimate_attention("sparq", implementation="kernel", store_k_twice=True, **kw)
    assert default == explicit
    assert default.params["store_k_twice"] is True
    assert "implementation" not in default.params


def test_reference_model_rejects_what_it_does_not_model():
    kw = dict(batch=1, n_heads=4, seq_len=256, head_dim=32)
    with pytest.raises(ValueError, match=r"has no \['threads', 'fma_f64_per_s'"):
        estimate_attention("dense", hardware="h100-sxm", implementation="reference", **kw)
    with pytest.raises(ValueError, match="implementation: expected"):
        estimate_attention("dense", hardware=HOST, implementation="numba", **kw)
    with pytest.raises(ValueError, match="exact top-k"):
        estimate_attention(
            "sparq", hardware=HOST, implementation="reference", r=4, k=8, topk="bucketed", **kw
        )
    with pytest.raises(ValueError, match="gqa_selection"):
        estimate_attention(
            "sparq", hardware=HOST, implementation="reference", r=4, k=8,
            gqa_selection="per_head", **kw,
        )  # fmt: skip
    with pytest.raises(ValueError, match="resident and ideal"):
        estimate_attention("dense", hardware=HOST, implementation="reference", ideal=True, **kw)
    with pytest.raises(ValueError, match=r"does not use argument\(s\) \['page_size'\]"):
        estimate_attention(
            "sparq", hardware=HOST, implementation="reference", r=4, k=8, page_size=16, **kw
        )
    with pytest.raises(ValueError, match="method: expected one of"):
        predict_reference("quest", hardware=HOST, k=8, **kw)
    with pytest.raises(ValueError, match="r: expected <= head_dim"):
        predict_reference("sparq", hardware=HOST, r=33, k=8, **kw)
    with pytest.raises(ValueError, match="do not apply to method 'dense'"):
        predict_reference("dense", hardware=HOST, r=4, **kw)
    with pytest.raises(ValueError, match="threads: expected an int >= 1"):
        predict_reference("dense", hardware=HOST, threads=0, **kw)


# -------------------------------------------------------------------------- profiles
def test_host_fields_toml_round_trip(tmp_path):
    text = hardware_to_toml(HOST)
    for key in HOST_FIELDS:
        assert f"{key} = " in text and f"[sources.{key}]" in text
    assert "\nthreads = 4\n" in text  # an integer, not 4.0
    p = tmp_path / "host.toml"
    p.write_text(text)
    back = load_hardware(str(p))
    assert back == HOST
    assert isinstance(back.threads, int)
    assert parse_hardware(text, "x") == HOST
    # the model gives the same prediction from the reloaded file
    kw = dict(batch=1, n_heads=4, seq_len=512, head_dim=32, r=4, k=32)
    assert predict_reference("sparq", hardware=back, **kw) == predict_reference(
        "sparq", hardware=HOST, **kw
    )


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t + "\nbogus_per_s = 3.0\n", "unknown key.*bogus_per_s"),
        (lambda t: t.replace("\nthreads = 4\n", "\nthreads = 0\n"), "threads.*>= 1"),
        (lambda t: t.replace("\nthreads = 4\n", "\nthreads = 2.5\n"), "threads.*integer"),
        (
            lambda t: t.replace("exp_per_s = 100000000.0", "exp_per_s = -1.0"),
            "exp_per_s.*> 0",
        ),
        (
            lambda t: t.replace("fma_f64_per_s = 1000000000.0", 'fma_f64_per_s = "fast"'),
            "fma_f64_per_s.*number",
        ),
        (
            lambda t: t.replace("[sources.gather_bytes_per_s]", "[sources.gather]"),
            "sources",
        ),
    ],
)
def test_host_fields_strict_loader(tmp_path, edit, match):
    text = hardware_to_toml(HOST)
    bad = edit(text)
    assert bad != text
    p = tmp_path / "bad_host.toml"
    p.write_text(bad)
    with pytest.raises(ValueError, match=match) as info:
        load_hardware(str(p))
    assert "bad_host.toml" in str(info.value)


def test_missing_source_for_a_host_field_is_rejected():
    text = hardware_to_toml(HOST)
    start = text.index("[sources.exp_per_s]")
    end = text.index("[sources.", start + 1)
    with pytest.raises(ValueError, match=r"no source given for key\(s\) \['exp_per_s'\]"):
        parse_hardware(text[:start] + text[end:], "x")


def test_shipped_profiles_have_no_host_fields():
    # the shipped profiles load unchanged: the new fields are optional and absent there
    for name in list_hardware():
        hw = load_hardware(name)
        assert all(getattr(hw, f) is None for f in HOST_FIELDS), name
        assert all(f"{f} =" not in hardware_to_toml(hw) for f in HOST_FIELDS)


# ---------------------------------------------------------------------- measure_host
def test_measure_host_new_fields_positive_finite():
    import numba

    hw = measure_host(seconds=0.3, nbytes=32 * 2**20)
    assert hw.threads == numba.get_num_threads()
    for f in ("mem_bandwidth_bytes_per_s", "topk_bytes_per_s", "fma_f64_per_s", "exp_per_s",
              "gather_bytes_per_s", "gather256_bytes_per_s", "peak_flops_fp32", "div_f64_per_s",
              "widen_f32_per_s", "widen_f16_per_s", "widen_bf16_per_s", "dense_call_s",
              "sparq_call_s", "sweep_fma_per_s", "attend_fma_per_s", "attend1_fma_per_s",
              "exp_sum_per_s", "column_copy_per_s", "dense_fma_per_s", "dense_f16_fma_per_s",
              "dense1_fma_per_s", "dense1_f16_fma_per_s",
              "thread_bandwidth_bytes_per_s", "thread_gather_bytes_per_s",
              "thread_fma_per_s"):  # fmt: skip
        v = getattr(hw, f)
        assert isinstance(v, float) and math.isfinite(v) and v > 0, f
        assert hw.sources[f][0].startswith("measured:"), f
    # a fraction, clipped; its source keeps the unclipped median
    assert 0.0 <= hw.stream_fma_overlap <= 1.0
    assert "median of (read + core - both) / min" in hw.sources["stream_fma_overlap"][0]
    assert 0.0 <= hw.widen_fma_overlap <= 1.0
    for f, dt in (("widen_fma_overlap", "float32"), ("widen_f16_fma_overlap", "float16"),
                  ("widen_bf16_fma_overlap", "bfloat16")):  # fmt: skip
        assert 0.0 <= getattr(hw, f) <= 1.0, f
        assert "median of (fma + widen - both) / min" in hw.sources[f][0], f
        assert f"the widening of {dt} elements alone" in hw.sources[f][0], f
    assert 0.0 <= hw.gather_fma_overlap <= 1.0
    assert "median of (gather + core - both) / min" in hw.sources["gather_fma_overlap"][0]
    assert "SparQ's step-3 sweep" in hw.sources["sweep_fma_per_s"][0]
    assert "SparQ's step-7 passes" in hw.sources["attend_fma_per_s"][0]
    assert "_v_pass, 4 heads)" in hw.sources["attend_fma_per_s"][0]
    assert "_v_pass, 1 head)" in hw.sources["attend1_fma_per_s"][0]
    assert "reference._vexp.exp_nonpos_sum" in hw.sources["exp_sum_per_s"][0]
    assert "copied out one element at a time" in hw.sources["column_copy_per_s"][0]
    assert "dense attention's K and V passes" in hw.sources["dense_fma_per_s"][0]
    assert "once from 16 rows ahead" in hw.sources["dense_fma_per_s"][0]
    assert "float32 rows of K" in hw.sources["dense_fma_per_s"][0]
    assert "dense attention's K and V passes" in hw.sources["dense_f16_fma_per_s"][0]
    assert "float16 rows of K" in hw.sources["dense_f16_fma_per_s"][0]
    assert "_v_pass, 1 head)" in hw.sources["dense1_fma_per_s"][0]
    assert "float32 rows of K" in hw.sources["dense1_fma_per_s"][0]
    assert "_v_pass, 1 head)" in hw.sources["dense1_f16_fma_per_s"][0]
    assert "float16 rows of K" in hw.sources["dense1_f16_fma_per_s"][0]
    # the one-thread read and gathers: the same microkernels on one thread
    assert "on 1 thread, best of" in hw.sources["thread_bandwidth_bytes_per_s"][0]
    assert "512-byte rows" in hw.sources["thread_gather_bytes_per_s"][0]
    assert (
        "per thread, 1 thread, each after a read of" in hw.sources["thread_gather_bytes_per_s"][0]
    )
    # the gathers come from the first half of the array, each after a read of the second
    for f in ("gather_bytes_per_s", "gather256_bytes_per_s", "thread_gather_bytes_per_s"):
        assert "of a 16 MiB array" in hw.sources[f][0], f
        assert "each after a read of 16 MiB (caches cold)" in hw.sources[f][0], f
    assert (
        "in turn (blocked by 4: 5 L1 loads per 4 FMAs), 1 thread, best of"
        in (hw.sources["thread_fma_per_s"][0])
    )
    assert numba.get_num_threads() == hw.threads  # restored after the one-thread runs
    for f in ("dense_call_s", "sparq_call_s"):  # each timed call follows a cache-evicting read
        assert "each after a read of 32 MiB (caches cold)" in hw.sources[f][0], f
    assert parse_hardware(hardware_to_toml(hw), "measured") == hw
    # a measured host predicts the reference kernels
    rng = np.random.default_rng(0)
    S = int(rng.integers(1024, 4096))
    e = predict_reference(
        "sparq", hardware=hw, batch=1, n_heads=8, n_kv_heads=2, seq_len=S, head_dim=64,
        r=8, k=S // 8,
    )  # fmt: skip
    assert math.isfinite(e.time_s) and e.time_s > 0
    assert {f.name for f in dataclasses.fields(hw)} >= set(HOST_FIELDS)


def test_cli_measure_prints_host_fields(tmp_path, capsys):
    from reference.cli import main

    path = tmp_path / "host.toml"
    assert main(["hardware", "measure", "--seconds", "0.3", "--save", str(path)]) == 0
    out = capsys.readouterr().out
    for f in HOST_FIELDS:
        assert f in out
    assert "float64 FMA" in out and "gather (512 B rows)" in out and "(256 B rows)" in out
    hw = load_hardware(str(path))
    assert all(getattr(hw, f) is not None for f in HOST_FIELDS)


# ------------------------------------------------------------------------- bad input
KW_REF = dict(batch=1, n_heads=4, seq_len=512, head_dim=32, r=4, k=32)


@pytest.mark.parametrize("flag", ["store_k_twice", "v_mean_supplied"])
@pytest.mark.parametrize("value", ["no", "yes", 0, 1, None, 1.0])
def test_predict_reference_flags_must_be_real_bools(flag, value):
    # bool("no") is True: a string used to switch the model silently
    with pytest.raises(TypeError, match=f"^{flag}: expected a bool"):
        predict_reference("sparq", hardware=HOST, **KW_REF, **{flag: value})


@pytest.mark.parametrize(
    ("changes", "exc", "match"),
    [
        (dict(threads=2**53 + 1), ValueError, "^threads: expected an int <= "),
        (dict(threads=2.0), TypeError, "^threads: expected an int"),
        (dict(batch=10**30), ValueError, "^batch: expected an int <= "),
        (dict(head_dim=2048, r=4), ValueError, "^head_dim: expected an int <= MAX_HEAD_DIM"),
        (dict(seq_len=None), TypeError, "^seq_len: expected an int"),
        (dict(n_layers=True), TypeError, "^n_layers: expected an int"),
    ],
)
def test_predict_reference_sizes_bounded_and_typed(changes, exc, match):
    with pytest.raises(exc, match=match):
        predict_reference("sparq", hardware=HOST, **{**KW_REF, **changes})


def test_predict_reference_wrong_types_named():
    with pytest.raises(TypeError, match="^method: expected a method name"):
        predict_reference(["dense"], hardware=HOST, batch=1, n_heads=1, seq_len=8, head_dim=8)
    with pytest.raises(TypeError, match="^hardware: expected a Hardware"):
        predict_reference("dense", hardware=None, batch=1, n_heads=1, seq_len=8, head_dim=8)
    with pytest.raises(TypeError, match="^dtype: expected a string"):
        predict_reference("dense", hardware=HOST, batch=1, n_heads=1, seq_len=8, head_dim=8,
                          dtype=2)  # fmt: skip


def test_fma_microkernel_computes_the_dot_products():
    # the register-blocked FMA microkernel of measure_host: round i dots the four Q vectors
    # with X[i % DOT_ROWS]; the sink is the sum over rounds (checked against NumPy)
    from costmodel import _hostbench as hb

    rng = np.random.default_rng(1)
    Q3, X3 = hb.dot4_inputs(rng, 2)
    assert Q3.shape == (2, 4, hb.DOT_WIDTH) and X3.shape == (2, hb.DOT_ROWS, hb.DOT_WIDTH)
    out = np.zeros(2)
    reps = 2 * hb.DOT_ROWS + 3
    hb._dot4_kernel(Q3, X3, reps, out)
    for t in range(2):
        want = sum(float((Q3[t] @ X3[t, i % hb.DOT_ROWS]).sum()) for i in range(reps))
        assert out[t] == pytest.approx(want, rel=1e-12)
    rate, desc = hb.measure_fma(0.01)
    assert math.isfinite(rate) and rate > 0
    assert desc.startswith("measured:") and "dot products" in desc


def test_exp_sum_microkernel_sums_the_exps():
    # the exp-sum microkernel of measure_host: each thread adds reps sums of exp(x) over its
    # block (reference._vexp.exp_nonpos_sum, arguments <= 0), checked against NumPy; its
    # rate is a positive number and its source names the routine it times
    from costmodel import _hostbench as hb

    rng = np.random.default_rng(2)
    x2 = -30.0 * rng.random((2, 100))
    res = np.zeros(2)
    hb._exp_sum_kernel(x2, 3, res)
    for t in range(2):
        assert res[t] == pytest.approx(3 * float(np.exp(x2[t]).sum()), rel=1e-13)
    assert "measure_exp_sum" in hb.__all__
    rate, desc = hb.measure_exp_sum(0.01, np.random.default_rng(0))
    assert isinstance(rate, float) and math.isfinite(rate) and rate > 0
    assert desc.startswith("measured: reference._vexp.exp_nonpos_sum")
    assert f"{hb.EXP_BLOCK}-element float64 blocks" in desc


def test_measure_host_budget_shares_add_up_to_one():
    from costmodel.hardware import _BUDGET

    assert math.isclose(sum(_BUDGET.values()), 1.0, rel_tol=1e-12)
    assert {"exp", "expsum", "sweep", "attend"} <= set(_BUDGET)
    assert all(v > 0 for v in _BUDGET.values())


def test_widen_and_division_microkernels_compute_what_they_say():
    # the widen microkernel sums the widened blocks in turn; the division one divides by a
    # new t each pass (checked against NumPy, the blocks widened by NumPy and ml_dtypes)
    from costmodel import _hostbench as hb

    rng = np.random.default_rng(3)
    reps = 2 * hb.WIDEN_BLOCKS + 1
    for dt in hb.WIDEN_DTYPES:
        X = hb.widen_blocks(dt, rng, 2)
        assert X.shape == (2, hb.WIDEN_BLOCKS, hb.WIDEN_BLOCK)
        if dt == "float32":
            Xf = X.astype(np.float64)
        elif dt == "float16":
            Xf = X.view(np.float16).astype(np.float64)
        else:
            Xf = (X.astype(np.int32) << 16).view(np.float32).astype(np.float64)
        out = np.zeros(2)
        hb._widen_kernel(X, reps, out)
        want = [sum(Xf[t, i % hb.WIDEN_BLOCKS].sum() for i in range(reps)) for t in range(2)]
        assert np.allclose(out, want, rtol=1e-12), dt
    x = 1.0 + rng.random(16)
    y = np.empty_like(x)
    s = hb._div_rounds(x, y, 2.0, 3)
    assert np.allclose(y, x / 4.0, rtol=0, atol=0)  # the last pass divided by 2 + 2
    assert s == pytest.approx((x[0] / 2.0) + (x[1] / 3.0) + (x[2] / 4.0), rel=1e-15)


def test_overlap_microkernel_does_the_dot_products():
    # with ``stream`` the four vectors are dotted with the consecutive rows of the
    # streamed array (which it requests ahead), without it with the L1-resident rows in
    # turn, as many as the array has rows (checked against NumPy)
    from costmodel import _hostbench as hb

    rng = np.random.default_rng(4)
    Q = hb.dot4_inputs(rng, 1)[0][0]
    X = hb.overlap_rows(rng, 1)[0]
    assert X.dtype == np.float32 and X.shape == (hb.DOT_ROWS, hb.DOT_WIDTH)
    n = hb.FUSED_AHEAD + 3  # rows requested ahead and rows with none left to request
    a2 = rng.random((n, hb.DOT_WIDTH)).astype(np.float32)
    want_stream = float(sum((Q @ seg.astype(np.float64)).sum() for seg in a2))
    want_core = float(sum((Q @ X[i % hb.DOT_ROWS].astype(np.float64)).sum() for i in range(n)))
    assert hb._fused_rounds(a2, Q, X, True) == pytest.approx(want_stream, rel=1e-12)
    assert hb._fused_rounds(a2, Q, X, False) == pytest.approx(want_core, rel=1e-12)


def test_gather_overlap_microkernel_runs_the_step7_passes():
    # with ``gather`` each block of idx (len(pos_c) positions) is a K pass (logits of the
    # four heads Q over the rows K[idx]) and a V pass (the rows V[idx] weighted by W summed
    # into Y); without it the same over the cache-resident rows Kc[pos_c], Vc[pos_c]; the
    # checksum adds every logit and every output of each block (checked against NumPy)
    from costmodel import _hostbench as hb

    rng = np.random.default_rng(5)
    d, G, n = hb.GATHER_ROW, 4, 8 + hb.GATHER_AHEAD  # rows requested ahead and rows with none
    Q = rng.random((G, d))
    K = rng.random((60, d)).astype(np.float32)
    V = rng.random((60, d)).astype(np.float32)
    Kc = rng.random((5, d)).astype(np.float32)
    Vc = rng.random((5, d)).astype(np.float32)
    W = rng.random((G, n))
    idx = np.sort(rng.choice(60, 2 * n, replace=False)).astype(np.int64)  # two blocks
    pos_c = np.arange(n, dtype=np.int64) % 5
    L, Y = np.zeros((G, n)), np.zeros((G, d))

    def block(Kr, Vr):
        return float((Q @ Kr.astype(np.float64).T).sum() + (W @ Vr.astype(np.float64)).sum())

    want_g = block(K[idx[:n]], V[idx[:n]]) + block(K[idx[n:]], V[idx[n:]])
    want_c = 2 * block(Kc[pos_c], Vc[pos_c])
    got_g = hb._gather_passes_rounds(K, V, idx, Q, L, W, Y, Kc, Vc, pos_c, True)
    got_c = hb._gather_passes_rounds(K, V, idx, Q, L, W, Y, Kc, Vc, pos_c, False)
    assert got_g == pytest.approx(want_g, rel=1e-12)
    assert got_c == pytest.approx(want_c, rel=1e-12)
    # the gathers alone sum every element of both blocks' K and V rows
    out = np.zeros(1)
    hb._gather_kv_kernel(K, V, idx[None, :], out)
    want = float(K[idx].astype(np.float64).sum() + V[idx].astype(np.float64).sum())
    assert out[0] == pytest.approx(want, rel=1e-6)


def test_overlap_rounds_ratio_by_hand():
    # three callables that take known times: memory 2 units, core 1, both 2.5 ->
    # (2 + 1 - 2.5) / min(2, 1) = 0.5; clipped to [0, 1] when the loop is slower than the sum
    import time as _t

    from costmodel import _hostbench as hb

    u = 0.004

    def sleeper(x):
        return lambda: _t.sleep(x * u)

    rounds, ratios, raw, clipped, med = hb.overlap_rounds(
        (sleeper(2), sleeper(1), sleeper(2.5)), budget_s=0.0
    )
    assert len(rounds) == 5 and len(ratios) == 5 and ratios == sorted(ratios)
    assert raw == pytest.approx(0.5, abs=0.25) and clipped == raw
    assert hb.overlap_rounds((sleeper(1), sleeper(1), sleeper(3)), budget_s=0.0)[3] == 0.0


def test_best_time_runs_before_untimed_before_every_timed_call():
    from costmodel._hostbench import best_time

    log = []
    t, reps = best_time(lambda: log.append("f"), budget_s=0.0, min_reps=3, max_reps=3,
                        before=lambda: log.append("b"))  # fmt: skip
    # one untimed warm-up call, then before + call for each of the 3 repetitions
    assert reps == 3 and log == ["f", "b", "f", "b", "f", "b", "f"]
    assert t >= 0.0
    with pytest.raises(TypeError, match="before: expected a callable or None, got int"):
        best_time(lambda: None, budget_s=0.0, before=3)


def test_stream_view_reads_the_same_bytes_as_8_byte_words():
    from costmodel._hostbench import stream_read, stream_view

    rng = np.random.default_rng(7)
    for dtype in (np.float16, np.float32, np.float64):
        x = rng.normal(size=(3, 8)).astype(dtype)  # 24 elements: a whole number of words
        w = stream_view(x)
        assert w.dtype == np.uint64 and w.nbytes == x.nbytes and np.shares_memory(w, x)
        assert w.tobytes() == x.tobytes()
    # sizes that are not whole words: the elements themselves (16-bit patterns as uint16)
    assert stream_view(np.zeros(3, dtype=np.float16)).dtype == np.uint16
    assert stream_view(np.zeros(3, dtype=np.float32)).dtype == np.float32
    # words that wrap around when summed do not fail
    assert np.isfinite(stream_read(np.full(64, np.finfo(np.float64).max)))


def test_sweep_microkernel_writes_the_logits_of_its_rows():
    # The sweep microkernel's logits against NumPy in float64: block b of s[t] holds
    # q @ X[t] (four heads, 16 components, the same 4096 positions in every block), and it
    # returns their maximum. Tolerance: a 16-term float64 dot product, 1e-13 of sum |q||x|.
    import numba

    from costmodel import _hostbench as hb

    nt = numba.get_num_threads()
    X3, q, acc3, s3, sc2 = hb.sweep_inputs(np.random.default_rng(11), nt)
    assert X3.dtype == np.float32 and X3.shape == (nt, hb.SWEEP_ROWS, hb.SWEEP_BLOCK)
    out = np.zeros(nt)
    hb._sweep_kernel(X3, q, acc3, s3, sc2, 1, out)
    for t in range(nt):
        x = X3[t].astype(np.float64)
        want = np.tile(q @ x, (1, hb.SWEEP_BLOCKS))
        tol = 1e-13 * np.tile(np.abs(q) @ np.abs(x), (1, hb.SWEEP_BLOCKS))
        assert s3[t].shape == want.shape
        assert (np.abs(s3[t] - want) <= tol).all()
        assert out[t] == s3[t].max()
        assert abs(out[t] - want.max()) <= tol.max()
        # and the group score of the four heads, in order from 0.0
        assert np.array_equal(sc2[t], ((s3[t, 0] + s3[t, 1]) + s3[t, 2]) + s3[t, 3])


def test_gather_microkernel_rows_follow_the_kept_rows_pattern():
    # groups of GATHER_KEPT distinct rows of one window of GATHER_WINDOW rows, ascending;
    # a short array: the window is the whole array
    from costmodel import _hostbench as hb

    for n_rows in (10 * hb.GATHER_WINDOW, hb.GATHER_WINDOW // 2):
        ix = hb.gather_index(np.random.default_rng(3), n_rows, 2)
        assert ix.shape == (2, hb.GATHER_ROWS_PER_THREAD) and ix.dtype == np.int64
        assert ix.min() >= 0 and ix.max() < n_rows
        kk = min(hb.GATHER_KEPT, n_rows)
        for t in range(2):
            for g0 in range(0, hb.GATHER_ROWS_PER_THREAD, kk):
                g = ix[t, g0 : g0 + kk]
                assert (np.diff(g) > 0).all()  # ascending, distinct
                assert g[-1] - g[0] < min(hb.GATHER_WINDOW, n_rows)
    # the windows start at random: the groups are not all the same rows
    ix = hb.gather_index(np.random.default_rng(3), 10 * hb.GATHER_WINDOW, 1)
    assert ix[0, 0] != ix[0, hb.GATHER_KEPT]


def test_dense_parts_are_the_threads_items():
    # Dense splits a row into parts of DENSE_PART (4096) positions, dealt to the threads as
    # items. A row's phase times are proportional to S (bytes, FMAs, widening and exps all
    # scale with S), so at S = 3 * 4096 a wave of items costs one 4096-position row:
    # threads 4 -> 1 wave (3 items), threads 2 -> 2 waves, threads 1 -> 3 waves (the whole
    # row); at S = 4096 + 100 the longest part (4096) sets each wave.
    hw = HOST.replace(fma_f64_per_s=1e10)

    def t(S, **kw):
        return predict_reference(
            "dense", hardware=hw, batch=1, n_heads=1, seq_len=S, head_dim=64, dtype="float64",
            **kw,
        )  # fmt: skip

    call = 1e-5
    t_part = t(4096).time_s - call
    for threads, waves in [(4, 1), (2, 2), (1, 3)]:
        e = t(3 * 4096, threads=threads)
        assert e.params["parts"] == 3 and e.params["waves"] == waves
        assert e.time_s == pytest.approx(waves * t_part + call, rel=1e-12), threads
    e = t(4096 + 100, threads=4)
    assert e.params["parts"] == 2 and e.params["waves"] == 1
    assert e.time_s == pytest.approx(t_part + call, rel=1e-12)
    # at S = 4096 + 100: one thread takes both parts, the whole row (4196 positions, t_part
    # * 4196 / 4096); two threads one part each, the first (4096) the longer: t_part
    e = t(4096 + 100, threads=1)
    assert e.time_s == pytest.approx(t_part * 4196 / 4096 + call, rel=1e-12)
    assert t(4096 + 100, threads=2).time_s == pytest.approx(t_part + call, rel=1e-12)
    # S = 2 * 4096 + 100, 2 rows (6 items: 4096, 4096, 100 per row), 4 threads: runs of
    # at most 2 items, which need not hold a last part: 8192 positions, 2 * t_part
    e = predict_reference(
        "dense", hardware=hw, batch=2, n_heads=1, seq_len=2 * 4096 + 100, head_dim=64,
        dtype="float64", threads=4,
    )  # fmt: skip
    assert e.params["waves"] == 2
    assert e.time_s == pytest.approx(2 * t_part + call, rel=1e-12)
    # SparQ deals whole rows
    e = predict_reference(
        "sparq", hardware=hw, batch=1, n_heads=1, seq_len=3 * 4096, head_dim=64, r=4, k=64,
        threads=4,
    )  # fmt: skip
    assert e.params["parts"] == 1 and e.params["waves"] == 1


# ------------------------------------------------------------- fewer threads than measured
def test_thread_gain_by_hand():
    # all 4 threads read 1e10 B/s (2.5e9 a thread); one thread alone reaches 4e9. The
    # threads' total on the line from (1, 4e9) to (4, 1e10): 4e9, 6e9, 8e9, 1e10
    assert thread_gain(1e10, 4e9, 1, 4) == pytest.approx(1.6, rel=1e-15)  # 4e9 / 2.5e9
    assert thread_gain(1e10, 4e9, 2, 4) == pytest.approx(1.2, rel=1e-15)  # 3e9 a thread
    assert thread_gain(1e10, 4e9, 3, 4) == pytest.approx(16 / 15, rel=1e-15)  # 8e9 / 3
    assert thread_gain(1e10, 4e9, 4, 4) == 1.0  # the measured thread count: its share
    assert thread_gain(1e10, 4e9, 8, 4) == 1.0  # more threads than measured: linear
    # one thread faster than all (noise): the total is capped at the all-thread read
    assert thread_gain(1e10, 1e11, 1, 4) == pytest.approx(4.0, rel=1e-15)
    assert thread_gain(1e10, 1e11, 2, 4) == pytest.approx(2.0, rel=1e-15)
    # one thread below its share: the linear share (the line would fall under it)
    assert thread_gain(1e10, 2e9, 1, 4) == 1.0
    assert thread_gain(1e10, 2e9, 2, 4) == 1.0  # line 4.67e9 < share 5e9
    assert thread_gain(1e10, None, 1, 4) == 1.0  # not measured: linear
    assert thread_gain(1e10, 4e9, 1, 1) == 1.0  # a one-thread profile


def _one_thread_host():
    # HOST (per thread: read 2.5e9, gathers 5e8) with one thread reaching 4e9 and 8e8
    return HOST.replace(thread_bandwidth_bytes_per_s=4e9, thread_gather_bytes_per_s=8e8)


def test_fewer_threads_read_at_the_one_thread_rate_dense_by_hand():
    # dense float64 (no widening), B 2, H 8, Hkv 2 (g 4), S 1000, d 64: 4 rows of one part.
    # A row's reads: K pass S*d*8 + g*S*8 = 544000 B, softmax 32000 B, V pass 544000 B:
    # 1.12e6 B. Read/FMA overlap 0: each read adds its time. One thread (4 waves) reads at
    # 4e9 instead of the share 2.5e9: 4 * 1.12e6 * (1/2.5e9 - 1/4e9) = 6.72e-4 s less; two
    # threads (2 waves) on the line, 6e9 together, 3e9 each: 2 * 1.12e6 * (1/2.5e9 - 1/3e9)
    # s less; four threads (the profile's, all working): unchanged.
    kw = dict(batch=2, n_heads=8, n_kv_heads=2, seq_len=1000, head_dim=64, dtype="float64")
    for threads, less, bw in ((1, 6.72e-4, 4e9), (2, 2 * 1.12e6 * (1 / 2.5e9 - 1 / 3e9), 3e9),
                              (4, 0.0, 2.5e9)):  # fmt: skip
        lin = predict_reference("dense", hardware=HOST, threads=threads, **kw)
        one = predict_reference("dense", hardware=_one_thread_host(), threads=threads, **kw)
        assert lin.time_s - one.time_s == pytest.approx(less, rel=1e-9, abs=1e-15), threads
        got = one.params["per_thread"]["bandwidth_bytes_per_s"]
        assert got == pytest.approx(bw, rel=1e-15), threads


def test_fewer_threads_gather_at_the_one_thread_rate_sparq():
    # HOST with one thread reading 4e9 (stream gain at 1 thread 4e9 / 2.5e9 = 1.6; at 2
    # threads the line's 6e9 / 2 = 3e9: 1.2) and gathering 1e9 (gather share 5e8: gain 2.0
    # at 1 thread; at 2 the line 1e9 + (2e9 - 1e9) / 3 = 1.333e9, 6.667e8 a thread: 4/3).
    # The gathered phases (kept rows, the spot check) take the gather gain, the streamed
    # step 1 the stream gain; in-core work unchanged. 4 rows (Hkv 4): every thread works.
    hw = HOST.replace(thread_bandwidth_bytes_per_s=4e9, thread_gather_bytes_per_s=1e9)
    kw = dict(batch=1, n_heads=16, n_kv_heads=4, seq_len=2048, head_dim=64, dtype="float32",
              r=8, k=256, store_k_twice=True)  # fmt: skip
    for threads, g_stream, g_gather in ((1, 1.6, 2.0), (2, 1.2, 4 / 3)):
        lin = _phases(predict_reference("sparq", hardware=HOST, threads=threads, **kw))
        one = _phases(predict_reference("sparq", hardware=hw, threads=threads, **kw))
        for name, gain in (("kt_check", g_gather), ("gather_k", g_gather),
                           ("gather_v", g_gather), ("step1", g_stream)):  # fmt: skip
            want = lin[name].memory_s / gain
            assert one[name].memory_s == pytest.approx(want, rel=1e-12), (threads, name)
            assert lin[name].compute_s == one[name].compute_s, name
    # at the profile's four threads nothing changes
    assert predict_reference("sparq", hardware=hw, threads=4, **kw).time_s == (
        predict_reference("sparq", hardware=HOST, threads=4, **kw).time_s
    )


def test_fewer_threads_run_in_core_work_at_the_one_thread_fma_rate():
    # HOST's FMA loop: 1e9 /s on 4 threads (2.5e8 a thread); one thread alone 5e8: gain 2.0
    # at 1 thread, 1.0 at 4 (the line 5e8 + (n - 1) * 5e8 / 3: 6.67e8 at 2, 3.33e8 each,
    # gain 4/3). Every in-core rate (FMAs, exps, divisions, widening, top-k) scales by it;
    # the reads do not. 4 rows (Hkv 4): every thread works.
    hw = HOST.replace(thread_fma_per_s=5e8)
    kw = dict(batch=1, n_heads=16, n_kv_heads=4, seq_len=2048, head_dim=64, dtype="float32",
              r=8, k=256, store_k_twice=True)  # fmt: skip
    for threads, gain in ((1, 2.0), (2, 4 / 3)):
        lin = _phases(predict_reference("sparq", hardware=HOST, threads=threads, **kw))
        one = _phases(predict_reference("sparq", hardware=hw, threads=threads, **kw))
        for name in ("step1", "alpha", "gather_k", "gather_v"):
            assert one[name].compute_s == pytest.approx(lin[name].compute_s / gain, rel=1e-12)
            assert one[name].memory_s == lin[name].memory_s, name
        assert one["topk"].topk_s == pytest.approx(lin["topk"].topk_s / gain, rel=1e-12)
    assert predict_reference("sparq", hardware=hw, threads=4, **kw).time_s == (
        predict_reference("sparq", hardware=HOST, threads=4, **kw).time_s
    )


def test_fewer_rows_than_threads_share_among_the_working_threads():
    # one (batch, KV head) row of SparQ: one thread works whatever the thread count, so it
    # reads at the one-thread rate at 1, 2 and 4 threads alike (no slower with more
    # threads allowed); dense at S = 8192 has 2 parts: 2 threads work from 2 threads on
    hw = HOST.replace(thread_bandwidth_bytes_per_s=4e9, thread_gather_bytes_per_s=1e9)
    kw = dict(batch=1, n_heads=4, n_kv_heads=1, seq_len=2048, head_dim=64, dtype="float32",
              r=8, k=256, store_k_twice=True)  # fmt: skip
    t = [predict_reference("sparq", hardware=hw, threads=n, **kw).time_s for n in (1, 2, 4)]
    assert t[0] == t[1] == t[2]
    kw = dict(batch=1, n_heads=4, n_kv_heads=1, seq_len=8192, head_dim=64, dtype="float64")
    t = [predict_reference("dense", hardware=hw, threads=n, **kw) for n in (1, 2, 3, 4)]
    assert t[1].time_s == t[2].time_s == t[3].time_s < t[0].time_s
    assert t[3].params["per_thread"]["bandwidth_bytes_per_s"] == pytest.approx(3e9, rel=1e-15)


def test_threads_bandwidth_rejects_bad_arguments():
    ok = dict(total=1e10, one=4e9, threads=1, profile_threads=4)
    for bad, exc, msg in ((dict(total=0.0), ValueError, "^total: "),
                          (dict(one=-1.0), ValueError, "^one: "),
                          (dict(one=float("nan")), ValueError, "^one: "),
                          (dict(threads=0), ValueError, "^threads: "),
                          (dict(threads=1.5), TypeError, "^threads: "),
                          (dict(profile_threads=0), ValueError, "^profile_threads: ")):  # fmt: skip
        for f in (threads_bandwidth, thread_gain):
            with pytest.raises(exc, match=msg):
                f(**{**ok, **bad})


def test_fused_estimate_of_a_measured_profile_scales_on_the_line():
    # a measured profile (threads 4, all-thread read 1e10) whose one thread reads 2e9,
    # below its share: at its own 4 threads the read is the measured 1e10 (not 4 x 2e9 =
    # 8e9), at 2 threads the linear 5e9 (the line's 2e9 + 8e9 / 3 = 4.67e9 is below it);
    # with one thread at 4e9, 2 threads read the line's 6e9. Memory time ~ 1 / read.
    kw = dict(batch=1, n_heads=8, seq_len=4096, head_dim=128, dtype="float16")

    def mem(h, threads):
        e = estimate_attention("dense", hardware=h, threads=threads, **kw)
        return sum(s.memory_s for s in e.kernels)

    full = mem(HOST, None)  # the measured read, no thread count given
    hw = HOST.replace(thread_bandwidth_bytes_per_s=2e9)
    assert mem(hw, 4) == pytest.approx(full, rel=1e-12)
    assert mem(hw, 2) == pytest.approx(2 * full, rel=1e-12)
    hw = HOST.replace(thread_bandwidth_bytes_per_s=4e9)
    assert mem(hw, 2) == pytest.approx(full * 1e10 / 6e9, rel=1e-12)


def test_on_one_thread_restores_the_thread_count_after_an_error():
    import numba

    from costmodel import _hostbench as hb

    before = numba.get_num_threads()

    def boom():
        assert numba.get_num_threads() == 1
        raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        hb.on_one_thread(boom)
    assert numba.get_num_threads() == before
    assert hb.on_one_thread(lambda: (numba.get_num_threads(),)) == (1,)


def test_one_thread_rates_round_trip_toml():
    hw = _one_thread_host()
    text = hardware_to_toml(hw)
    assert "thread_gather_bytes_per_s = " in text
    assert parse_hardware(text, "test").thread_gather_bytes_per_s == 8e8
