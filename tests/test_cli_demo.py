from sparq_cli import main


def test_demo_runs_and_reports(capsys):
    assert main(["demo", "--seq-len", "300", "--k", "40", "--local-window", "8"]) == 0
    text = capsys.readouterr().out
    assert "selected positions" in text and "relative L2 error" in text


def test_demo_bad_argument_is_reported(capsys):
    assert main(["demo", "--r", "0"]) == 2
    assert "r: expected an int >= 1" in capsys.readouterr().err
