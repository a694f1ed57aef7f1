"""``python -m sparq_cli``: the same as the ``sparq`` script."""

import sys

from sparq_cli.cli import main

sys.exit(main())
