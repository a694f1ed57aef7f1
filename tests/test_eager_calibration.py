"""implementation="eager", the new profile fields and ``sparq hardware calibrate``'s fit.

Every expected time is written out by hand from the documented formulas (docs/costmodel.md,
"Eager"); the calibration tests generate measurements from known parameters and check that
the fit recovers them.
"""

from __future__ import annotations

import json
import math

import pytest

from costmodel import calibration
from costmodel.eager import SPARQ_KERNEL_OPS
from costmodel.estimate import estimate_attention, estimate_decode, speedup
from costmodel.hardware import (
    Hardware,
    hardware_to_toml,
    list_hardware,
    load_hardware,
    parse_hardware,
)
from sparq_cli.cli import main

BW = 1e12
EAGER_FIELDS = dict(
    host_dispatch_s=10e-6,
    host_dispatch_matmul_s=30e-6,
    host_dispatch_topk_s=20e-6,
    host_dispatch_attention_s=25e-6,
    host_dispatch_custom_s=50e-6,
    host_dispatch_view_s=3e-6,
    sync_latency_s=15e-6,
    op_device_s=2e-6,
    topk_latency_s=20e-6,
)


def gpu(**extra) -> Hardware:
    """A round-number GPU profile (1 TB/s, eta 0.5, t0 5 us, top-k 1e11 B/s)."""
    fields = dict(
        name="synthetic",
        description="test profile",
        kind="gpu",
        mem_bandwidth_bytes_per_s=BW,
        peak_flops_fp16=1e15,
        peak_flops_fp32=1e14,
        mem_capacity_bytes=80e9,
        onchip_bytes=0.0,
        mem_efficiency=0.5,
        flop_efficiency=0.5,
        kernel_latency_s=5e-6,
        mem_transaction_bytes=32,
        topk_bytes_per_s=1e11,
    )
    fields.update(extra)
    return Hardware(**fields)


KW = dict(batch=4, n_heads=8, seq_len=4096, head_dim=128)


def dense_bytes(B, H, S, d, e=2):
    # read K, V; append k, v; read q, write the output (g = 1)
    return B * H * (2 * S * d * e + 2 * d * e + 2 * d * e)


# ------------------------------------------------------------------------ eager, by hand
def test_eager_dense_is_dispatch_plus_device_plus_sync():
    hw = gpu(**EAGER_FIELDS)
    e = estimate_attention("dense", hardware=hw, implementation="eager", **KW)
    device = 5e-6 + dense_bytes(4, 8, 4096, 128) / (0.5 * BW)
    assert e.time_s == pytest.approx(25e-6 + device + 15e-6, rel=1e-12)
    assert e.params["ops"] == 1 and e.params["kernel_ops"] == 1
    fused = estimate_attention("dense", hardware=hw, **KW)
    assert fused.time_s == pytest.approx(device, rel=1e-12)


def test_eager_sparq_host_bound_sums_the_dispatch_of_every_op():
    # a device so fast that the host decides: 17 elementwise, 2 matmul, 2 top-k, 1 custom
    # kernel, 7 views; every kernel op after the first pays host_dispatch_mixed_s
    hw = gpu(
        **{**EAGER_FIELDS, "op_device_s": 0.0, "kernel_latency_s": 0.0, "topk_latency_s": 0.0},
        mem_bandwidth_bytes_per_s=1e15,
        mem_efficiency=1.0,
        topk_bytes_per_s=1e15,
        host_dispatch_mixed_s=1e-6,
    )
    e = estimate_attention("sparq", hardware=hw, implementation="eager", r=16, k=64, **KW)
    host = 17 * 10e-6 + 2 * 30e-6 + 2 * 20e-6 + 50e-6 + 7 * 3e-6 + 21 * 1e-6
    assert e.params["host_s"] == pytest.approx(host, rel=1e-12)
    assert e.params["kernel_ops"] == SPARQ_KERNEL_OPS == 22 and e.params["ops"] == 29
    assert e.time_s == pytest.approx(host + 15e-6, rel=1e-12)


