"""`python -m bot` is `triagebot`."""

import sys

from bot.cli import main

sys.exit(main())
