"""``sparq recall`` command line (sparq_cli.recall)."""

from __future__ import annotations

import json
import re

import mpmath
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


# --------------------------------------------------------------------------- robustness


def _json(capsys, argv):
    rc = main(["recall", *argv, "--json"])
    captured = capsys.readouterr()
    return rc, captured


def test_recall_huge_k_per_bucket_instant_answer(capsys):
    # Row 3: one bucket keeping all it has is the exact top-k, recall 1 under every model
    # (binomial: Bin(k, 1) = k; Poisson(10) never reaches 1e9 in float64). Was killed for
    # memory (24 GB).
    import tracemalloc

    tracemalloc.start()
    try:
        rc, cap = _json(
            capsys,
            ["--n", "100", "--k", "10", "--buckets", "1", "--k-per-bucket", "1000000000"]
            + ["--trials", "0"],
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rc == 0, cap.err
    out = json.loads(cap.out)
    assert {m: v["expected_recall"] for m, v in out["models"].items()} == {
        "exact": 1.0,
        "binomial": 1.0,
        "poisson": 1.0,
    }
    assert peak < 100 * 2**20


def test_recall_paper_scale_1e12(capsys):
    # Row 4: n = 1e12, k = 1e9, b = 1e9 (buckets of 1000), k_b = 1, in bounded memory.
    # Exact model: E[R] = (b/k)(1 - C(n - s, k)/C(n, k)); buckets needed for 0.99 checked
    # on both sides with the same formula for the two uneven sizes (50-digit log-gamma).
    rc, cap = _json(
        capsys,
        ["--n", "1e12", "--k", "1e9", "--buckets", "1e9", "--trials", "0", "--target", "0.99"],
    )
    assert rc == 0, cap.err
    out = json.loads(cap.out)
    n, k = 10**12, 10**9
    mpmath.mp.dps = 50

    def exact_kb1(b):
        q, r = divmod(n, b)
        total = mpmath.mpf(0)
        for s, cnt in ((q + 1, r), (q, b - r)):
            lg = mpmath.loggamma
            log_p0 = lg(n - s + 1) - lg(n - s - k + 1) - lg(n + 1) + lg(n - k + 1)
            total += cnt * (1 - mpmath.exp(log_p0))
        return total / k

    assert out["models"]["exact"]["expected_recall"] == pytest.approx(
        float(exact_kb1(10**9)), abs=1e-13
    )
    need = out["buckets_needed"]["exact"]
    assert exact_kb1(need) >= 0.99 > exact_kb1(need - 1)


@pytest.mark.parametrize("target", ["2", "nan", "inf", "0", "-1", "1.0000001"])
def test_recall_target_out_of_range_is_an_error(capsys, target):
    # Row 8: was exit 0 with every model "unreachable" for 2 and NaN.
    rc = main(
        ["recall", "--n", "64", "--k", "16", "--buckets", "8", "--k-per-bucket", "2"]
        + ["--trials", "0", "--target", target]
    )
    assert rc == 2
    assert "target: expected 0 < target <= 1" in capsys.readouterr().err


def test_recall_target_one_is_accepted(capsys):
    rc = main(
        ["recall", "--n", "64", "--k", "16", "--buckets", "8", "--trials", "0"]
        + ["--k-per-bucket", "2", "--target", "1", "--json"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    # exact: recall 1 needs k_b >= every bucket's possible count, i.e. b = 8 buckets of 8 need
    # k_b = 8 > 2, so more buckets: b = 32 gives size 2 = k_b (smallest b with s <= 2)
    assert out["buckets_needed"]["exact"] == 32
    assert out["buckets_needed"]["binomial"] is None  # never 1 unless k_b >= k


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--trials", "1e12"], r"trials: expected trials <= 2\*\*22"),
        (["--trials", "4000000"], r"trials: expected trials \* \(n"),
        (["--n", "1e12", "--k", "16", "--buckets", "8"], r"n: expected n <= 2\*\*22"),
        (["--trials", "0", "--correlation", "nan"], "correlation: expected"),
        (["--trials", "10", "--correlation", "1"], "correlation: expected"),
        (["--trials", "10", "--seed", "-1"], "seed: expected seed >= 0"),
        (["--n", "9223372036854775808"], "n: expected an int <="),
        (["--buckets", "100"], "num_buckets: expected 1 <= num_buckets <= n"),
        (["--k-per-bucket", "0"], "k_per_bucket: expected"),
    ],
)
def test_recall_bad_or_over_limit_arguments(capsys, argv, match):
    base = {"--n": "64", "--k": "16", "--buckets": "8", "--k-per-bucket": "2"}
    for i in range(0, len(argv), 2):
        base[argv[i]] = argv[i + 1]
    assert main(["recall", *[x for kv in base.items() for x in kv]]) == 2
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.parametrize("value", ["1.5", "1e400", "abc", "inf"])
def test_recall_non_integer_n_is_an_argparse_error(capsys, value):
    with pytest.raises(SystemExit) as exc:
        main(["recall", "--n", value, "--k", "16", "--buckets", "8"])
    assert exc.value.code == 2
    assert "--n: expected an integer" in capsys.readouterr().err


def test_recall_std_not_available_beyond_pair_limit(capsys):
    # k = 1e8 in 3 buckets: the variance's pair sum is over its limit, the mean is not; the
    # table says n/a for the std instead of failing. Expected recall 1 (k_b = k).
    rc, cap = _json(
        capsys,
        ["--n", "1e12", "--k", "1e8", "--buckets", "3", "--k-per-bucket", "33333334"]
        + ["--trials", "0"],
    )
    assert rc == 0, cap.err
    out = json.loads(cap.out)
    assert out["models"]["exact"]["std"] is None
    assert 0.99 < out["models"]["exact"]["expected_recall"] < 1
