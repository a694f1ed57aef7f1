"""The published / measured numbers the cost model is compared against, as shipped data.

``costmodel/data/published.toml`` (rows, sources) and ``costmodel/data/h100_measurements.json``
(this repo's H100 run) are package data read by :mod:`costmodel.published`; every row must
load, name a source, and evaluate to a finite prediction. Agreement bounds asserted here are
the ones stated in the row's test.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from costmodel._tomlio import loads_toml
from costmodel.published import (
    DATA_PACKAGE,
    PUBLISHED_FILE,
    comparison_rows,
    evaluate,
    load_published,
    markdown_table,
    parse_published,
)

ROOT = Path(__file__).resolve().parents[1]
ROWS = load_published()
SHIPPED_TEXT = (resources.files(DATA_PACKAGE) / PUBLISHED_FILE).read_text(encoding="utf-8")


@pytest.mark.parametrize("row", ROWS, ids=[r.quantity for r in ROWS])
def test_row_has_a_source(row):
    assert row.source.strip() and row.quantity.strip()
    assert len(row.citation) >= 40, row.citation
    if row.measured is not None:
        # measured in this repo: the citation names the shipped file the value is read from
        assert row.citation.startswith("measured, this repo, ")
        assert row.measured["file"] in row.citation
    else:
        assert not row.citation.startswith("measured")


@pytest.mark.parametrize("row", ROWS, ids=[r.quantity for r in ROWS])
def test_row_evaluates_to_a_finite_prediction(row):
    out = evaluate(row)
    assert math.isfinite(out["published"]) and out["published"] > 0
    assert math.isfinite(out["predicted"]) and out["predicted"] > 0
    assert math.isfinite(out["error"])
    assert out["error"] == pytest.approx((out["predicted"] - out["published"]) / out["published"])
    assert "{" not in out["note"] and "}" not in out["note"]


def test_validation_table_builds():
    # moved from the old tests/test_costmodel.py: the docs table (docs/costmodel.md) comes from
    # costmodel.published; it must build and every row must have a finite error against its
    # published number
    rows = comparison_rows()
    assert len(rows) >= 30
    assert all(math.isfinite(r["error"]) for r in rows)
    assert markdown_table(rows).count("\n") == len(rows) + 1


def test_h100_batch64_rows_within_5_percent():
    # the bound of tests/test_estimate.py::test_h100_batch64_sdpa_within_5_percent, on the rows
    # of the shipped data (SDPA default backend, fp16, batch 64, 32 heads, d 128)
    rows = [
        r
        for r in ROWS
        if r.measured is not None
        and r.config.get("hardware") == "h100-sxm"
        and r.config["batch"] == 64
    ]
    assert len(rows) >= 5
    for row in rows:
        assert abs(evaluate(row)["error"]) <= 0.05, row.quantity


def test_measured_rows_select_their_configuration():
    # a measured row's `where` must describe the configuration the model is called with
    for row in ROWS:
        if row.measured is None:
            continue
        where, cfg = row.measured["where"], row.config
        if row.metric == "topk_time":
            assert (where["rows"], where["n"], where["k"]) == (cfg["rows"], cfg["n"], cfg["k"])
            continue
        assert where["batch"] == cfg["batch"] and where["seq_len"] == cfg["seq_len"]
        assert where["heads"] == cfg["n_heads"] and where["head_dim"] == cfg["head_dim"]


# ------------------------------------------------------------------------- strictness
def _inject(after: str, line: str) -> str:
    """The shipped text with ``line`` added after the first line equal to ``after``."""
    lines = SHIPPED_TEXT.split("\n")
    i = lines.index(after)
    return "\n".join(lines[: i + 1] + [line] + lines[i + 1 :])


@pytest.mark.parametrize(
    "after, line, match",
    [
        ("[[row]]", 'colour = "red"', r"row 1 .*unknown key\(s\) \['colour'\]"),
        ("[row.config]", "seq_length = 4096", r"\[config\]: unknown key\(s\) \['seq_length'\]"),
        ("[row.measured]", "scale = 2", r"\[measured\]: unknown key\(s\) \['scale'\]"),
        (
            '[sources."paper Table 4"]',
            'url = "https://arxiv.org"',
            r"unknown key\(s\) \['url'\]",
        ),
    ],
)
def test_unknown_key_is_rejected(after, line, match):
    with pytest.raises(ValueError, match=match):
        parse_published(_inject(after, line), "test.toml")


def test_unknown_top_level_key_is_rejected():
    with pytest.raises(ValueError, match=r"test.toml: unknown key\(s\) \['rows'\]"):
        parse_published('rows = 1\n[sources.a]\ncitation = "x"\n', "test.toml")


@pytest.mark.parametrize(
    "old, new, match",
    [
        ('source = "paper Table 4"', 'source = "paper Tabel 4"', "has no \\[sources"),
        (
            'metric = "transfers_ratio"',
            'metric = "transfer_ratio"',
            "key 'metric': expected one of",
        ),
        ('unit = "us"', 'unit = "µs"', "key 'unit': expected one of"),
        ("published = 6.4", "published = -6.4", "key 'published': expected > 0"),
        ("published = 6.4", "", "exactly one of 'published'"),
        ("seq_len = 4096", 'seq_len = "4096"', "key 'seq_len': expected a number"),
        ('note = "{bound}"', 'note = "{bonud}"', r"unknown field\(s\) \['bonud'\]"),
        ("seq_len = 1024 }", "seq_len = 1000 }", r"0 rows of h100_measurements.json"),
        ("seq_lens = [1024, 2048]", "seq_lens = [2048, 1024]", "two increasing"),
    ],
)
def test_bad_values_are_rejected(old, new, match):
    assert old in SHIPPED_TEXT
    with pytest.raises(ValueError, match=match):
        parse_published(SHIPPED_TEXT.replace(old, new, 1), "test.toml")


def test_unused_source_is_rejected():
    text = SHIPPED_TEXT.replace(
        "\n[[row]]\n", '\n[sources.spare]\ncitation = "nobody cites me"\n\n[[row]]\n', 1
    )
    with pytest.raises(ValueError, match=r"entries no row uses: \['spare'\]"):
        parse_published(text, "test.toml")


def test_load_published_from_a_path(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text(SHIPPED_TEXT.replace("published = 6.4", "published = 6.5", 1))
    rows = load_published(p)
    assert rows[0].published == 6.5 and len(rows) == len(ROWS)


# ------------------------------------------------------------------------ packaging
def test_data_files_found_via_importlib_resources():
    files = resources.files(DATA_PACKAGE)
    assert (files / PUBLISHED_FILE).is_file()
    assert (files / "h100_measurements.json").is_file()
    data = json.loads((files / "h100_measurements.json").read_text(encoding="utf-8"))
    assert data["device_name"].startswith("NVIDIA H100")


def test_data_files_are_package_data_in_pyproject():
    # what setuptools puts in the wheel: the package is listed and its globs cover every data file
    cfg = loads_toml((ROOT / "pyproject.toml").read_text(encoding="utf-8"), "pyproject.toml")
    st = cfg["tool"]["setuptools"]
    assert DATA_PACKAGE in st["packages"]
    globs = st["package-data"][DATA_PACKAGE]
    data_dir = ROOT / DATA_PACKAGE.replace(".", "/")
    shipped = [p.name for p in data_dir.iterdir() if p.is_file() and p.suffix != ".py"]
    assert PUBLISHED_FILE in shipped
    for name in shipped:
        if name.endswith((".pyc", ".pyo")):
            continue
        assert any(fnmatch.fnmatch(name, g) for g in globs), name


def test_shipped_measurements_match_docs_copy():
    # docs/costmodel.md links the raw H100 run in docs/; the shipped copy must not drift from it
    docs = ROOT / "docs" / "costmodel_h100_measurements.json"
    if not docs.is_file():
        pytest.skip("no docs/ in this checkout")
    shipped = resources.files(DATA_PACKAGE) / "h100_measurements.json"
    assert json.loads(shipped.read_text(encoding="utf-8")) == json.loads(docs.read_text())


def test_table_complete_without_the_repo_docs(tmp_path):
    # as installed from a wheel: only the costmodel package, no docs/ next to it; every row
    # (the H100 measurements included) must still be there
    shutil.copytree(
        ROOT / "costmodel",
        tmp_path / "costmodel",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import costmodel.published as v; print(v.__file__);print(v.markdown_table())",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0].startswith(str(tmp_path))
    table = out[1:]
    assert len(table) == len(ROWS) + 2
    assert sum(bool(re.match(r"\| H(100|200) ", line)) for line in table) == sum(
        r.measured is not None for r in ROWS
    )


def test_deprecated_validation_alias():
    # costmodel.validation is kept for one release: same objects, same `python -m` output
    import costmodel.published as published
    import costmodel.validation as alias

    for name in published.__all__:
        assert getattr(alias, name) is getattr(published, name)
    assert alias._METRICS is published._METRICS
    out = subprocess.run(
        [sys.executable, "-m", "costmodel.validation"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == published.markdown_table() + "\n\n" + published.summary_table() + "\n"