def test_eager_sparq_device_bound_sums_the_device_time_of_every_op():
    # no host cost: the wall time is the device time of the 22 kernels plus the sync
    fields = {k: 0.0 for k in EAGER_FIELDS if k.startswith("host_")}
    hw = gpu(**{**EAGER_FIELDS, **fields})
    B, H, S, d, r, k, e_, T = 4, 8, 4096, 128, 16, 64, 2, 32
    row = 256  # ceil(d*e/T)*T
    n = B * H
    mem = 0.5 * BW
    small = {  # elementwise ops and matmuls (op_device_s + bytes / (eta BW)), bytes per head
        "abs": 2 * d * e_,
        "sum_top": r * e_ + e_,
        "sum": d * e_ + e_,
        "mul": 2 * e_,
        "div": 3 * e_,
        "sqrt": 2 * e_,
        "scores_div": 2 * S * e_,
        "softmax": 2 * S * e_,
        "gather_k": k * (row + 8 + d * e_),
        "gather_v": k * (row + 8 + d * e_),
        "qk": k * d * e_ + d * e_ + k * e_,
        "qk_div": 2 * k * e_,
        "softmax_k": 2 * k * e_,
        "pv": k * e_ + k * d * e_ + d * e_,
        "alpha": k * e_ + e_,
        "alpha_y": 3 * d * e_,
        "one_minus": 2 * e_,
        "mix": d * e_ + e_ + d * e_,
        "add": 3 * d * e_,
    }
    device = sum(2e-6 + n * b / mem for b in small.values())
    # step 1 (K twice): r rows of the d-major copy, q read, scores written
    device += 5e-6 + n * (r * math.ceil(S * e_ / T) * T + d * e_ + S * e_) / mem
    # the two top-k ops: topk_latency_s + bytes / rate
    device += 20e-6 + n * (d * e_ + r * (e_ + 8)) / 1e11
    device += 20e-6 + n * (S * e_ + k * (e_ + 8)) / 1e11
    e = estimate_attention("sparq", hardware=hw, implementation="eager", r=r, k=k, **KW)
    assert e.params["device_s"] == pytest.approx(device, rel=1e-12)
    assert e.time_s == pytest.approx(device + 15e-6, rel=1e-12)


def test_eager_pipeline_overlaps_host_and_device():
    # host 10 us per op, device 100 us per op for two equal ops would be 10 + 200 + sync;
    # one SDPA op: the device starts after its dispatch
    hw = gpu(**EAGER_FIELDS)
    e = estimate_attention("dense", hardware=hw, implementation="eager", **KW)
    assert e.time_s == pytest.approx(e.params["host_s"] + e.params["device_s"] + 15e-6)
    cpu = gpu(**{**EAGER_FIELDS, "kind": "cpu"})
    c = estimate_attention("sparq", hardware=cpu, implementation="eager", r=16, k=64, **KW)
    # on a CPU nothing overlaps: every op's host and compute time add up
    assert c.time_s == pytest.approx(c.params["host_s"] + c.params["device_s"] + 15e-6)


def test_program_bandwidth_caps_the_step1_kernel():
    B, H, S, d, r, e_, T = 4, 8, 4096, 128, 16, 2, 32
    nbytes = B * H * (r * math.ceil(S * e_ / T) * T + d * e_ + S * e_)

    def step1(hw):
        e = estimate_attention("sparq", hardware=hw, implementation="eager", r=r, k=64, **KW)
        return next(k for k in e.kernels if k.kernel == "step1")

    # 32 rows x 1 GB/s = 32 GB/s < eta BW = 500 GB/s
    capped = step1(gpu(**EAGER_FIELDS, program_bandwidth_bytes_per_s=1e9))
    assert capped.time_s == pytest.approx(5e-6 + nbytes / (32 * 1e9), rel=1e-12)
    # 32 rows x 100 GB/s > 500 GB/s: the cap does not bind
    free = step1(gpu(**EAGER_FIELDS, program_bandwidth_bytes_per_s=1e11))
    assert free.time_s == pytest.approx(5e-6 + nbytes / (0.5 * BW), rel=1e-12)


def test_op_mem_efficiency_prices_the_framework_ops():
    hw = gpu(**EAGER_FIELDS, op_mem_efficiency=0.1)
    e = estimate_attention("sparq", hardware=hw, implementation="eager", r=16, k=64, **KW)
    gk = next(k for k in e.kernels if k.kernel == "gather_k")
    n = 4 * 8
    assert gk.time_s == pytest.approx(2e-6 + n * 64 * (256 + 8 + 256) / (0.1 * BW), rel=1e-12)
    step1 = next(k for k in e.kernels if k.kernel == "step1")
    assert step1.memory_s == pytest.approx(step1.bytes / (0.5 * BW), rel=1e-12)  # main kernel


def test_topk_latency_prices_the_fused_topk_kernel():
    hw = gpu(topk_latency_s=30e-6)
    e = estimate_attention("sparq", hardware=hw, r=16, k=64, **KW)
    tk = next(k for k in e.kernels if k.kernel == "topk")
    assert tk.time_s == pytest.approx(30e-6 + 4 * 8 * (4096 * 2 + 64 * 8) / 1e11, rel=1e-12)


