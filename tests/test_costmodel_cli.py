"""Smoke tests of ``sparq estimate`` and ``sparq hardware`` (in-process, via sparq_cli.cli).

Expected values: the documented defaults (docs/costmodel.md: Llama 2 7B on h100-sxm, r = d/8 = 16,
k = S/16, S 4k..128k, batch 1 and 64); the model's own outputs are only checked for shape
and for consistency with the library call they wrap.
"""

from __future__ import annotations

import json

import pytest

from costmodel.estimate import estimate_decode
from sparq_cli import main


def _json(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)


def test_estimate_defaults_json(capsys):
    data = _json(capsys, ["estimate", "--json"])
    assert data["hardware"] == "h100-sxm"
    rows = data["rows"]
    seqs = (4096, 8192, 16384, 32768, 65536)
    # batch 1, then at each S the largest batch whose weights + SparQ KV fit 80 GB: by hand,
    # (80e9 - 2 x 6,607,347,712 weight bytes) // (1.5 x 2 x 32 layers x 32 heads x S x 128
    # x 2 bytes) = 20, 10, 5, 2, 1 (the last is the batch-1 row already listed)
    assert [(r["batch"], r["seq_len"]) for r in rows] == [(1, s) for s in seqs] + [
        (20, 4096),
        (10, 8192),
        (5, 16384),
        (2, 32768),
    ]
    assert all(r["fits_in_memory"] for r in rows)
    for r in rows:
        assert r["model"] == "llama-2-7b"
        assert r["r"] == 16 and r["k"] == r["seq_len"] // 16
        assert r["dense_attn_bound"] in ("memory", "compute", "latency", "topk")
        assert r["sparq_attn_bytes"] < r["dense_attn_bytes"]
        assert r["step_speedup"] == pytest.approx(r["dense_step_time_s"] / r["sparq_step_time_s"])
    # the CLI row is the library's estimate
    lib = estimate_decode("llama-2-7b", hardware="h100-sxm", batch=1, seq_len=32768)
    assert rows[3]["dense_step_time_s"] == pytest.approx(lib.time_s)


def test_estimate_table_default(capsys):
    assert main(["estimate"]) == 0
    out = capsys.readouterr().out
    assert "llama-2-7b on h100-sxm" in out and "65536" in out and "x |" in out
    # the first screen explains the columns and why SparQ loses at batch 1, S 4k
    assert "columns: B = batch" in out and "bound: memory = bytes / bandwidth" in out
    assert "SparQ loses where its attention is latency-bound (e.g. B=1, S=4096)" in out
    assert "NO" not in out


def test_estimate_adhoc_datasheet(capsys):
    data = _json(
        capsys,
        [
            "estimate",
            "--bandwidth",
            "3.35e12",
            "--peak-flops",
            "9.89e14",
            "--batch",
            "1",
            "--seq-lens",
            "4096,65536",
            "--json",
        ],
    )
    assert data["hardware"] == "ad-hoc"
    assert len(data["rows"]) == 2


def test_estimate_options(capsys):
    data = _json(
        capsys,
        [
            "estimate",
            "--model",
            "llama-3-8b",
            "--hardware",
            "a100-80gb-sxm",
            "--batch",
            "8",
            "--seq-lens",
            "8192",
            "--store-k-once",
            "--gqa-selection",
            "per_head",
            "--topk",
            "bucketed",
            "--json",
        ],
    )
    (row,) = data["rows"]
    assert row["model"] == "llama-3-8b" and row["batch"] == 8


def test_estimate_errors(capsys):
    assert main(["estimate", "--hardware", "h900"]) == 2
    err = capsys.readouterr().err
    assert "unknown hardware 'h900'" in err and "h100-sxm" in err
    assert main(["estimate", "--r", "500", "--batch", "1", "--seq-lens", "4096"]) == 2
    assert "r: expected <= head_dim" in capsys.readouterr().err
    assert main(["estimate", "--bandwidth", "1e12"]) == 2
    assert "--peak-flops" in capsys.readouterr().err
    # ad-hoc-only options with a named profile are an error, not silently ignored
    assert main(["estimate", "--peak-flops-fp32", "1e12"]) == 2
    assert "--peak-flops-fp32 given without --bandwidth" in capsys.readouterr().err
    # k = floor(S / K_DIVISOR) = 0 is refused rather than clamped to 1
    assert main(["estimate", "--k-divisor", "5000", "--seq-lens", "4096"]) == 2
    assert "would be 0 at S = [4096]" in capsys.readouterr().err


