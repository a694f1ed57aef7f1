"""benchmarks/target_runs.py's tally of several benchmark runs.

Oracle: target lists built by hand, counted by hand.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tr():
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("target_runs")
    finally:
        sys.path.remove(str(root))


def _t(name, met, value):
    return dict(target=name, met=met, value=value, note="")


def test_tally_counts_met_judged_and_printed(tr):
    runs = [
        [_t("a", True, "2.6x"), _t("b", False, "3.4x"), _t("i", None, "x")],
        [_t("a", False, "2.4x"), _t("b", True, "3.6x"), _t("i", None, "y")],
        [_t("a", True, "2.5x"), _t("c", True, "1%")],  # b and i not printed in this run
    ]
    rows = {r["target"]: r for r in tr.tally(runs)}
    assert [r["target"] for r in tr.tally(runs)] == ["a", "b", "i", "c"]  # first appearance
    assert (rows["a"]["met"], rows["a"]["judged"], rows["a"]["runs"]) == (2, 3, 3)
    assert rows["a"]["values"] == ["2.6x", "2.4x", "2.5x"]
    assert (rows["b"]["met"], rows["b"]["judged"], rows["b"]["runs"]) == (1, 2, 2)
    assert rows["b"]["values"] == ["3.4x", "3.6x", None]
    assert (rows["i"]["met"], rows["i"]["judged"], rows["i"]["runs"]) == (0, 0, 2)
    assert (rows["c"]["met"], rows["c"]["judged"], rows["c"]["runs"]) == (1, 1, 1)


def test_format_tally_says_met_in_k_of_n(tr):
    text = tr.format_tally(tr.tally([[_t("a", True, "v1")], [_t("a", False, "v2")]]))
    assert text.splitlines() == ["a: met in 1 of 2 runs", "    run 1: v1", "    run 2: v2"]
    info = tr.format_tally(tr.tally([[_t("i", None, "v")]]))
    assert info.splitlines()[0] == "i: information only (printed by 1 of 1 runs)"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--runs", "0"], "--runs: expected a positive number of runs, got 0"),
        (["--", "--json", "x.json"], "--json: give it to this script"),
    ],
)
def test_bad_arguments_are_refused(tr, argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        tr.main(argv)
    assert e.value.code == 2
    assert says in capsys.readouterr().err
