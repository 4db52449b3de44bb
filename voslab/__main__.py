"""``python -m voslab ...`` runs the command line (see ``voslab.cli``)."""
from __future__ import annotations

import sys

from voslab.cli import main

if __name__ == "__main__":
    sys.exit(main())
