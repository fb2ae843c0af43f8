"""`python -m bot` is the `workbot` command."""

import sys

from bot.cli import main

sys.exit(main())