def test_threads_cap_the_bandwidth():
    hw = gpu(kind="cpu", cpu_cores=8, thread_bandwidth_bytes_per_s=10e9)
    nbytes = dense_bytes(4, 8, 4096, 128)
    e = estimate_attention("dense", hardware=hw, **KW)  # 8 threads: 80 GB/s < 500 GB/s
    assert e.time_s == pytest.approx(5e-6 + nbytes / 80e9, rel=1e-12)
    e2 = estimate_attention("dense", hardware=hw, threads=2, **KW)
    assert e2.time_s == pytest.approx(5e-6 + nbytes / 20e9, rel=1e-12)
    e64 = estimate_attention("dense", hardware=hw, threads=64, **KW)  # capped by eta BW
    assert e64.time_s == pytest.approx(5e-6 + nbytes / 500e9, rel=1e-12)
    with pytest.raises(ValueError, match=r"^threads: profile 'h100-sxm'"):
        estimate_attention("dense", hardware="h100-sxm", threads=4, **KW)
    with pytest.raises(TypeError, match=r"^threads"):
        estimate_attention("dense", hardware=hw, threads=2.0, **KW)


def test_ipu_streaming_memory_vs_sram():
    hw = load_hardware("ipu-m2000")
    kw = dict(batch=1, n_heads=32, seq_len=16384, head_dim=128)
    nbytes = dense_bytes(1, 32, 16384, 128)
    sram = estimate_attention("dense", hardware=hw, **kw)
    assert sram.resident
    assert sram.time_s == pytest.approx(1e-6 + nbytes / (0.8 * 47.5e12), rel=1e-12)
    stream = estimate_attention("dense", hardware=hw, resident=False, **kw)
    assert stream.time_s == pytest.approx(1e-6 + nbytes / (0.8 * 15.75e9), rel=1e-12)
    assert hw.mem_bandwidth_bytes_per_s == 15.75e9 and hw.onchip_bandwidth_bytes_per_s == 47.5e12


# ------------------------------------------------------------------------ eager vs fused
EAGER_PROFILES = [n for n in list_hardware() if load_hardware(n).host_dispatch_s is not None]


@pytest.mark.parametrize("name", EAGER_PROFILES)
def test_eager_never_faster_than_fused(name):
    assert len(EAGER_PROFILES) >= 10
    for B in (1, 8, 64):
        for S in (512, 4096, 65536):
            for n_kv in (32, 8):
                kw = dict(hardware=name, batch=B, n_heads=32, n_kv_heads=n_kv, seq_len=S)
                kw["head_dim"] = 128
                d_f = estimate_attention("dense", **kw)
                d_e = estimate_attention("dense", implementation="eager", **kw)
                assert d_e.time_s >= d_f.time_s, (B, S, n_kv)
                for twice in (True, False):
                    for sel in ("shared", "per_head"):
                        s_kw = dict(r=16, k=S // 16, store_k_twice=twice, gqa_selection=sel)
                        s_f = estimate_attention("sparq", **s_kw, **kw)
                        s_e = estimate_attention("sparq", implementation="eager", **s_kw, **kw)
                        assert s_e.time_s >= s_f.time_s, (B, S, n_kv, twice, sel)


def test_eager_through_speedup_and_decode():
    kw = dict(hardware="h200-sxm", batch=1, n_heads=32, seq_len=4096, head_dim=128)
    s = speedup(r=32, k=128, implementation="eager", **kw)
    assert s.baseline.params["implementation"] == s.method.params["implementation"] == "eager"
    d_e = estimate_decode("llama-2-7b", hardware="h200-sxm", batch=1, seq_len=4096,
                          method="sparq", r=16, k=256, implementation="eager")  # fmt: skip
    d_f = estimate_decode("llama-2-7b", hardware="h200-sxm", batch=1, seq_len=4096,
                          method="sparq", r=16, k=256)  # fmt: skip
    assert d_e.weights_s == d_f.weights_s and d_e.attention.time_s > d_f.attention.time_s
    assert estimate_attention("dense", implementation="kernel", **kw).time_s == (
        estimate_attention("dense", **kw).time_s
    )


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(implementation="lazy"), ValueError, r"^implementation: expected one of"),
        (dict(implementation="eager", ideal=True), ValueError, r"^ideal: does not apply"),
        (dict(implementation="eager", topk="bucketed"), ValueError, r"^topk: implementation="),
        (dict(implementation="eager", hardware="tpu-v4"), ValueError, r"^hardware: .*eager"),
    ],
)
def test_eager_errors_name_the_argument(kwargs, exc, pattern):
    kw = dict(hardware="h200-sxm", batch=1, n_heads=32, seq_len=4096, head_dim=128)
    kw.update(kwargs)
    with pytest.raises(exc, match=pattern):
        estimate_attention("sparq", r=16, k=256, **kw)


