"""``python -m clipseg``: the same as the ``clipseg`` command (see :mod:`clipseg.apps.cli`)."""
from __future__ import annotations

import sys

from .apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
