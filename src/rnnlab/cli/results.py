"""Published results from run folders: python scripts/results.py add RUN_DIR --table T --row NAME | render [--check]

add     summarise a completed run folder (metrics, command, commit, machine, date) into
        docs/results/runs/<table>/<row>.json
render  rewrite every <!-- results:<table> --> block of README.md and docs/ from those summaries;
        --check only says which pages are stale (exit 1), as the test suite does"""

import argparse
import sys
from pathlib import Path

from rnnlab.errors import RnnlabError
from rnnlab.reporting.results import add, render


def pages(root: Path) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if p.is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."), help="the checkout (README.md, docs/)")
    commands = parser.add_subparsers(dest="command", required=True)
    adding = commands.add_parser("add", help="summarise a run folder for a table")
    adding.add_argument("run_dir", type=Path)
    adding.add_argument("--table", required=True)
    adding.add_argument("--row", required=True, help="the row's name in the table")
    adding.add_argument("--order", type=int, default=0, help="position in the table (ascending)")
    adding.add_argument("--note", default=None, help="a sentence printed under the table")
    rendering = commands.add_parser("render", help="rewrite the result tables of README.md and docs/")
    rendering.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    args = parser.parse_args(argv)
    docs = args.root / "docs" / "results"
    try:
        if args.command == "add":
            print(f"wrote {add(args.run_dir, docs, args.table, args.row, args.order, args.note)}")
            return 0
        stale = render(docs, pages(args.root), check=args.check)
    except RnnlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for page in stale:
        print(f"{'stale' if args.check else 'rewrote'}: {page}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
