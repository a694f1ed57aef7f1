"""Tests of costmodel.hardware: shipped profiles, the strict loader, ad-hoc specs, measure_host.

Sources: "paper" = Ribar et al., SparQ Attention, ICML 2024 (arXiv 2312.04985v6); "blog" =
the authors' blog post on SparQ (Llama 2 7B on A100 latency table); "H100 run" = this repo's
benchmarks/gpu_decode_attention.py on an NVIDIA H100 80GB HBM3 (SXM), stored in
docs/costmodel_h100_measurements.json. Hand calculations are written out in the tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from costmodel.hardware import (
    hardware_from_spec,
    hardware_to_toml,
    list_hardware,
    load_hardware,
    measure_host,
    parse_hardware,
)

ROOT = Path(__file__).resolve().parents[1]


# -------------------------------------------------------------------------- profiles
# spec costmodel.md hardware table: bandwidth in bytes/s (lower and upper of the figures
# it lists) and dense fp16/bf16 FLOP/s (None where the table gives none)
SPEC_TABLE = {
    "a100-40gb-sxm": ((1.555e12, 1.6e12), 312e12),
    "a100-80gb-sxm": ((2.0e12, 2.039e12), 312e12),
    "h100-sxm": ((3.072e12, 3.4e12), 989e12),
    "h100-pcie": ((2.0e12, 2.048e12), 756e12),
    "h200-sxm": ((4.8e12, 4.8e12), 989e12),
    "b200": ((7.7e12, 9e12), 2250e12),
    "l4": ((300e9, 300e9), 121e12),
    "l40s": ((864e9, 864e9), 362e12),
    "a10g": ((600e9, 600e9), (70e12, 125e12)),
    "rtx-4090": ((1008e9, 1008e9), 165e12),
    "mi250x": ((3.28e12, 3.28e12), 383e12),
    "mi300x": ((5.3e12, 5.3e12), 1307e12),
    "mi325x": ((6.0e12, 6.0e12), 1307e12),
    "tpu-v4": ((1.2e12, 1.228e12), 275e12),
    "tpu-v5e": ((0.81e12, 0.82e12), 197e12),
    "tpu-v5p": ((2.5e12, 2.8e12), 459e12),
    "tpu-v6e": ((1.6e12, 1.64e12), 918e12),
    "gaudi2": ((2.46e12, 2.46e12), 432e12),
    "gaudi3": ((3.7e12, 3.7e12), (1677e12, 1835e12)),
    "ipu-bow": ((47.5e12, 65e12), (250e12, 350e12)),
    "apple-m2-ultra": ((800e9, 800e9), None),
    "apple-m4-max": ((546e9, 546e9), None),
    "xeon-8480": ((307e9, 307.2e9), None),
    "epyc-9654": ((460.8e9, 461e9), None),
    "epyc-7763": ((204.8e9, 205e9), None),
}


def test_every_spec_device_has_a_profile():
    assert set(SPEC_TABLE) <= set(list_hardware())


@pytest.mark.parametrize("name", sorted(SPEC_TABLE))
def test_profile_loads_and_matches_spec_table(name):
    hw = load_hardware(name)
    (lo, hi), flops = SPEC_TABLE[name]
    assert lo * 0.995 <= hw.mem_bandwidth_bytes_per_s <= hi * 1.005
    if flops is not None:
        flo, fhi = flops if isinstance(flops, tuple) else (flops, flops)
        assert flo * 0.995 <= hw.peak_flops_fp16 <= fhi * 1.005


@pytest.mark.parametrize("name", list_hardware())
def test_profile_plausible(name):
    hw = load_hardware(name)
    assert hw.name == name
    assert 1e11 <= hw.mem_bandwidth_bytes_per_s <= 1e14
    assert 1e12 <= hw.peak_flops_fp16 <= 1e16
    assert hw.peak_flops_fp16 >= hw.peak_flops_fp32
    assert 1e8 <= hw.mem_capacity_bytes <= 1e13
    assert 0.3 <= hw.mem_efficiency <= 1.0 and 0.3 <= hw.flop_efficiency <= 1.0
    assert 0 < hw.kernel_latency_s <= 1e-4
    assert hw.mem_transaction_bytes in (8, 16, 32, 64, 128, 256)
    assert hw.topk_bytes_per_s < hw.mem_bandwidth_bytes_per_s
    ridge = hw.peak_flops_fp16 / hw.mem_bandwidth_bytes_per_s
    assert 1 <= ridge <= 2000
    # every number carries a source and a retrieval date
    numeric = [
        f
        for f in hw.__dataclass_fields__
        if f not in ("name", "description", "kind", "sources", "origin")
    ]
    for f in numeric:
        if getattr(hw, f) is not None:
            src, date = hw.sources[f]
            assert src and len(date) == 10


GOOD = (ROOT / "costmodel" / "profiles" / "h100-sxm.toml").read_text()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t + "\nbogus_key = 3\n", "unknown key.*bogus_key"),
        (lambda t: t.replace("mem_efficiency = 0.92\n", ""), "missing.*mem_efficiency"),
        (
            lambda t: t.replace(
                "mem_bandwidth_bytes_per_s = 3.35e12", "mem_bandwidth_bytes_per_s = -3.35e12"
            ),
            "mem_bandwidth_bytes_per_s.*> 0",
        ),
        (
            lambda t: t.replace("mem_efficiency = 0.92", "mem_efficiency = 1.5"),
            "mem_efficiency.*<= 1",
        ),
        (
            lambda t: t.replace("mem_transaction_bytes = 32", "mem_transaction_bytes = 48"),
            "power of two",
        ),
        (lambda t: t.replace('kind = "gpu"', 'kind = "toaster"'), "kind"),
        (
            lambda t: t.replace("peak_flops_fp16 = 989e12", 'peak_flops_fp16 = "fast"'),
            "peak_flops_fp16.*number",
        ),
        (lambda t: t.replace("[sources.topk_bytes_per_s]", "[sources.nothing]"), "sources"),
        (lambda t: t + "\n[[[broken\n", "TOML"),
    ],
)
def test_profile_loader_rejects_bad_files(tmp_path, edit, match):
    p = tmp_path / "bad.toml"
    p.write_text(edit(GOOD))
    with pytest.raises(ValueError, match=match) as info:
        load_hardware(str(p))
    assert "bad.toml" in str(info.value)  # the file is named


def test_user_profile_by_path_and_round_trip(tmp_path):
    hw = load_hardware("a10g")
    p = tmp_path / "mine.toml"
    p.write_text(hardware_to_toml(hw))
    back = load_hardware(str(p))
    assert back == hw
    assert parse_hardware(hardware_to_toml(hw), "x") == hw


def test_adhoc_spec():
    hw = hardware_from_spec(bandwidth_bytes_per_s=3.35e12, peak_flops_fp16=9.89e14)
    assert hw.mem_efficiency == 0.8 and hw.kernel_latency_s == 1e-5
    assert hw.peak_flops_fp32 == pytest.approx(9.89e14 / 2)
    with pytest.raises(ValueError, match="mem_bandwidth_bytes_per_s"):
        hardware_from_spec(bandwidth_bytes_per_s=-1, peak_flops_fp16=1e12)


def test_measure_host_is_quick_and_plausible():
    hw = measure_host(seconds=0.3, nbytes=64 * 2**20)
    assert hw.kind == "cpu"
    assert 1e8 < hw.mem_bandwidth_bytes_per_s < 1e13
    assert hw.peak_flops_fp32 > 1e7
    assert parse_hardware(hardware_to_toml(hw), "measured") == hw
