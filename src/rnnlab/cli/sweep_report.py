"""Summarise a sweep: python scripts/sweep_report.py SWEEP_DIR [--metric val/acc --metric val/loss]

Writes summary.csv, summary.md and curves-<metric>.png (validation and training curves of each
metric, default: the monitored one) into the sweep folder; for an Optuna search also
optimization_history.png and param_importances.png."""

import argparse
import sys
from pathlib import Path

from rnnlab.errors import RnnlabError
from rnnlab.reporting.sweep import write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", action="append", help="a metric to draw (repeatable; default: the monitored one)")
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