def test_eager_has_op_lists_for_dense_and_sparq_only():
    with pytest.raises(ValueError, match=r"^method: implementation='eager'"):
        estimate_attention("h2o", hardware="h200-sxm", implementation="eager", k=64, **KW)
    with pytest.raises(ValueError, match=r"^implementation: expected 'fused' or 'eager'"):
        estimate_decode("llama-2-7b", hardware="h200-sxm", batch=1, seq_len=4096,
                        implementation="reference")  # fmt: skip


# ------------------------------------------------------------------------ profiles
def test_every_shipped_profile_round_trips_through_toml():
    for name in list_hardware():
        hw = load_hardware(name)
        assert parse_hardware(hardware_to_toml(hw), "round trip") == hw, name


def test_a_profile_with_every_new_field_round_trips():
    hw = gpu(**EAGER_FIELDS, host_dispatch_mixed_s=4e-6, op_mem_efficiency=0.25,
             program_bandwidth_bytes_per_s=2.5e10, cpu_cores=16,
             thread_bandwidth_bytes_per_s=2e10)  # fmt: skip
    back = parse_hardware(hardware_to_toml(hw), "round trip")
    assert back == hw and back.op_mem_efficiency == 0.25 and back.cpu_cores == 16


def test_every_profile_source_says_measured_datasheet_default_or_derived():
    for name in list_hardware():
        for key, (src, _) in load_hardware(name).sources.items():
            assert src.startswith(("measured:", "datasheet:", "default", "derived:")), (name, key)


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("host_dispatch_s", -1e-6, r"host_dispatch_s"),
        ("op_mem_efficiency", 0.0, r"op_mem_efficiency"),
        ("sync_latency_s", True, r"sync_latency_s"),
        ("program_bandwidth_bytes_per_s", 10.0, r"program_bandwidth_bytes_per_s"),
    ],
)
def test_new_fields_are_validated(field, value, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        gpu(**{field: value})


def test_calibrated_h200_profile_is_measured():
    hw = load_hardware("h200-sxm")
    for key in ("mem_efficiency", "kernel_latency_s", "topk_bytes_per_s", "host_dispatch_s",
                "sync_latency_s", "op_mem_efficiency"):  # fmt: skip
        assert hw.sources[key][0].startswith("measured: sparq hardware calibrate"), key
    assert hw.sources["mem_bandwidth_bytes_per_s"][0].startswith("datasheet:")


# ------------------------------------------------------------------------ calibration fit
TRUE = dict(
    t0=6e-6,
    eta=0.9,
    topk_lat=15e-6,
    topk_rate=2e11,
    p=2e10,
)
PEAK = 4e12


def synthetic_measurements(true=TRUE) -> dict:
    """Measurements generated from known parameters by the documented formulas."""
    H, d, e = 32, 128, 2
    dense = []
    for B in (1, 2, 4, 8, 16):
        for S in (1024, 2048, 4096, 8192):
            t = true["t0"] + dense_bytes(B, H, S, d) / (true["eta"] * PEAK)
            dense.append(dict(batch=B, heads=H, head_dim=d, seq_len=S, default_device_s=t,
                              cudnn_device_s=t * 1.01, flash_device_s=t * 1.3))  # fmt: skip
    topk = []
    for R in (32, 512, 2048):
        for n in (1024, 4096, 16384):
            for k in (128, n // 16):
                t = true["topk_lat"] + R * (n * e + 8 * k) / true["topk_rate"]
                topk.append(dict(rows=R, n=n, k=k, time_s=t))
    sparq = []
    for B in (1, 4, 16, 64):
        for S in (1024, 4096, 16384):
            nbytes = B * H * (32 * math.ceil(S * e / 32) * 32 + d * e + S * e)
            t1 = true["t0"] + nbytes / min(true["eta"] * PEAK, B * H * true["p"])
            sparq.append(dict(batch=B, heads=H, head_dim=d, seq_len=S, r=32, k=128,
                              twice_step1_device_s=t1))  # fmt: skip
    host_ops = {"add": dict(host_s=9e-6, device_s=1.5e-6), "mul": dict(host_s=11e-6),
                "matmul": dict(host_s=30e-6), "topk_d": dict(host_s=20e-6),
                "topk_1k": dict(host_s=24e-6), "sdpa_default": dict(host_s=25e-6),
                "gather_bmv": dict(host_s=60e-6), "view": dict(host_s=3e-6)}  # fmt: skip
    host_sync = dict(tiny_op_round_trip_s=9e-6 + 1.5e-6 + 14e-6)
    return dict(dtype="float16", device_name="synthetic GPU", date_utc="2026-11-28",
                torch="none", dense=dense, topk=topk, sparq=sparq, host_ops=host_ops,
                host_sync=host_sync, l2_bytes=50 * 2**20)  # fmt: skip


def test_line_fit_recovers_its_parameters():
    xs = [1.0, 2.0, 5.0, 10.0]
    a, b = calibration.fit_line_relative(xs, [3e-6 + 2e-7 * x for x in xs])
    assert a == pytest.approx(3e-6, rel=1e-9) and b == pytest.approx(2e-7, rel=1e-9)
    with pytest.raises(ValueError, match=r"^x, y: expected"):
        calibration.fit_line_relative([1.0], [1.0])
    # times that fall with x (noise on a tiny grid): the slope stays positive, a = 0
    a, b = calibration.fit_line_relative([1.0, 2.0], [2.0, 1.0])
    assert a == 0.0 and b == pytest.approx((1 / 2 + 2) / (1 / 4 + 4))


def test_calibration_recovers_synthetic_parameters():
    base = gpu(mem_bandwidth_bytes_per_s=PEAK)
    hw, report = calibration.fit_profile(synthetic_measurements(), base, name="fit")
    assert hw.mem_efficiency == pytest.approx(TRUE["eta"], rel=1e-6)
    assert hw.kernel_latency_s == pytest.approx(TRUE["t0"], rel=1e-6)
    assert hw.topk_latency_s == pytest.approx(TRUE["topk_lat"], rel=1e-6)
    assert hw.topk_bytes_per_s == pytest.approx(TRUE["topk_rate"], rel=1e-6)
    # a grid search over 801 log-spaced values of 4 decades: within one step (1.2%)
    assert hw.program_bandwidth_bytes_per_s == pytest.approx(TRUE["p"], rel=0.012)
    assert hw.host_dispatch_s == pytest.approx(10e-6)  # median of 9 and 11 us
    assert hw.host_dispatch_topk_s == pytest.approx(22e-6)
    assert hw.host_dispatch_custom_s == 60e-6 and hw.host_dispatch_view_s == 3e-6
    assert hw.sync_latency_s == pytest.approx(14e-6)
    assert hw.op_device_s == 1.5e-6 and hw.onchip_bytes == 50 * 2**20
    assert hw.name == "fit" and hw.origin == "calibrated"
    dense_rows = [r for r in report["rows"] if r["section"].startswith("dense fused")]
    assert {r["role"] for r in dense_rows} == {"fitted", "predicted"}
    assert max(abs(r["error"]) for r in dense_rows) < 1e-6
    # fitted on the checkerboard half: (i + j) even
    fitted = {(r["batch"], r["seq_len"]) for r in dense_rows if r["role"] == "fitted"}
    assert (1, 1024) in fitted and (1, 2048) not in fitted and (2, 2048) in fitted


def test_calibration_recovers_the_eager_parameters():
    # the op-by-op SparQ's device and wall times generated with known framework-op
    # efficiency and mixed-sequence host cost: the fit finds them on half of the grid
    meas = synthetic_measurements()
    base = gpu(mem_bandwidth_bytes_per_s=PEAK)
    hw0, _ = calibration.fit_profile(meas, base)
    truth = hw0.replace(op_mem_efficiency=0.3, host_dispatch_mixed_s=6e-6)
    for r in meas["sparq"]:
        kw = dict(hardware=truth, batch=r["batch"], n_heads=32, seq_len=r["seq_len"],
                  head_dim=128, r=32, k=128, implementation="eager")  # fmt: skip
        for mode in ("twice", "once"):
            est = estimate_attention("sparq", store_k_twice=mode == "twice", **kw)
            r[f"{mode}_device_s"] = est.params["device_s"]
            r[f"{mode}_wall_s"] = est.time_s
    hw, report = calibration.fit_profile(meas, base)
    assert hw.op_mem_efficiency == pytest.approx(0.3, abs=1e-9)
    assert hw.host_dispatch_mixed_s == pytest.approx(6e-6, abs=1e-12)
    eager_rows = [r for r in report["rows"] if r["section"].startswith("sparq eager")]
    assert eager_rows and max(abs(r["error"]) for r in eager_rows) < 1e-9


def test_calibration_arguments_are_checked():
    with pytest.raises(TypeError, match=r"^meas: expected"):
        calibration.fit_profile([], gpu())
    with pytest.raises(TypeError, match=r"^base: expected"):
        calibration.fit_profile({}, "h200-sxm")


def test_dense_predictions_take_each_points_own_shape():
    # two head counts on the grid: each point is predicted with its own heads and head_dim
    # (not the first row's); the times come from the documented formula, so every error is 0
    meas = synthetic_measurements()
    for r in meas["dense"]:
        if r["batch"] >= 8:
            r["heads"], r["head_dim"] = 16, 64
            t = TRUE["t0"] + dense_bytes(r["batch"], 16, r["seq_len"], 64) / (TRUE["eta"] * PEAK)
            r.update(default_device_s=t, cudnn_device_s=t * 1.01, flash_device_s=t * 1.3)
    hw, report = calibration.fit_profile(meas, gpu(mem_bandwidth_bytes_per_s=PEAK))
    assert hw.mem_efficiency == pytest.approx(TRUE["eta"], rel=1e-6)
    rows = [r for r in report["rows"] if r["section"].startswith("dense fused")]
    assert len(rows) == 20 and max(abs(r["error"]) for r in rows) < 1e-6


def test_dense_predictions_stream_from_memory_as_measured():
    # a base profile with an on-chip bandwidth and a large on-chip memory (no l2_bytes in
    # the file to replace it): the fit is on L2-defeated device times, so the reported
    # predictions must not price the small points as resident
    meas = synthetic_measurements()
    del meas["l2_bytes"]
    base = gpu(mem_bandwidth_bytes_per_s=PEAK, onchip_bandwidth_bytes_per_s=20e12,
               onchip_bytes=1e9)  # fmt: skip
    _, report = calibration.fit_profile(meas, base)
    rows = [r for r in report["rows"] if r["section"].startswith("dense fused")]
    assert max(abs(r["error"]) for r in rows) < 1e-6


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda m: m["dense"][0].update(default_device_s=0.0),
         r"^meas\['dense'\]\[0\]\['default_device_s'\]: expected > 0, got 0\.0"),
        (lambda m: m["topk"][3].update(time_s=float("nan")),
         r"^meas\['topk'\]\[3\]\['time_s'\]: expected finite"),
        (lambda m: m["sparq"][2].update(twice_wall_s=-1e-6),
         r"^meas\['sparq'\]\[2\]\['twice_wall_s'\]: expected > 0"),
        (lambda m: m["sparq"][1].pop("heads"), r"^meas\['sparq'\]\[1\]: expected a key 'heads'"),
        (lambda m: m["dense"][0].update(batch=0), r"^meas\['dense'\]\[0\]\['batch'\]"),
        (lambda m: m["host_ops"]["add"].update(host_s=0), r"^meas\['host_ops'\]\['add'\]"),
        (lambda m: m.update(dtype="float64"), r"^meas\['dtype'\]: expected one of"),
        (lambda m: m.update(dense={"batch": 1}), r"^meas\['dense'\]: expected a list"),
    ],
)  # fmt: skip
def test_measurements_that_would_divide_by_zero_are_refused(edit, pattern):
    meas = synthetic_measurements()
    edit(meas)
    with pytest.raises(ValueError, match=pattern):
        calibration.fit_profile(meas, gpu(mem_bandwidth_bytes_per_s=PEAK))