def test_estimate_rejects_non_integer_sizes(capsys):
    # argparse exits with status 2; "1.5" must not be truncated to S = 1
    with pytest.raises(SystemExit) as info:
        main(["estimate", "--seq-lens", "1.5"])
    assert info.value.code == 2
    assert "expected integers, got '1.5'" in capsys.readouterr().err
    # an integral float in e-notation is accepted
    data = _json(capsys, ["estimate", "--seq-lens", "4e3", "--batch", "1", "--json"])
    assert [r["seq_len"] for r in data["rows"]] == [4000]
    assert data["rows"][0]["k"] == 4000 // 16


def test_estimate_adhoc_capacity_and_header(capsys):
    # --capacity reaches the ad-hoc profile: 24e9 B cannot hold Llama 2 7B fp16 weights
    # (6.74e9 params * 2 B = 13.5 GB) plus the KV cache with K twice at S = 65536:
    # 3 * 32 layers * 4096 * 65536 * 2 B = 51.5 GB
    data = _json(
        capsys,
        [
            "estimate",
            "--bandwidth",
            "1e12",
            "--peak-flops",
            "1e14",
            "--capacity",
            "24e9",
            "--batch",
            "1",
            "--seq-lens",
            "65536",
            "--json",
        ],
    )
    assert data["rows"][0]["fits_in_memory"] is False
    assert main(["estimate", "--k-divisor", "12", "--batch", "1", "--seq-lens", "4096"]) == 0
    assert "k=S/12" in capsys.readouterr().out


