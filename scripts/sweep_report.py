"""Summarise a sweep: python scripts/sweep_report.py outputs/multirun/<date>/<time> [--metric val/acc]"""

import sys

from rnnlab.cli.sweep_report import main

if __name__ == "__main__":
    sys.exit(main())
