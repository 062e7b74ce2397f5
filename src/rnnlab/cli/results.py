"""Published results: python scripts/results.py list | run ROW | add RUN_DIR --row ROW | render [--check]

docs/results/published.yaml declares every published row (name, preset, overrides, seeds, table, anchor);
each seed of a row is one record, docs/results/runs/<table>/<preset>-<hash>-s<seed>.json.

list    the declared rows, with the seeds that have records
run     train every seed of ROW that has no record (one run folder per seed under --runs-dir, resumable:
        a finished folder is read again, an interrupted one continues), recording each as it finishes
add     record a completed run folder (made by hand: a GPU run, eval.py, ensemble.py) as a seed of ROW
        (a seed already recorded only with --replace)
render  rewrite every <!-- results:<table> --> block of README.md and docs/ from the records;
        --check changes nothing and says what is stale: pages, records no row declares, seeds with no
        record (exit 1), as the test suite does"""

import argparse
import logging
import sys
from pathlib import Path

from rnnlab.errors import RnnlabError
from rnnlab.reporting.published import load_rows
from rnnlab.reporting.results import add, load_records, render, run_row, unlisted_and_missing


def pages(root: Path) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if p.is_file()]


def given_paths(pairs: list[str]) -> dict[str, str]:
    given = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise RnnlabError(f"--with {pair!r}: write --with NAME=PATH (NAME as the row's <NAME>)")
        given[name] = path
    return given


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."), help="the checkout (README.md, docs/)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the declared rows and their recorded seeds")
    running = commands.add_parser("run", help="train and record every seed of a row")
    running.add_argument("row", help="the row's name, as published.yaml spells it")
    running.add_argument("--runs-dir", type=Path, default=Path("outputs/results"), help="where the run folders go")
    running.add_argument("--with", dest="given", action="append", default=[], help="NAME=PATH for a row's <NAME>")
    adding = commands.add_parser("add", help="record a run folder as a seed of a row")
    adding.add_argument("run_dir", type=Path)
    adding.add_argument("--row", required=True, help="the row's name, as published.yaml spells it")
    adding.add_argument("--note", default=None, help="what a reader of the record should know about this run")
    adding.add_argument("--replace", action="store_true", help="record it in place of the seed's existing record")
    rendering = commands.add_parser("render", help="rewrite the result tables of README.md and docs/")
    rendering.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is stale")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    docs = args.root / "docs" / "results"
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "list":
            records = load_records(docs)
            for row in load_rows(docs):
                done = [s for s in row.seeds if row.record_name(s) in records]
                print(f"{row.table}: {row.name}  seeds {list(row.seeds)}, recorded {done}")
            return 0
        if args.command == "run":
            for path in run_row(docs, args.row, args.runs_dir, given_paths(args.given)):
                print(f"wrote {path}")
            return 0
        if args.command == "add":
            print(f"wrote {add(args.run_dir, docs, args.row, args.note, args.replace)}")
            return 0
        stale = render(docs, pages(args.root), check=args.check)
        unlisted, missing = unlisted_and_missing(docs) if args.check else ([], [])
    except RnnlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for page in stale:
        print(f"{'stale' if args.check else 'rewrote'}: {page}")
    for name in unlisted:
        print(f"unlisted: {docs / 'runs' / name} (no row of published.yaml declares it)")
    for seed in missing:
        print(f"missing: {seed} has no record (python scripts/results.py run ROW)")
    return 1 if args.check and (stale or unlisted or missing) else 0


if __name__ == "__main__":
    sys.exit(main())
