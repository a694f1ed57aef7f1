"""The ``sparq`` command line: argument parsing and dispatch to the subcommand modules.

Each subcommand lives in its own module of this package that defines
``add_arguments(parser)`` and ``run(args) -> int``. A subcommand module that fails to import
is an error, never a silently missing command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("sparq_cli.demo", "dense vs SparQ attention on a built-in random case"),
    "estimate": ("sparq_cli.estimate", "cost-model estimate of dense vs SparQ decode"),
    "hardware": ("sparq_cli.hardware", "list, show or measure hardware profiles"),
    "recall": ("sparq_cli.recall", "expected recall of bucketed top-k, models vs simulation"),
    "golden": ("sparq_cli.golden", "write golden validation cases"),
    "check": ("sparq_cli.check", "check an implementation's outputs against a golden case"),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``sparq`` parser with every subcommand of :data:`SUBCOMMANDS`.

    Raises
    ------
    ImportError
        A subcommand module (or something it imports) cannot be imported; the message names
        the subcommand and the original error is chained.
    """
    parser = argparse.ArgumentParser(
        prog="sparq",
        description="Reference, cost model and recall theory for SparQ Attention and top-k.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, helptext) in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:
            raise ImportError(
                f"sparq: subcommand {name!r} cannot be loaded ({modname}): {exc}"
            ) from exc
        p = sub.add_parser(name, help=helptext, description=helptext)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``sparq`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"sparq {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `sparq estimate | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
