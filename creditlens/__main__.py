"""``python -m creditlens``: the ``creditlens`` command line (creditlens/cli.py)."""

import sys

from creditlens.cli import main

sys.exit(main())
