"""The ``sparq`` command line.

Each subcommand lives in its own module that defines ``add_arguments(parser)`` and
``run(args) -> int``; they are imported only when used, so ``sparq --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("reference._cli_demo", "dense vs SparQ attention on a built-in random case"),
    "estimate": ("costmodel._cli_estimate", "cost-model estimate of dense vs SparQ decode"),
    "hardware": ("costmodel._cli_hardware", "list, show or measure hardware profiles"),
    "recall": ("costmodel._cli_recall", "expected recall of bucketed top-k, models vs simulation"),
    "golden": ("reference._cli_golden", "write golden validation cases"),
    "check": ("reference._cli_check", "check an implementation's outputs against a golden case"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparq",
        description="Reference, cost model and recall theory for SparQ Attention and top-k.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, helptext) in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue  # subcommand not available in this build
        p = sub.add_parser(name, help=helptext, description=helptext)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
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
