"""``sparq estimate`` outputs record their settings: table header, JSON ``settings`` and
``version``, ``--csv``, and output paths checked before any work.

Expected profile values are read from the shipped TOML file with ``tomllib`` (not through
the package's loader); the version from ``importlib.metadata``.
"""

from __future__ import annotations

import csv
import json
import sys
from importlib import metadata, resources

import pytest

from sparq_cli import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

SMALL = ["--batch", "1", "--seq-lens", "4096"]


def _profile_toml(name):
    text = (resources.files("costmodel.profiles") / f"{name}.toml").read_text()
    return tomllib.loads(text)


def _run(capsys, argv):
    rc = main(["estimate", *argv])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return cap.out


def _json(capsys, argv):
    return json.loads(_run(capsys, [*argv, "--json"]))


def test_header_lists_the_profile_values_used(capsys):
    raw = _profile_toml("h100-sxm")
    out = _run(capsys, SMALL)
    head = out.splitlines()[:2]
    assert f"eta_mem {raw['mem_efficiency']:.3g}," in head[0]
    assert f"t0 {raw['kernel_latency_s'] * 1e6:.3g} us" in head[0]
    assert f"top-k exact {raw['topk_bytes_per_s'] / 1e9:.3g} GB/s" in head[0]
    assert "K stored twice" in head[1] and "GQA selection shared" in head[1]
    assert "implementation fused" in head[1]


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (["--ideal"], "--ideal: eta_mem 1, eta_flop 1, t0 0, top-k free"),
        (["--topk", "none"], "top-k free (--topk none)"),
        (["--topk", "bucketed"], "top-k bucketed 1.1e+03 GB/s"),  # 200 GB/s x 5.5
        (["--store-k-once"], "K stored once"),
        (["--gqa-selection", "per_head"], "GQA selection per_head"),
        (["--weight-bytes", "1.0625"], "1.0625 bytes/weight"),
        (["--k-divisor", "8"], "k=S/8 (floor)"),
    ],
)
def test_each_setting_changes_the_header(capsys, flag, expected):
    default = "\n".join(_run(capsys, SMALL).splitlines()[:2])
    changed = "\n".join(_run(capsys, [*SMALL, *flag]).splitlines()[:2])
    assert changed != default
    assert expected in changed, changed
    if flag == ["--ideal"]:
        assert "eta_mem 0.92" not in changed


def test_json_settings_and_version(capsys):
    data = _json(capsys, SMALL)
    assert data["version"] == metadata.version("sparq-reference")
    st = data["settings"]
    raw = _profile_toml("h100-sxm")
    assert st["profile"]["name"] == "h100-sxm"
    assert st["profile"]["mem_efficiency"] == raw["mem_efficiency"]
    assert st["profile"]["kernel_latency_s"] == raw["kernel_latency_s"]
    assert st["profile"]["topk_bytes_per_s"] == raw["topk_bytes_per_s"]
    assert st["profile"]["topk_latency_s"] == raw["topk_latency_s"]
    assert st["profile"]["peak_flops"] == raw["peak_flops_fp16"]
    expected = {
        "model": "llama-2-7b",
        "dtype": "float16",
        "r": 16,
        "k_rule": "floor(S / 16)",
        "store_k_twice": True,
        "topk": "exact",
        "gqa_selection": "shared",
        "ideal": False,
        "implementation": "fused",
    }
    assert {k: st[k] for k in expected} == expected


def test_json_ideal_records_the_values_used(capsys):
    st = _json(capsys, [*SMALL, "--ideal"])["settings"]
    assert st["ideal"] is True and st["topk"] == "none"
    assert st["profile"]["mem_efficiency"] == 1.0
    assert st["profile"]["kernel_latency_s"] == 0.0
    assert st["profile"]["topk_bytes_per_s"] is None


def test_two_settings_are_told_apart(capsys):
    a = _json(capsys, SMALL)
    b = _json(capsys, [*SMALL, "--store-k-once", "--topk", "bucketed"])
    assert a["settings"] != b["settings"]
    assert a["rows"][0]["store_k_twice"] is True and b["rows"][0]["store_k_twice"] is False
    assert b["rows"][0]["topk"] == "bucketed"


def test_csv_has_the_json_rows(capsys, tmp_path):
    path = tmp_path / "rows.csv"
    argv = ["--batch", "1,8", "--seq-lens", "4096,8192"]
    data = _json(capsys, argv)
    _run(capsys, [*argv, "--csv", str(path)])
    with open(path, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert len(got) == len(data["rows"]) == 4
    assert list(got[0]) == list(data["rows"][0])
    for row, want in zip(got, data["rows"], strict=True):
        for key, value in want.items():
            if value is None:
                assert row[key] == ""
            elif isinstance(value, bool) or isinstance(value, str):
                assert row[key] == str(value)
            else:
                assert float(row[key]) == pytest.approx(value, rel=1e-15)


@pytest.mark.parametrize("flag", ["--csv", "--plot"])
def test_output_directory_checked_before_any_work(capsys, tmp_path, flag):
    missing = tmp_path / "nope" / "out.file"
    assert main(["estimate", flag, str(missing)]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.startswith(f"sparq estimate: error: {flag}: directory ")
    assert "does not exist" in cap.err


@pytest.mark.parametrize("command", ["estimate", "hardware"])
def test_every_flag_has_help(command):
    import argparse

    from sparq_cli.cli import build_parser

    parser = build_parser()
    top = next(a for a in parser._actions if a.dest == "command").choices[command]
    missing = []

    def walk(p, where):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    walk(sp, f"{where} {name}")
            elif a.option_strings and not a.help:
                missing.append((where, a.option_strings))

    walk(top, command)
    assert missing == []


def test_benchmarks_spell_repeat_one_way():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    spelled = {
        m
        for f in root.glob("*.py")
        for m in re.findall(r'add_argument\(\s*"(--repeats?)"', f.read_text())
    }
    assert spelled == {"--repeat"}


def test_request_csv_has_the_json_rows(capsys, tmp_path):
    path = tmp_path / "req.csv"
    argv = ["--prompt-len", "1024", "--gen-len", "4", "--batch", "1,2"]
    data = _json(capsys, argv)
    _run(capsys, [*argv, "--csv", str(path)])
    with open(path, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [list(r) for r in got] == [list(r) for r in data["rows"]]
    assert [float(r["request_speedup"]) for r in got] == pytest.approx(
        [r["request_speedup"] for r in data["rows"]], rel=1e-15
    )
