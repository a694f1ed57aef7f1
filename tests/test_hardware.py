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
# vendor datasheet figures (docs/costmodel.md section 5): bandwidth in bytes/s (lower and
# upper of the figures quoted) and dense fp16/bf16 FLOP/s (None where no vendor figure is given)
DATASHEET_FIGURES = {
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


def test_every_listed_device_has_a_profile():
    assert set(DATASHEET_FIGURES) <= set(list_hardware())


@pytest.mark.parametrize("name", sorted(DATASHEET_FIGURES))
def test_profile_loads_and_matches_datasheet_figures(name):
    hw = load_hardware(name)
    (lo, hi), flops = DATASHEET_FIGURES[name]
    # the IPU's table column is its on-chip SRAM; its main memory is streaming memory
    bw = hw.onchip_bandwidth_bytes_per_s if hw.kind == "ipu" else hw.mem_bandwidth_bytes_per_s
    assert lo * 0.995 <= bw <= hi * 1.005
    if flops is not None:
        flo, fhi = flops if isinstance(flops, tuple) else (flops, flops)
        assert flo * 0.995 <= hw.peak_flops_fp16 <= fhi * 1.005


@pytest.mark.parametrize("name", list_hardware())
def test_profile_plausible(name):
    hw = load_hardware(name)
    assert hw.name == name
    if hw.kind == "ipu":  # streaming memory behind a PCIe Gen4 x8 link; SRAM on chip
        assert 1e10 <= hw.mem_bandwidth_bytes_per_s <= 1e11
        assert 1e13 <= hw.onchip_bandwidth_bytes_per_s <= 1e14
    else:
        assert 1e11 <= hw.mem_bandwidth_bytes_per_s <= 1e14
    assert 1e12 <= hw.peak_flops_fp16 <= 1e16
    assert hw.peak_flops_fp16 >= hw.peak_flops_fp32
    assert 1e8 <= hw.mem_capacity_bytes <= 1e13
    assert 0.3 <= hw.mem_efficiency <= 1.0 and 0.3 <= hw.flop_efficiency <= 1.0
    assert 0 < hw.kernel_latency_s <= 1e-4
    assert hw.mem_transaction_bytes in (8, 16, 32, 64, 128, 256)
    # top-k reads scores where the kernels keep them (on chip for the IPU)
    fast = hw.onchip_bandwidth_bytes_per_s if hw.kind == "ipu" else hw.mem_bandwidth_bytes_per_s
    assert hw.topk_bytes_per_s < fast
    ridge = hw.peak_flops_fp16 / fast
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


# ------------------------------------------------ one validation: file, spec, replace
SPEC = dict(bandwidth_bytes_per_s=3.35e12, peak_flops_fp16=9.89e14)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(bandwidth_bytes_per_s=True), TypeError, r"^bandwidth_bytes_per_s .*number.*True"),
        (dict(bandwidth_bytes_per_s="3e12"), TypeError, r"^bandwidth_bytes_per_s .*number"),
        (dict(bandwidth_bytes_per_s=float("nan")), ValueError, "bandwidth_bytes_per_s.*finite"),
        (dict(peak_flops_fp16=float("inf")), ValueError, r"^peak_flops_fp16: expected finite"),
        (dict(mem_transaction_bytes=32.9), ValueError, r"^mem_transaction_bytes: .*integer"),
        (dict(mem_transaction_bytes=48), ValueError, "mem_transaction_bytes: .*power of two"),
        (dict(mem_transaction_bytes=True), TypeError, r"^mem_transaction_bytes: .*number"),
        (dict(peak_flops_fp32=2.1 * 9.89e14), ValueError, r"^peak_flops_fp16: .*half of"),
        (dict(mem_efficiency=1.5), ValueError, r"^mem_efficiency: expected <= 1"),
        (dict(mem_efficiency=1e-9), ValueError, r"^mem_efficiency: expected >= 0.001"),
        (dict(kernel_latency_s=-1e-6), ValueError, r"^kernel_latency_s: expected >= 0"),
        (dict(topk_bytes_per_s=10**400), ValueError, r"^topk_bytes_per_s: expected <= "),
        (dict(name=123), TypeError, r"^name: expected a non-empty string"),
        (dict(name="  "), ValueError, r"^name: expected a non-empty string"),
        (dict(name="\ud800"), ValueError, r"^name: expected valid Unicode"),
        # a default derived from a tiny given number is checked too, and says so
        (
            dict(peak_flops_fp16=1.5e6),
            ValueError,
            r"^peak_flops_fp32 \(default peak_flops_fp16 / 2\): expected >= 1e\+06",
        ),
    ],
)
def test_spec_validated_as_a_profile_file(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        hardware_from_spec(**{**SPEC, **kwargs})


def test_spec_integral_float_is_an_int_as_in_a_file():
    hw = hardware_from_spec(**SPEC, mem_transaction_bytes=64.0)
    assert hw.mem_transaction_bytes == 64 and isinstance(hw.mem_transaction_bytes, int)


@pytest.mark.parametrize(
    ("changes", "exc", "match"),
    [
        (dict(mem_transaction_bytes=3), ValueError, "mem_transaction_bytes: .*power of two"),
        (dict(mem_transaction_bytes=32.5), ValueError, "mem_transaction_bytes: .*integer"),
        (dict(peak_flops_fp32=3e15), ValueError, "peak_flops_fp16: .*half of peak_flops_fp32"),
        (dict(mem_bandwidth_bytes_per_s=False), TypeError, "mem_bandwidth_bytes_per_s: .*number"),
        (dict(mem_efficiency=None), TypeError, "mem_efficiency: expected a number, got None"),
        (dict(threads=2.5), ValueError, "threads: expected an integer"),
        (dict(kind="toaster"), ValueError, "kind: expected one of"),
        (dict(name=""), ValueError, "name: expected a non-empty string"),
        (dict(sources={"bogus": ("x", "2024-01-01")}), ValueError, "sources: expected keys"),
        (
            dict(sources={"threads": ("x", "2024-02-30")}),
            ValueError,
            r"sources\['threads'\] retrieved: expected a valid date",
        ),
        (dict(bogus=1), TypeError, "bogus"),
    ],
)
def test_replace_validated_as_a_profile_file(changes, exc, match):
    hw = load_hardware("h100-sxm")
    with pytest.raises(exc, match=match):
        hw.replace(**changes)


def test_replace_and_construction_normalise_like_the_file():
    hw = load_hardware("h100-sxm").replace(mem_transaction_bytes=64.0, mem_efficiency=1)
    assert hw.mem_transaction_bytes == 64 and isinstance(hw.mem_transaction_bytes, int)
    assert isinstance(hw.mem_efficiency, float)
    assert parse_hardware(hardware_to_toml(hw), "x") == hw


def test_file_applies_the_same_rules(tmp_path):
    # the same rule table as the API: bool is not a number, the plausibility floor
    for old, new, match in [
        ("mem_bandwidth_bytes_per_s = 3.35e12", "mem_bandwidth_bytes_per_s = true", "number"),
        ("mem_efficiency = 0.92", "mem_efficiency = 1e-6", "mem_efficiency.*>= 0.001"),
        ("peak_flops_fp32 = 67e12", "peak_flops_fp32 = 2e15", "peak_flops_fp16.*half of"),
    ]:
        assert old in GOOD, old
        with pytest.raises(ValueError, match=match) as info:
            parse_hardware(GOOD.replace(old, new), "edited.toml")
        assert str(info.value).startswith("edited.toml: key '")


def test_peak_flops_takes_dtype_names_and_aliases():
    hw = load_hardware("h100-sxm")
    assert hw.peak_flops("fp32") == hw.peak_flops("float32") == hw.peak_flops_fp32
    assert hw.peak_flops("bf16") == hw.peak_flops_fp16
    with pytest.raises(ValueError, match="dtype: expected one of"):
        hw.peak_flops("banana")
    with pytest.raises(TypeError, match="dtype: expected a string"):
        hw.peak_flops(None)


# ---------------------------------------------------------------- TOML round trip of text
@pytest.mark.parametrize(
    "text",
    [
        'quote " inside',
        "back\\slash \\n literally",
        "new\nline and\ttab\r\n",
        "control \x00\x01\x1f\x7f chars",
        "unicode é ü 日本 😀",
        '"""triple"""',
        "trailing backslash \\",
    ],
)
def test_toml_round_trip_of_any_name_and_source(text):
    hw = hardware_from_spec(**SPEC, name=text)
    hw = hw.replace(description=text, sources={**hw.sources, "onchip_bytes": (text, "2024-02-29")})
    back = parse_hardware(hardware_to_toml(hw), "x")
    assert back == hw
    assert (back.name, back.description) == (text, text)
    assert back.sources["onchip_bytes"] == (text, "2024-02-29")


def test_hardware_to_toml_needs_a_profile():
    with pytest.raises(TypeError, match="hw: expected a Hardware"):
        hardware_to_toml({"name": "x"})


# -------------------------------------------------------------- dates, nesting, files
@pytest.mark.parametrize(
    "date", ['"2026-13-45"', '"2023-02-29"', '"0000-01-01"', '"2026-1-01"', "20260101",
             '"2026-01-01\\n"', "2026-01-01T00:00:00"],
)  # fmt: skip
def test_profile_rejects_invalid_retrieved_dates(date):
    # the file is otherwise valid: the bad date replaces the first [sources.*] table's
    start = GOOD.index("retrieved = ")
    end = GOOD.index("\n", start)
    text = GOOD[:start] + f"retrieved = {date}" + GOOD[end:]
    with pytest.raises(ValueError, match=r"bad\.toml: 'sources\.\w+\.retrieved': expected"):
        parse_hardware(text, "bad.toml")


def test_profile_accepts_a_toml_date_literal():
    start = GOOD.index("retrieved = ")
    end = GOOD.index("\n", start)
    hw = parse_hardware(GOOD[:start] + "retrieved = 2024-02-29" + GOOD[end:], "x")
    assert "2024-02-29" in {d for _, d in hw.sources.values()}


@pytest.mark.parametrize(
    "nested",
    ["[" * 5000 + "]" * 5000, "{a = " * 5000 + "1" + "}" * 5000],
)
def test_deeply_nested_toml_is_a_value_error_naming_the_file(tmp_path, nested):
    p = tmp_path / "deep.toml"
    p.write_text(GOOD + f"\ndeep = {nested}\n")
    with pytest.raises(ValueError, match=r"deep\.toml: .*nested too deeply"):
        load_hardware(str(p))


def test_load_hardware_bad_names_and_paths(tmp_path):
    from costmodel._tomlio import DataFileNotFoundError

    with pytest.raises(TypeError, match="name_or_path: expected a hardware profile name"):
        load_hardware(3)
    with pytest.raises(TypeError, match="name_or_path"):
        load_hardware(b"h100-sxm")
    with pytest.raises(ValueError, match="name_or_path: unknown hardware ''"):
        load_hardware("")
    # a missing file is a FileNotFoundError and, like every bad argument, a ValueError
    with pytest.raises(DataFileNotFoundError) as info:
        load_hardware("/nonexistent/p.toml")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="file not found"):
        load_hardware("nul\x00.toml")
    with pytest.raises(ValueError, match="name_or_path: cannot read hardware profile file"):
        load_hardware("x" * 5000 + ".toml")  # ENAMETOOLONG is an OSError, not a traceback
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (1 << 20) + "\n" + GOOD)
    with pytest.raises(ValueError, match="expected at most 1048576 bytes"):
        load_hardware(str(big))
    latin = tmp_path / "latin.toml"
    latin.write_bytes(GOOD.encode() + b"\n# caf\xe9\n")
    with pytest.raises(ValueError, match=r"latin\.toml: not UTF-8"):
        load_hardware(str(latin))
    with pytest.raises(ValueError, match="file not found"):
        load_hardware(str(tmp_path))  # a directory is no profile file
    with pytest.raises(TypeError, match="text: expected a str"):
        parse_hardware(GOOD.encode(), "x")


