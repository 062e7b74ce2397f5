"""Summarise a sweep: python scripts/sweep_report.py outputs/<experiment>/<date>_<time> [--metric val/acc]

Writes summary.csv, summary.md and curves.png into the sweep folder."""

import argparse
import sys
from pathlib import Path

from rnnlab.errors import RnnlabError
from rnnlab.reporting.sweep import write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default=None, help="metric for the best row and the curves (default: monitor)")
    args = parser.parse_args()
    try:
        paths = write_report(args.sweep_dir, args.metric)
    except RnnlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((args.sweep_dir / "summary.md").read_text())
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
