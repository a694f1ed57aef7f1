"""The ``sparq`` command line: argument parsing and dispatch to the subcommand modules.

Each subcommand lives in its own module of this package that defines
``add_arguments(parser)`` and ``run(args) -> int``. A subcommand module that fails to import
is an error, never a silently missing command.

Bad options exit with status 2: a value that is wrong on its own (``--kv-heads 0``,
``--seconds inf``) through argparse (``argument --kv-heads: expected an int >= 1, got 0``,
built with :func:`int_arg` / :func:`number_arg`), a combination or a value the library
rejects through ``run`` (``sparq demo: error: --heads (6): expected a multiple of
--kv-heads (4)``). A negative number after an option is its value (``--bandwidth -3e12``
reaches the option's check instead of looking like an unknown option).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import sys
from collections.abc import Callable

__all__ = ["SUBCOMMANDS", "build_parser", "main", "version", "int_arg", "number_arg"]

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("sparq_cli.demo", "dense vs SparQ attention on a built-in random case"),
    "estimate": ("sparq_cli.estimate", "cost-model estimate of dense vs SparQ decode"),
    "hardware": ("sparq_cli.hardware", "list, show or measure hardware profiles"),
    "recall": ("sparq_cli.recall", "expected recall of bucketed top-k, models vs simulation"),
    "golden": ("sparq_cli.golden", "write golden validation cases"),
    "check": ("sparq_cli.check", "check an implementation's outputs against a golden case"),
}

#: the distribution whose version ``sparq --version`` prints
DISTRIBUTION = "sparq-reference"

#: a negative number, e-notation included (argparse's own pattern misses ``-3e12``, so
#: ``--bandwidth -3e12`` failed with "expected one argument")
_NEGATIVE_NUMBER = re.compile(
    r"^-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE
)


def version() -> str:
    """The installed package version (``importlib.metadata``), else a ``__version__`` of
    the package's modules, else ``"unknown"``."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    for modname in ("sparq_cli", "reference", "costmodel"):
        v = getattr(
            sys.modules.get(modname) or importlib.import_module(modname), "__version__", None
        )
        if isinstance(v, str) and v:
            return v
    return "unknown"


def int_arg(*, lo: int | None = 1, hi: int | None = None, hi_name: str = "") -> Callable:
    """An argparse ``type=``: a decimal int in ``[lo, hi]``; errors read
    ``argument --opt: expected an int >= 1, got 0``."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
        if lo is not None and value < lo:
            raise argparse.ArgumentTypeError(f"expected an int >= {lo}, got {value}")
        if hi is not None and value > hi:
            bound = f"{hi_name} = {hi}" if hi_name else f"{hi}"
            raise argparse.ArgumentTypeError(f"expected an int <= {bound}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def number_arg(
    *,
    minimum: float | None = None,
    strict_min: bool = False,
    maximum: float | None = None,
    floor: float | None = None,
) -> Callable:
    """An argparse ``type=``: a finite float in range (``nan``, ``inf`` are rejected). With
    ``strict_min`` and ``minimum = 0`` a non-positive value reads "expected a positive
    number"; ``floor`` is a further plausibility minimum."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if minimum is not None:
            if strict_min and not value > minimum:
                what = "a positive number" if minimum == 0 else f"a number > {minimum:g}"
                raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
            if not strict_min and not value >= minimum:
                raise argparse.ArgumentTypeError(f"expected a number >= {minimum:g}, got {text}")
        if floor is not None and value < floor:
            raise argparse.ArgumentTypeError(
                f"expected a number >= {floor:g} (smaller is no real device), got {text}"
            )
        if maximum is not None and not value <= maximum:
            raise argparse.ArgumentTypeError(f"expected a number <= {maximum:g}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def _accept_negative_numbers(parser: argparse.ArgumentParser) -> None:
    """Let ``-3e12`` be an option's value in ``parser`` and its nested subparsers."""
    parser._negative_number_matcher = _NEGATIVE_NUMBER  # argparse's hook (3.10-3.13)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _accept_negative_numbers(sub)


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
    parser.add_argument(
        "--version", action="version", version=f"sparq {version()}", help="print the version"
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
        _accept_negative_numbers(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``sparq`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    A bad option value exits through argparse (``SystemExit(2)``); an error that ``run``
    raises (``ValueError``, ``TypeError``, ``OSError`` such as a missing or unwritable
    file) is printed as ``sparq <command>: error: ...`` and returns 2; so is a bad
    environment setting met while loading the subcommands (``SPARQ_NUM_THREADS=abc``)."""
    try:
        parser = build_parser()
    except ValueError as exc:
        print(f"sparq: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:  # e.g. `sparq estimate | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError) as exc:
        print(f"sparq {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
