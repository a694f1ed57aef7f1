"""The ``sparq`` dispatcher (sparq_cli.cli) and its deprecated alias reference.cli."""

from __future__ import annotations

import pytest

from sparq_cli import cli as cli_main
from sparq_cli import main


def test_every_subcommand_is_listed(capsys):
    assert main([]) == 2  # no command: help, exit status 2
    text = capsys.readouterr().out
    for name in ("demo", "estimate", "hardware", "recall", "golden", "check"):
        assert f"    {name} " in text


@pytest.mark.parametrize("modname", ["sparq_cli.no_such_module", "no_such_package.cmd"])
def test_broken_subcommand_is_an_error_not_hidden(monkeypatch, modname):
    monkeypatch.setitem(cli_main.SUBCOMMANDS, "broken", (modname, "a broken subcommand"))
    with pytest.raises(ImportError, match="subcommand 'broken' cannot be loaded"):
        main(["--help"])
    with pytest.raises(ImportError, match="subcommand 'broken'"):
        main(["demo", "--help"])


def test_reference_cli_is_the_same_main():
    from reference import cli

    assert cli.main is main
    assert cli.SUBCOMMANDS is cli_main.SUBCOMMANDS


def test_version_prints_the_package_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sparq {metadata.version('sparq-reference')}"


def test_version_falls_back_without_metadata(monkeypatch):
    from importlib import metadata

    import reference

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert cli_main.version() == "unknown"
    monkeypatch.setattr(reference, "__version__", "9.9.9", raising=False)
    assert cli_main.version() == "9.9.9"


@pytest.mark.parametrize("token", ["-3e12", "-3E+12", "-.5", "-7", "-inf", "-nan"])
def test_negative_numbers_are_option_values(capsys, token):
    # argparse's own pattern took "-3e12" for an option ("expected one argument")
    with pytest.raises(SystemExit) as info:
        main(["estimate", "--bandwidth", token, "--peak-flops", "1e14"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --bandwidth: expected a" in err
    assert "expected one argument" not in err


def test_os_errors_of_a_subcommand_are_reported_not_raised(capsys, tmp_path):
    # --plot below a regular file: NotADirectoryError, an OSError that is no
    # FileNotFoundError (it used to end in a traceback)
    pytest.importorskip("matplotlib")
    afile = tmp_path / "a-file"
    afile.write_text("")
    argv = ["estimate", "--batch", "1", "--seq-lens", "4096", "--plot", str(afile / "c.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparq estimate: error: ") and "Not a directory" in err
