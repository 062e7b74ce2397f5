"""Rerun a run from its saved config: python scripts/rerun.py RUN_DIR [--into NEW_DIR] [--tolerance 0]

Prints both metric sets; exits 0 only if they match."""

import argparse
import sys
from pathlib import Path

from rnnlab.errors import RnnlabError
from rnnlab.reporting.rerun import rerun
from rnnlab.runs.record import METRIC_PREFIXES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--into", type=Path, default=None, help="folder of the rerun (default: beside RUN_DIR)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="allowed absolute difference per metric")
    args = parser.parse_args()
    try:
        old, new, differ = rerun(args.run_dir, args.into, args.tolerance)
    except RnnlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'metric':<24} {'original':>14} {'rerun':>14}")
    for key in sorted(k for k in set(old) | set(new) if k.startswith(METRIC_PREFIXES)):
        mark = "  <- differs" if key in differ else ""
        print(f"{key:<24} {old.get(key, '-')!s:>14.14} {new.get(key, '-')!s:>14.14}{mark}")
    print("match" if not differ else f"{len(differ)} metric(s) differ")
    return 0 if not differ else 1


if __name__ == "__main__":
    sys.exit(main())
