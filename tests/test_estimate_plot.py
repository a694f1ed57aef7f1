"""``sparq estimate --plot`` / ``--roofline``: the chosen device and batches are what the
figure shows (read back from the figure's lines), whatever kind of device it is; crossover
by hand; skipped cleanly without matplotlib."""

from __future__ import annotations

import pytest

from costmodel.plot import crossover, seq_grid
from sparq_cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_crossover_by_hand():
    # 0.5 at 1k, 2 at 4k: y = 1 at t = 1/3 of the way in log S: 1024 * 4**(1/3)
    assert crossover([1024, 4096], [0.5, 2.0]) == pytest.approx(1024 * 4 ** (1 / 3))
    assert crossover([1024, 4096], [1.2, 2.0]) == 1024.0
    assert crossover([1024, 4096], [0.5, 0.9]) is None
    assert seq_grid(4096, 65536, 5) == [4096, 8192, 16384, 32768, 65536]


@pytest.fixture
def captured(monkeypatch):
    pytest.importorskip("matplotlib")
    import costmodel.plot as plot

    seen = {}
    for name in ("plot_decode", "plot_roofline"):
        orig = getattr(plot, name)

        def wrapper(*a, _orig=orig, _name=name, **kw):
            seen[_name] = _orig(*a, **kw)
            return seen[_name]

        monkeypatch.setattr(plot, name, wrapper)
    return seen


@pytest.mark.parametrize("device", ["tpu-v5e", "gaudi2", "ipu-bow", "apple-m4-max"])
def test_plot_shows_the_chosen_device_and_batches(tmp_path, capsys, captured, device):
    out = tmp_path / "p.png"
    argv = ["estimate", "--hardware", device, "--batch", "3,7", "--seq-lens", "4096,65536",
            "--plot", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert out.read_bytes()[:8] == PNG
    data = captured["plot_decode"]
    labels = {s["label"] for s in data["series"]}
    for B in (3, 7):
        assert f"{device} B={B} dense" in labels and f"{device} B={B} SparQ" in labels
        assert f"{device} B={B}" in labels  # the speed-up line
    assert not any(label.startswith("h100-sxm") for label in labels)
    # S runs over the table's range, the y-axis values are the whole step in ms
    xs = next(s["x"] for s in data["series"] if s["label"] == f"{device} B=3 dense")
    assert xs[0] == 4096 and xs[-1] == 65536
    assert {c["batch"] for c in data["crossovers"]} == {3, 7}


def test_plot_compare_styles_and_units(tmp_path, capsys, captured):
    out = tmp_path / "p.png"
    argv = ["estimate", "--batch", "1", "--seq-lens", "4096,65536", "--plot", str(out),
            "--compare", "a100-80gb-sxm,l4"]  # fmt: skip
    assert main(argv) == 0
    data = captured["plot_decode"]
    speed = [s for s in data["series"] if "speed-up" not in s["axes"] and "SparQ r=" in s["axes"]]
    assert [s["label"] for s in speed] == ["h100-sxm B=1", "a100-80gb-sxm B=1", "l4 B=1"]
    assert len({s["color"] for s in speed}) == 3
    assert len({s["linestyle"] for s in speed}) == 3
    # the h100-sxm batch-1 crossover: SparQ loses at 4k and wins by 64k
    (cross,) = [c for c in data["crossovers"] if c["hardware"] == "h100-sxm"]
    assert 4096 < cross["seq_len"] < 65536


def test_roofline_file(tmp_path, capsys, captured):
    out = tmp_path / "r.png"
    argv = ["estimate", "--hardware", "tpu-v5e", "--batch", "1,8", "--seq-lens", "4096",
            "--roofline", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert out.read_bytes()[:8] == PNG
    labels = {s["label"] for s in captured["plot_roofline"]["series"]}
    assert "tpu-v5e roofline" in labels
    assert {"weight GEMVs B=1", "weight GEMVs B=8"} <= labels


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--compare", "a100-80gb-sxm"], "--compare: adds devices to --plot"),
        (["--plot", "{tmp}/p.png", "--compare", "h900"], "unknown hardware 'h900'"),
        (["--roofline", "{tmp}/no/r.png"], "--roofline: directory"),
        (["--prompt-len", "100", "--gen-len", "2", "--plot", "{tmp}/p.png"], "--plot: plots"),
    ],
)
def test_plot_errors_before_any_work(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["estimate", *argv]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and message in cap.err, cap.err
