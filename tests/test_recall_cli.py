"""``sparq recall`` command line (sparq_cli.recall)."""

from __future__ import annotations

import json

import pytest

from costmodel.recall import buckets_for_recall, expected_recall
from sparq_cli import main


def test_recall_json(capsys):
    rc = main(
        [
            "recall",
            "--n",
            "64",
            "--k",
            "16",
            "--buckets",
            "8",
            "--k-per-bucket",
            "2",
            "--trials",
            "200",
            "--seed",
            "1",
            "--target",
            "0.9",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    # Values computed outside this code (closed forms, simulation-checked): exact 0.7817,
    # binomial 0.7470.
    assert out["models"]["exact"]["expected_recall"] == pytest.approx(0.7817, abs=5e-5)
    assert out["models"]["binomial"]["expected_recall"] == pytest.approx(0.7470, abs=5e-5)
    assert set(out["simulation"]) >= {"interleaved", "contiguous"}
    assert out["buckets_needed"]["exact"] == buckets_for_recall(64, 16, 0.9, k_per_bucket=2)


def test_recall_table_text(capsys):
    rc = main(
        [
            "recall",
            "--n",
            "1500",
            "--k",
            "96",
            "--buckets",
            "192",
            "--trials",
            "0",
            "--target",
            "0.95",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert f"{expected_recall(1500, 96, num_buckets=192):.5f}" in text
    assert "xla rule" in text and "bound 1-(k-1)/(2b)" in text


def test_recall_plot(tmp_path, capsys):
    path = tmp_path / "r.png"
    rc = main(
        [
            "recall",
            "--n",
            "256",
            "--k",
            "16",
            "--buckets",
            "32",
            "--trials",
            "50",
            "--plot",
            str(path),
        ]
    )
    assert rc == 0
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recall_errors(capsys):
    assert main(["recall", "--n", "64"]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["recall", "--n", "64", "--k", "16", "--buckets", "4", "--trials", "0"]) == 2
    assert "num_buckets * k_per_bucket" in capsys.readouterr().err
