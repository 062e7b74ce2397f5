"""Replay a run (or a sweep) from its folder: python scripts/rerun.py RUN_DIR [KEY=VALUE ...] [--into NEW_DIR]

Composes the run's saved task settings with rnnlab's own Hydra settings, runs the recorded commit
in a temporary git worktree unless --current-code (a recorded patch on top only with --trust-code,
after listing the files it changes), prints both metric sets and what differs between the two
runs (code, packages, processor, threads, data checksums), and exits 0 only if the metrics match;
2 when the folder is refused or cannot be replayed."""

import argparse
import sys
from pathlib import Path

from rnnlab.errors import RnnlabError
from rnnlab.io import atomic_write_text
from rnnlab.reporting.rerun import Outcome, likely_cause, rerun
from rnnlab.reporting.tables import markdown_table


def show(outcome: Outcome) -> None:
    print(f"\n{outcome.run_dir} → {outcome.new_dir}")
    print(f"{'metric':<26} {'original':>14} {'rerun':>14}")
    for key in sorted(k for k in {*outcome.old, *outcome.new} if "/" in k and not k.startswith("member")):
        mark = "  <- differs" if key in outcome.differ else ""
        print(f"{key:<26} {outcome.old.get(key, '-')!s:>14.14} {outcome.new.get(key, '-')!s:>14.14}{mark}")
    if outcome.causes:
        print("differences between the two runs:")
        for what, old, new in outcome.causes:
            print(f"  {what}: {old} → {new}")
    else:
        print("the two runs were made by the same code, packages, machine settings and data")
    if outcome.matches:
        print("metrics match")
    else:
        cause = likely_cause(outcome.causes)
        print(f"{len(outcome.differ)} metric(s) differ; likely cause: {cause or 'none recorded (nondeterminism?)'}")


def sweep_table(outcomes: list[Outcome]) -> str:
    """Original against rerun, one row per job, for the metrics every job reports."""
    keys = sorted(set.intersection(*(set(o.old) for o in outcomes)) & {k for k in outcomes[0].old if "/" in k})
    rows = []
    for o in outcomes:
        row = [o.run_dir.name]
        for key in keys:
            row += [o.old.get(key), o.new.get(key)]
        rows.append([*row, "yes" if o.matches else f"no ({', '.join(o.differ)})"])
    header = ["job", *[f"{k} {side}" for k in keys for side in ("original", "rerun")], "match"]
    return markdown_table(header, rows, digits=6)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run folder, or a multirun folder (every completed job)")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE settings for the rerun (e.g. paths.data_dir=...)")
    parser.add_argument("--into", type=Path, default=None, help="folder of the rerun (default: beside RUN_DIR)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="allowed absolute difference per metric")
    parser.add_argument("--current-code", action="store_true", help="run today's code, not the recorded commit")
    parser.add_argument(
        "--trust-config", action="store_true", help="run a config that names foreign _target_s, resolvers or folders"
    )
    parser.add_argument("--trust-code", action="store_true", help="apply the run's recorded patch (it is code)")
    parser.add_argument("--jobs", default=None, help="a sweep's jobs to rerun, e.g. 0,3 (default: all completed)")
    args = parser.parse_intermixed_args()  # KEY=VALUE settings before or after the options
    jobs = [int(j) for j in args.jobs.split(",")] if args.jobs else None
    try:
        outcomes = rerun(
            args.run_dir,
            args.into,
            tolerance=args.tolerance,
            current_code=args.current_code,
            trust_config=args.trust_config,
            extra=args.overrides,
            jobs=jobs,
            trust_code=args.trust_code,
        )
    except RnnlabError as exc:
        for line in str(exc).splitlines() or [""]:  # a sweep: one line per refused job
            print(f"error: {line}", file=sys.stderr)
        return 2
    for outcome in outcomes:
        show(outcome)
    if len(outcomes) > 1 or outcomes[0].run_dir != args.run_dir.resolve():
        table = sweep_table(outcomes)
        path = outcomes[0].new_dir.parent / "rerun.md"
        atomic_write_text(path, f"# Rerun of {args.run_dir}\n\n{table}\n")
        print(f"\n{table}\nwrote {path}")
    matched = sum(o.matches for o in outcomes)
    print(f"\n{matched} of {len(outcomes)} run(s) match")
    return 0 if matched == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
