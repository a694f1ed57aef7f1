"""The ``sparq`` command line: one module per subcommand, dispatched by :mod:`sparq_cli.cli`.

Each subcommand module (``demo``, ``estimate``, ``hardware``, ``recall``, ``golden``,
``check``) defines ``add_arguments(parser)`` and ``run(args) -> int``. Run it as ``sparq ...``
(the installed script) or ``python -m sparq_cli ...``.
"""

from sparq_cli.cli import SUBCOMMANDS, build_parser, main

__all__ = ["SUBCOMMANDS", "build_parser", "main"]
