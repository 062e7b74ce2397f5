"""Rerun a run from its saved config: python scripts/rerun.py RUN_DIR [--into NEW_DIR] [--tolerance 0]"""

import sys

from rnnlab.cli.rerun import main

if __name__ == "__main__":
    sys.exit(main())