def test_topk_bytes_use_the_files_dtype_size():
    # "fp32" is float32 (4 bytes) to the byte models; the top-k fit must count 4 bytes too
    topk = [dict(rows=R, n=n, k=128, time_s=10e-6 + R * (n * 4 + 8 * 128) / 3e11)
            for R in (32, 512, 2048) for n in (1024, 4096, 16384)]  # fmt: skip
    hw, _ = calibration.fit_profile(dict(dtype="fp32", topk=topk), gpu())
    assert hw.topk_bytes_per_s == pytest.approx(3e11, rel=1e-9)
    assert hw.topk_latency_s == pytest.approx(10e-6, rel=1e-9)


def test_line_fit_refuses_times_it_would_divide_by():
    with pytest.raises(ValueError, match=r"^y: expected positive finite"):
        calibration.fit_line_relative([1.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValueError, match=r"^x: expected finite"):
        calibration.fit_line_relative([1.0, float("inf")], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"^x, y: expected"):
        calibration.fit_line_relative([1.0, 2.0, 3.0], [1.0, 2.0])


def test_a_grid_whose_fitted_half_is_empty_is_refused():
    # (batch, S) = (1, 4096), (4, 1024), (16, 4096), (64, 1024): index sums 1, 1, 3, 3, so
    # the checkerboard fits on nothing; a grid search would return its first value
    meas = synthetic_measurements()
    keep = {(1, 4096), (4, 1024), (16, 4096), (64, 1024)}
    meas["sparq"] = [r for r in meas["sparq"] if (r["batch"], r["seq_len"]) in keep]
    with pytest.raises(ValueError, match=r"^meas\['sparq'\]: expected at least 2 points"):
        calibration.fit_profile(meas, gpu(mem_bandwidth_bytes_per_s=PEAK))
    assert calibration.checkerboard([1, 4, 16, 64], [1024, 4096], 1, 4096) is False


def test_fits_at_the_end_of_their_grid_and_a_clipped_sync_are_noted():
    meas = synthetic_measurements()
    base = gpu(mem_bandwidth_bytes_per_s=PEAK)
    hw0, report0 = calibration.fit_profile(meas, base)
    assert not [k for k in report0["params"] if k.endswith("_note")]
    truth = hw0.replace(op_mem_efficiency=0.3, host_dispatch_mixed_s=80e-6)  # past 50 us
    for r in meas["sparq"]:
        kw = dict(hardware=truth, batch=r["batch"], n_heads=32, seq_len=r["seq_len"],
                  head_dim=128, r=32, k=128, implementation="eager")  # fmt: skip
        r["twice_device_s"] = estimate_attention("sparq", **kw).params["device_s"]
        r["twice_wall_s"] = estimate_attention("sparq", **kw).time_s
    # round trip shorter than the add's dispatch + device time (9 + 1.5 us)
    meas["host_sync"]["tiny_op_round_trip_s"] = 8e-6
    hw, report = calibration.fit_profile(meas, base)
    assert hw.host_dispatch_mixed_s == pytest.approx(50e-6)
    assert "end of the search grid" in report["params"]["host_dispatch_mixed_s_note"]
    assert "op_mem_efficiency_note" not in report["params"]
    assert hw.sync_latency_s == 0.0
    assert "-2.5e-06 s < 0" in report["params"]["sync_latency_s_note"]
    assert "- host_dispatch_mixed_s_note = " in calibration.report_markdown(report)


def test_eager_ops_checks_the_shape_it_is_given():
    from costmodel.eager import eager_ops
    from costmodel.traffic import attention_traffic

    tr = attention_traffic("sparq", batch=1, n_heads=8, n_kv_heads=8, seq_len=1024,
                           head_dim=128, r=16, k=64)  # fmt: skip
    kw = dict(batch=1, n_heads=8, n_kv_heads=8, seq_len=1024, head_dim=128, r=16, k=64,
              gqa_selection="shared", transaction_bytes=32, n_layers=1)  # fmt: skip
    assert len(eager_ops(tr, **kw)) == SPARQ_KERNEL_OPS + 7
    for change, exc, pattern in (
        (dict(n_layers=0), ValueError, r"^n_layers: expected an int >= 1, got 0"),
        (dict(gqa_selection="perhead"), ValueError, r"^gqa_selection: expected"),
        (dict(n_heads=12), ValueError, r"^n_heads: expected a multiple of n_kv_heads"),
        (dict(k=None), TypeError, r"^k: expected an int"),
    ):
        with pytest.raises(exc, match=pattern):
            eager_ops(tr, **{**kw, **change})
    with pytest.raises(TypeError, match=r"^traffic: expected a Traffic"):
        eager_ops(None, **kw)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(max_seconds=0), ValueError, r"^max_seconds: expected a positive"),
        (dict(max_seconds=float("nan")), ValueError, r"^max_seconds: expected a positive"),
        (dict(max_seconds="60"), TypeError, r"^max_seconds: expected a number"),
        (dict(quick="yes"), TypeError, r"^quick: expected a bool"),
        (dict(device=0), TypeError, r"^device: expected a string"),
        (dict(out=3), TypeError, r"^out: expected a path"),
        (dict(log=None), TypeError, r"^log: expected a callable"),
    ],
)
def test_measure_checks_its_arguments_before_importing_torch(kwargs, exc, pattern):
    from costmodel import _calibrate

    with pytest.raises(exc, match=pattern):
        _calibrate.measure(**kwargs)


