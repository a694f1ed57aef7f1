import pytest

from sparq_cli import main


def test_demo_runs_and_reports(capsys):
    assert main(["demo", "--seq-len", "300", "--k", "40", "--local-window", "8"]) == 0
    text = capsys.readouterr().out
    assert "selected positions" in text and "relative L2 error" in text


def test_demo_bad_argument_is_reported(capsys):
    # an option's own range is an argparse error (exit status 2) naming the option
    with pytest.raises(SystemExit) as info:
        main(["demo", "--r", "0"])
    assert info.value.code == 2
    assert "argument --r: expected an int >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kv-heads", "0"], "argument --kv-heads: expected an int >= 1, got 0"),
        (["--seq-len", "-5"], "argument --seq-len: expected an int >= 1, got -5"),
        (["--batch", "0"], "argument --batch: expected an int >= 1, got 0"),
        (["--heads", "2.5"], "argument --heads: expected an int, got '2.5'"),
        (["--head-dim", "nan"], "argument --head-dim: expected an int, got 'nan'"),
        (["--k", ""], "argument --k: expected an int, got ''"),
        (["--local-window", "-1"], "argument --local-window: expected an int >= 0, got -1"),
        (["--seed", "-3"], "argument --seed: expected an int >= 0, got -3"),
        (["--seq-len", "1" + "0" * 30], "argument --seq-len: expected an int <= 16777216"),
    ],
)
def test_demo_option_ranges_are_argparse_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["demo", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # used to be a ZeroDivisionError / numpy reshape traceback
        (["--heads", "6", "--kv-heads", "4"], "--heads (6): expected a multiple of --kv-heads (4)"),
        (["--r", "200"], "--r: expected <= --head-dim (128), got 200"),
        (["--seq-len", "100", "--k", "101"], "--k: expected <= --seq-len (100), got 101"),
        (["--local-window", "129"], "--local-window: expected <= --k (128), got 129"),
        # would allocate 2**30 float64 per cache
        (
            ["--batch", "8", "--kv-heads", "8", "--seq-len", "16384", "--heads", "8"],
            "--batch x --kv-heads x --seq-len x --head-dim: expected at most 16777216",
        ),
        (
            ["--batch", "1", "--heads", "1", "--kv-heads", "1", "--seq-len", "16777216",
             "--head-dim", "1", "--r", "1"],
            "--batch x --kv-heads x --seq-len: expected at most 2097152 cached positions",
        ),
        (
            ["--heads", "4096", "--kv-heads", "1", "--head-dim", "8192", "--seq-len", "1",
             "--r", "8", "--k", "1", "--local-window", "0", "--batch", "1"],
            "--batch x --heads x --head-dim: expected at most 16777216 query elements",
        ),
    ],
)  # fmt: skip
def test_demo_option_combinations_are_named_errors(capsys, argv, message):
    assert main(["demo", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparq demo: error: ") and message in err
    assert "Traceback" not in err


def test_demo_smallest_case_runs(capsys):
    argv = ["--batch", "1", "--heads", "1", "--kv-heads", "1", "--seq-len", "1",
            "--head-dim", "1", "--r", "1", "--k", "1", "--local-window", "0"]  # fmt: skip
    assert main(["demo", *argv]) == 0
    assert "relative L2 error" in capsys.readouterr().out
