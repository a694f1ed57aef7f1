import numpy as np

from reference.validation import STEPS, load_cases
from sparq_cli import main


def test_golden_then_check_roundtrip(tmp_path, capsys):
    gold, outs = tmp_path / "gold", tmp_path / "outs"
    assert main(["golden", "--out", str(gold), "--suite", "adversarial", "--dtype", "float32"]) == 0
    cases = load_cases(gold)
    outs.mkdir()
    for c in cases[:-1]:  # the last case is left out on purpose
        np.savez(outs / f"{c.name}.npz", **{f: getattr(c.expected, f) for f in STEPS})
    capsys.readouterr()
    assert main(["check", str(gold), str(outs)]) == 1  # a missing case fails by default
    assert main(["check", str(gold), str(outs), "--allow-missing"]) == 0
    text = capsys.readouterr().out
    assert f"{len(cases) - 1} passed, 0 failed, 1 not provided" in text
    # an outputs file with no steps in it is not a pass
    np.savez(outs / f"{cases[-1].name}.npz")
    assert main(["check", str(gold), str(outs)]) == 1
    assert f"{len(cases) - 1} passed, 1 failed, 0 not provided" in capsys.readouterr().out
    # a broken output makes the command fail and name the step
    c = cases[0]
    broken = {f: getattr(c.expected, f) for f in STEPS}
    broken["out"] = broken["out"] + 1.0
    np.savez(outs / f"{c.name}.npz", **broken)
    assert main(["check", str(gold), str(outs)]) == 1
    assert "first failure: out" in capsys.readouterr().out


def test_check_missing_golden_dir(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope"), str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