def test_device_timer_per_call_time_and_why_it_fell_back():
    # a stand-in for torch whose CUDA graph capture fails and whose events read 2 ms: the
    # timer says why it fell back, and 2 ms over n = 10 calls is 2e-4 s per call
    from types import SimpleNamespace

    from costmodel._calibrate import _Timer

    class Event:
        def __init__(self, enable_timing):
            assert enable_timing

        def record(self):
            pass

        def elapsed_time(self, other):
            return 2.0  # ms

    def no_graphs():
        raise RuntimeError("capture not supported")

    cuda = SimpleNamespace(Stream=no_graphs, synchronize=lambda: None, Event=Event)
    timer = _Timer(SimpleNamespace(cuda=cuda), SimpleNamespace(type="cuda"))
    calls = []
    t, how = timer.device_time(calls.append, n=10, reps=3)
    assert t == pytest.approx(2e-4, rel=1e-12)
    assert how == "events around an eager loop (CUDA graph failed: RuntimeError)"
    assert len(calls) == 1 + 3 * 10


# ------------------------------------------------------------------------ CLI
def test_cli_calibrate_from_measurements(tmp_path, capsys):
    src = tmp_path / "m.json"
    src.write_text(json.dumps(synthetic_measurements()), encoding="utf-8")
    base = tmp_path / "base.toml"
    base.write_text(hardware_to_toml(gpu(mem_bandwidth_bytes_per_s=PEAK)), encoding="utf-8")
    out = tmp_path / "p.toml"
    report = str(tmp_path / "r.md")
    rc = main(["hardware", "calibrate", "--from-measurements", str(src), "--base", str(base),
               "--name", "mine", "--out", str(out), "--report", report])  # fmt: skip
    assert rc == 0
    hw = load_hardware(out)
    assert hw.name == "mine" and hw.mem_efficiency == pytest.approx(TRUE["eta"], rel=1e-6)
    assert "| dense fused (device time) | fitted |" in capsys.readouterr().out
    assert (tmp_path / "r.md").is_file()