def test_estimate_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "est.png"
    assert main(["estimate", "--batch", "1", "--seq-lens", "4096,32768", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the chart takes the table's SparQ options too
    opts = ["--store-k-once", "--topk", "bucketed", "--gqa-selection", "per_head", "--ideal"]
    out2 = tmp_path / "est2.png"
    argv = ["estimate", "--batch", "1", "--seq-lens", "4096", "--plot", str(out2), *opts]
    assert main(argv) == 0
    assert out2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hardware_list_show(capsys):
    data = _json(capsys, ["hardware", "list", "--json"])
    assert {"h100-sxm", "ipu-bow", "epyc-7763"} <= {d["name"] for d in data}
    show = _json(capsys, ["hardware", "show", "a100-40gb-sxm", "--json"])
    assert show["mem_bandwidth_bytes_per_s"] == 1.555e12
    assert "source" in show["sources"]["mem_bandwidth_bytes_per_s"]
    assert main(["hardware", "list"]) == 0
    assert "h100-sxm" in capsys.readouterr().out
    assert main(["hardware", "show", "nope"]) == 2


def test_hardware_measure_save_and_use(tmp_path, capsys):
    path = tmp_path / "host.toml"
    assert main(["hardware", "measure", "--seconds", "0.3", "--save", str(path)]) == 0
    capsys.readouterr()
    data = _json(
        capsys,
        ["estimate", "--hardware", str(path), "--batch", "1", "--seq-lens", "4096", "--json"],
    )
    assert data["hardware"] == "host"


# ------------------------------------------------------------------------ bad options
def _argparse_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--weight-bytes", "inf"], "argument --weight-bytes: expected a finite number"),
        (["--weight-bytes", "nan"], "argument --weight-bytes: expected a finite number"),
        (["--weight-bytes", "0"], "argument --weight-bytes: expected a positive number"),
        (["--weight-bytes", "-1"], "argument --weight-bytes: expected a positive number"),
        (["--weight-bytes", "1e300"], "argument --weight-bytes: expected a number <= 16"),
        (["--bandwidth", "-3e12", "--peak-flops", "1e14"],
         "argument --bandwidth: expected a positive number, got -3e12"),
        (["--bandwidth=-3e12", "--peak-flops", "1e14"],
         "argument --bandwidth: expected a positive number, got -3e12"),
        (["--bandwidth", "inf", "--peak-flops", "1e14"], "argument --bandwidth: expected a finite"),
        (["--bandwidth", "1e30", "--peak-flops", "1e14"],
         "argument --bandwidth: expected a number <="),
        (["--bandwidth", "10", "--peak-flops", "1e14"],
         "argument --bandwidth: expected a number >= 1e+06"),
        (["--bandwidth", "1e12", "--peak-flops", "x"],
         "argument --peak-flops: expected a number, got 'x'"),
        (["--bandwidth", "1e12", "--peak-flops", "1e14", "--mem-efficiency", "1.5"],
         "argument --mem-efficiency: expected a number <= 1"),
        (["--bandwidth", "1e12", "--peak-flops", "1e14", "--kernel-latency", "-1e-6"],
         "argument --kernel-latency: expected a number >= 0"),
        (["--batch", "0"], "argument --batch: expected positive integers"),
        (["--seq-lens", "-1"], "argument --seq-lens: expected positive integers"),
        (["--seq-lens", "1e300"], "argument --seq-lens: expected positive integers <= "),
        (["--seq-lens", "9007199254740993"], "argument --seq-lens: expected positive integers <= "),
        (["--seq-lens", "nan"], "argument --seq-lens: expected integers, got 'nan'"),
        (["--seq-lens", ",".join(["4096"] * 300)], "argument --seq-lens: expected at most 256"),
        (["--r", "0"], "argument --r: expected an int >= 1, got 0"),
        (["--r", "16.0"], "argument --r: expected an int, got '16.0'"),
        (["--k-divisor", "0"], "argument --k-divisor: expected an int >= 1, got 0"),
        (["--dtype", "int3"], "argument --dtype: expected one of"),
        (["--topk", "approx"], "argument --topk: invalid choice"),
    ],
)  # fmt: skip
def test_estimate_bad_option_values_are_argparse_errors(capsys, argv, message):
    err = _argparse_error(capsys, ["estimate", *argv])
    assert message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bandwidth", "1e12", "--peak-flops", "1e12", "--peak-flops-fp32", "3e12"],
         "--peak-flops: expected >= half of --peak-flops-fp32"),
        # a default derived from an option (top-k rate 0.06 x BW < 1e6) names its origin
        (["--bandwidth", "2e6", "--peak-flops", "1e14"],
         "ad-hoc profile (--bandwidth, --peak-flops, ...): topk_bytes_per_s (default 0.06 x"),
        (["--batch", ",".join(["1"] * 100), "--seq-lens", ",".join(["4096"] * 100)],
         "--batch x --seq-lens: expected at most 4096 rows, got 100 x 100 = 10000"),
        (["--hardware", "x" * 5000 + ".toml"], "cannot read hardware profile file"),
        (["--model", "nul\x00.toml"], "model shape file not found"),
        (["--model", ""], "unknown model ''"),
        # an empty string is not "no value": it used to fall back to h100-sxm / no plot
        (["--hardware", ""], "unknown hardware ''"),
        (["--plot", ""], "--plot: expected a PNG file path, got ''"),
    ],
)  # fmt: skip
def test_estimate_bad_combinations_are_named_errors(capsys, argv, message):
    assert main(["estimate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparq estimate: error: ") and message in err, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seconds", "inf"], "argument --seconds: expected a finite number, got 'inf'"),
        (["--seconds", "nan"], "argument --seconds: expected a finite number, got 'nan'"),
        (["--seconds", "1e9"], "argument --seconds: expected a number <= 60, got 1e9"),
        (["--seconds", "0"], "argument --seconds: expected a positive number, got 0"),
        (["--seconds", "-1"], "argument --seconds: expected a positive number, got -1"),
    ],
)
def test_hardware_measure_seconds_checked_before_measuring(monkeypatch, capsys, argv, message):
    import sparq_cli.hardware as hwcli

    monkeypatch.setattr(hwcli, "measure_host", lambda **k: pytest.fail("measured anyway"))
    err = _argparse_error(capsys, ["hardware", "measure", *argv])
    assert message in err


def test_hardware_measure_bad_save_path_fails_before_measuring(monkeypatch, capsys, tmp_path):
    import sparq_cli.hardware as hwcli

    monkeypatch.setattr(hwcli, "measure_host", lambda **k: pytest.fail("measured anyway"))
    assert main(["hardware", "measure", "--save", str(tmp_path / "no" / "host.toml")]) == 2
    assert "--save: directory" in capsys.readouterr().err
    assert main(["hardware", "measure", "--save", str(tmp_path)]) == 2
    assert "--save: expected a file path" in capsys.readouterr().err
    assert main(["hardware", "measure", "--save", ""]) == 2  # used to skip saving silently
    assert "--save: expected a file path" in capsys.readouterr().err


def test_hardware_show_bad_names(capsys, tmp_path):
    bad = tmp_path / "deep.toml"
    bad.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    for name, message in [
        (str(bad), "nested too deeply"),
        ("", "unknown hardware ''"),
        ("x" * 5000 + ".toml", "cannot read hardware profile file"),
    ]:
        assert main(["hardware", "show", name]) == 2
        err = capsys.readouterr().err
        assert err.startswith("sparq hardware: error: ") and message in err, err
