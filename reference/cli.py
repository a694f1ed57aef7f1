"""Deprecated alias of :mod:`sparq_cli.cli`, kept for one release.

The ``sparq`` command line moved to the top-level package :mod:`sparq_cli`; import
``main`` from there. ``reference.cli.main`` (and ``python -m reference.cli``) still work and
behave the same.
"""

from __future__ import annotations

import sys

from sparq_cli.cli import SUBCOMMANDS, build_parser, main

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