def test_cli_calibrate_errors(tmp_path, capsys):
    rc = main(["hardware", "calibrate", "--from-measurements", str(tmp_path / "none.json"),
               "--out", str(tmp_path / "p.toml")])  # fmt: skip
    assert rc == 2 and "--from-measurements: no such file" in capsys.readouterr().err
    rc = main(["hardware", "calibrate", "--from-measurements", "x.json",
               "--out", str(tmp_path / "no" / "p.toml")])  # fmt: skip
    assert rc == 2 and "--out: directory" in capsys.readouterr().err


def test_cli_estimate_implementation(capsys):
    args = ["estimate", "--hardware", "h200-sxm", "--batch", "1", "--seq-lens", "4096"]
    assert main(args + ["--implementation", "eager", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["implementation"] == "eager"
    assert main(args + ["--json"]) == 0
    fused = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["sparq_attn_time_s"] > fused[0]["sparq_attn_time_s"]
    assert main(args + ["--implementation", "eager", "--ideal"]) == 2
    assert "ideal: does not apply" in capsys.readouterr().err
    assert main(["estimate", "--hardware", "tpu-v4", "--implementation", "eager"]) == 2
    assert "host_dispatch_s" in capsys.readouterr().err


def test_shipped_h200_measurements_match_docs_and_refit_to_the_profile():
    # docs/data holds the raw runs; the package ships identical copies, and refitting the
    # shipped run reproduces every number of the shipped h200-sxm profile
    from importlib import resources
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name in ("h200_calibration.json", "h200_calibration_run1.json"):
        docs = json.loads((root / "docs" / "data" / name).read_text(encoding="utf-8"))
        pkg = json.loads((resources.files("costmodel.data") / name).read_text(encoding="utf-8"))
        assert docs == pkg, name
    meas = json.loads((root / "docs" / "data" / "h200_calibration.json").read_text("utf-8"))
    shipped = load_hardware("h200-sxm")
    base = shipped.replace(mem_efficiency=0.8, kernel_latency_s=1e-5)
    refit, _ = calibration.fit_profile(meas, base, name="h200-sxm")
    for key in ("mem_efficiency", "kernel_latency_s", "topk_bytes_per_s", "topk_latency_s",
                "host_dispatch_s", "host_dispatch_mixed_s", "sync_latency_s",
                "op_mem_efficiency", "program_bandwidth_bytes_per_s"):  # fmt: skip
        assert getattr(refit, key) == pytest.approx(getattr(shipped, key), rel=1e-12), key