# --------------------------------------------------------------------- measure_host limits
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(seconds=float("inf")), ValueError, "^seconds: expected finite"),
        (dict(seconds=float("nan")), ValueError, "^seconds: expected finite"),
        (dict(seconds=1e9), ValueError, r"^seconds: expected <= 60"),
        (dict(seconds=0), ValueError, "^seconds: expected > 0"),
        (dict(seconds=-1.0), ValueError, "^seconds: expected > 0"),
        (dict(seconds="1"), TypeError, "^seconds: expected a number"),
        (dict(seconds=True), TypeError, "^seconds: expected a number"),
        (dict(nbytes=2**40), ValueError, r"^nbytes: expected an int <= min\(16 GiB"),
        (dict(nbytes=2**20), ValueError, "^nbytes: expected an int >= 8388608"),
        (dict(nbytes=-1), ValueError, "^nbytes: expected an int >= "),
        (dict(nbytes=64 * 2**20 + 1), ValueError, "^nbytes: expected a multiple of 4"),
        (dict(nbytes=6.4e7), TypeError, "^nbytes: expected an int"),
        (dict(nbytes=None), TypeError, "^nbytes: expected an int"),
    ],
)
def test_measure_host_limits_checked_up_front(monkeypatch, kwargs, exc, match):
    import numpy as np

    def no_alloc(*a, **k):  # nothing may be allocated or measured before the checks
        raise AssertionError("allocated before checking the arguments")

    monkeypatch.setattr(np, "ones", no_alloc)
    with pytest.raises(exc, match=match):
        measure_host(**kwargs)


def test_measure_max_bytes_is_bounded_by_memory(monkeypatch):
    from costmodel import hardware as hwmod

    assert hwmod.measure_max_bytes() <= 16 * 2**30
    monkeypatch.setattr(hwmod, "_total_memory_bytes", lambda: 4 * 2**30)
    assert hwmod.measure_max_bytes() == 2 * 2**30
    monkeypatch.setattr(hwmod, "_total_memory_bytes", lambda: 1)  # unknown
    assert hwmod.measure_max_bytes() == 16 * 2**30
