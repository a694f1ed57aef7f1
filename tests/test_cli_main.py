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
