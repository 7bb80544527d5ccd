"""``python -m sea_pyg.cli``: the ``sea-pyg`` command."""

import sys

from sea_pyg.cli import main

sys.exit(main())
