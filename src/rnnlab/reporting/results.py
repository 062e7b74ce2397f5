"""Published results, regenerated from the records of run folders.

Every figure in the README and ``docs/`` comes from a record of one run folder: its metrics, the
command that made it, its provenance (commit, machine, threads, date) and the prose about it, kept
as a small JSON file under ``docs/results/runs/<table>/``, one per seed of a row of the declared
list (``reporting.published``). Tables in the markdown files are the blocks between
``<!-- results:<table> -->`` and ``<!-- /results -->``; ``render`` rewrites them from the records,
one line per row (mean ± std over its seeds), and ``stale`` says what is out of date. A figure
whose run folder was not kept says so and names the commit that reported it.

``docs/results/tables.yaml`` says what each table shows: its metric columns and, for a table
that gathers rows from others (the README's headline), which rows.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rnnlab.errors import RnnlabError
from rnnlab.io import atomic_write_json, atomic_write_text
from rnnlab.reporting.published import RECORDS, Row, find_row, load_rows
from rnnlab.reporting.tables import markdown_table
from rnnlab.runs.folder import defining_overrides, read_metrics, read_overrides, read_provenance

log = logging.getLogger(__name__)

# overrides that change where files go or what the terminal shows, never a figure: left out of a row's command
DISPLAY_ONLY = ("paths.", "trainer.enable_progress_bar", "trainer.enable_model_summary")
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)
FORMATS = {
    "pct": lambda v: f"{100 * v:.2f} %",
    "4": lambda v: f"{v:.4f}",  # where the anchor is published to four places (nanoGPT's 1.4697)
    "3": lambda v: f"{v:.3f}",
    "1": lambda v: f"{v:.1f}",
    "int": lambda v: f"{v:,.0f}",
}


@dataclass(frozen=True)
class Column:
    header: str
    metric: str
    format: str = "3"


def machine_of(record: dict[str, Any]) -> str:
    """A run's machine in a few words: the GPU when one ran it, else the CPU model, its ISA and threads."""
    plat = record.get("platform") or {}
    cpu = plat.get("cpu") or {}
    if plat.get("gpus"):
        return f"{plat['gpus'][0]}"
    model = cpu.get("model") or "CPU"
    isa = plat.get("torch_cpu_capability")
    threads = plat.get("torch_threads")
    return f"{model}{f' ({isa})' if isa else ''}, {threads} thread{'' if threads == 1 else 's'}"


def script_of(record: dict[str, Any]) -> str:
    """The script that made a run (``train.py``, ``eval.py``...), from the command line it recorded."""
    argv = [str(a) for a in record.get("command") or []]
    scripts = [Path(a).name for a in argv[1:2] if a.endswith(".py")]
    modules = [argv[i + 1].rsplit(".", 1)[-1] for i, a in enumerate(argv[:-1]) if a == "-m"]
    name = (scripts or [f"{m}.py" for m in modules] or ["train.py"])[0]
    return {"evaluate.py": "eval.py"}.get(name, name)


def without_local_paths(override: str) -> str:
    """An override as a reader can use it: a path on the machine that made the run is shortened to
    the run folder and file it names (``model.pretrained=<lm_fwd>/checkpoints/best-000-002584.ckpt``)."""
    key, sep, value = override.partition("=")
    path = Path(value)
    if not sep or not path.is_absolute():
        return override
    shown = f"<{path.parent.parent.name}>/checkpoints/{path.name}" if path.parent.name == "checkpoints" else path.name
    return f"{key}={shown}"


def summarize(run_dir: Path, table: str, row: str, note: str | None = None) -> dict[str, Any]:
    """The record of a completed run folder that a table row is rendered from."""
    metrics = read_metrics(run_dir) or {}
    if metrics.get("status") != "completed":
        raise RnnlabError(f"{run_dir}: metrics.json says {metrics.get('status')!r}; only completed runs are published")
    record = read_provenance(run_dir)
    if not record:
        raise RnnlabError(f"{run_dir} has no provenance.json: its code and machine are unknown")
    code = record.get("code") or {}
    defining = defining_overrides(read_overrides(run_dir) or [])
    overrides = [without_local_paths(o) for o in defining if not o.startswith(DISPLAY_ONLY)]
    summary = {
        "table": table,
        "row": row,
        "seed": metrics.get("seed"),
        "command": " ".join([f"python scripts/{script_of(record)}", *overrides]),
        "metrics": {k: v for k, v in metrics.items() if "/" in k and isinstance(v, (int, float))},
        "best_score": metrics.get("best_score"),
        "wall_time_s": metrics.get("wall_time_s"),
        "commit": code.get("commit") or f"rnnlab {code.get('version')}",
        "dirty": bool(code.get("dirty")),
        "machine": machine_of(record),
        "torch": (record.get("packages") or {}).get("torch"),
        "date": str(record.get("started", ""))[:10],
        "source": "run folder",
    }
    # a run continued in its folder (resume) may have been trained at more than one commit
    earlier = [(p.get("code") or {}).get("commit") for p in record.get("earlier_processes") or []]
    earlier = [c for c in dict.fromkeys(earlier) if c and c != summary["commit"]]
    if earlier:
        summary["earlier_commits"] = earlier
    if note:
        summary["note"] = note
    return summary


def add(run_dir: Path, docs: Path, row_name: str, note: str | None = None, replace: bool = False) -> Path:
    """Record a completed run folder as one seed of a declared row (its seed read from the folder).

    A seed's record is replaced only when asked: an ``eval.py`` folder carries the ``seed=`` it was given
    (1 unless told), not the seed that trained its checkpoint, and would silently take another seed's place.
    """
    row = find_row(load_rows(docs), row_name, docs / "published.yaml")
    record = summarize(run_dir, row.table, row.name, note)
    if record["seed"] not in row.seeds:
        raise RnnlabError(f"{run_dir} ran seed {record['seed']}; row {row.name!r} declares seeds {list(row.seeds)}")
    path = docs / RECORDS / row.record_name(record["seed"])
    if path.exists() and not replace:
        raise RnnlabError(
            f"{path} already records seed {record['seed']} of {row.name!r}; {run_dir} ran seed {record['seed']} "
            f"(eval.py: pass the checkpoint's seed=N), or add --replace to record it in that one's place"
        )
    atomic_write_json(path, record)
    return path


def load_records(docs: Path) -> dict[str, dict[str, Any]]:
    """``{"<table>/<file>.json": record}`` for every record on disk."""
    return {
        path.relative_to(docs / RECORDS).as_posix(): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((docs / RECORDS).glob("*/*.json"))
    }


def _value(record: dict[str, Any], metric: str) -> Any:
    return record.get(metric) if metric in ("best_score", "wall_time_s") else record["metrics"].get(metric)


def _short(commit: str) -> str:
    return commit[:7] if re.fullmatch(r"[0-9a-f]{40}", commit) else commit


def _commit(record: dict[str, Any]) -> str:
    """The commit that made a run; a run continued at another commit names the earlier ones first."""
    final = _short(str(record.get("commit") or "")) + (" + patch" if record.get("dirty") else "")
    return ", then ".join([*(_short(str(c)) for c in record.get("earlier_commits") or []), final])


def figure(values: list[float], fmt: str) -> str:
    """One seed's value (or one all seeds share), or the mean ± standard deviation of several (the sample's, n - 1)."""
    show = FORMATS[fmt]
    if len(set(values)) == 1:  # one seed, or a value the seed does not move (a parameter count)
        return show(values[0])
    mean, std = statistics.mean(values), statistics.stdev(values)
    shown, spread = show(mean), show(std)
    unit = " %" if shown.endswith(" %") else ""
    return f"{shown.removesuffix(unit)} ± {spread.removesuffix(unit)}{unit}"


def _distinct(values: list[str]) -> str:
    return " / ".join(dict.fromkeys(v for v in values if v))


def render_table(spec: dict[str, Any], rows: list[tuple[Row, list[dict[str, Any]]]]) -> str:
    """One line per row, its figures over the seeds that have records: mean ± std (n), or n = 1."""
    columns = [Column(*c) for c in spec["columns"]]
    header = ["run", "command", "n", *(c.header for c in columns), "wall time", "machine", "commit", "date"]
    body = []
    for row, records in rows:
        values = []
        for c in columns:
            found = [v for v in (_value(r, c.metric) for r in records) if isinstance(v, (int, float))]
            values.append(figure(found, c.format) if len(found) == len(records) else "—")
        walls = [r["wall_time_s"] for r in records if r.get("wall_time_s")]
        wall = f"{statistics.mean(walls):,.0f} s" if walls and len(walls) == len(records) else "—"
        kept = all(r.get("source") == "run folder" for r in records)
        where = _distinct([r["machine"] for r in records]) + ("" if kept else " ¹")
        commits, dates = _distinct([_commit(r) for r in records]), sorted(r["date"] for r in records)
        body.append([row.name, f"`{row.command()}`", f"n = {len(records)}", *values, wall, where, commits, dates[-1]])
    table = markdown_table(header, body, width=None)  # a command cut short reproduces nothing
    if any(r.get("source") != "run folder" for _, records in rows for r in records):
        table += "\n\n¹ the run folder was not kept: the figures are as reported at the commit named."
    notes = [f"- {row.name}: beside {row.anchor}" for row, _ in rows if row.anchor]
    notes += [f"- {row.name}: {row.note}" for row, _ in rows if row.note]
    return table + ("\n\n" + "\n".join(notes) if notes else "")


def records_of(row: Row, records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [records[name] for name in (row.record_name(s) for s in row.seeds) if name in records]


def render_all(docs: Path) -> dict[str, str]:
    """``{table name: markdown}`` for every table ``tables.yaml`` names; a row without records is left out."""
    specs = yaml.safe_load((docs / "tables.yaml").read_text(encoding="utf-8")) or {}
    rows, records = load_rows(docs), load_records(docs)
    out = {}
    for name, spec in specs.items():
        if "rows" in spec:  # gathered from the other tables by row name
            chosen = [find_row(rows, ref, docs / "tables.yaml") for ref in spec["rows"]]
        else:
            chosen = [row for row in rows if row.table == name]
        out[name] = render_table(spec, [(row, found) for row in chosen if (found := records_of(row, records))])
    return out


def rewrite(text: str, tables: dict[str, str], where: Path) -> str:
    def fill(match: re.Match) -> str:
        name = match.group("name")
        if name not in tables:
            raise RnnlabError(f"{where}: the block results:{name} names no table of tables.yaml")
        return f"{match.group(1)}{tables[name]}\n{match.group(4)}"

    return BLOCK.sub(fill, text)


def render(docs: Path, pages: list[Path], check: bool = False) -> list[Path]:
    """Rewrite the result blocks of ``pages``; with ``check``, only list the pages whose blocks are stale."""
    tables = render_all(docs)
    stale = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        new = rewrite(text, tables, page)
        if new != text:
            stale.append(page)
            if not check:
                atomic_write_text(page, new)
    return stale


def unlisted_and_missing(docs: Path) -> tuple[list[str], list[str]]:
    """Records no declared row names (``unlisted``), and declared seeds that have no record (``missing``)."""
    rows, records = load_rows(docs), load_records(docs)
    declared = {row.record_name(s): (row, s) for row in rows for s in row.seeds}
    unlisted = sorted(set(records) - set(declared))
    missing = [f"{row.name!r} seed {s} ({name})" for name, (row, s) in declared.items() if name not in records]
    return unlisted, missing


PLACEHOLDER = re.compile(r"<([\w.-]+)>")


def filled(row: Row, given: dict[str, str]) -> list[str]:
    """The row's overrides with each ``<name>`` (a file made elsewhere, e.g. a language model's run) filled in."""
    wanted = [name for o in row.overrides for name in PLACEHOLDER.findall(o)]
    lacking = [name for name in dict.fromkeys(wanted) if name not in given]
    if lacking:
        raise RnnlabError(
            f"row {row.name!r} reads <{lacking[0]}> ({' '.join(o for o in row.overrides if '<' in o)}): "
            f"pass --with {lacking[0]}=<path>"
        )
    return [PLACEHOLDER.sub(lambda m: given[m.group(1)], o) for o in row.overrides]


def run_row(docs: Path, name: str, runs_dir: Path, given: dict[str, str] | None = None) -> list[Path]:
    """Train every seed of a declared row that has no record yet, one run folder per seed under ``runs_dir``
    (``resume=true``: a folder that completed is read again, an interrupted one continues), and record
    each as it finishes. Returns the records written."""
    row = find_row(load_rows(docs), name, docs / "published.yaml")
    if row.script != "train.py":
        raise RnnlabError(f"row {row.name!r} is made by scripts/{row.script}: run it, then results.py add its folder")
    if row.at:
        raise RnnlabError(
            f"row {row.name!r} stands for the code of {row.at}, not this one: replay its run folder with "
            f"scripts/rerun.py"
        )
    overrides = filled(row, given or {})
    written = []
    for seed in row.seeds:
        record = docs / RECORDS / row.record_name(seed)
        if record.is_file():
            log.info("%s seed %d: recorded already (%s)", row.name, seed, record)
            continue
        run_dir = runs_dir / Path(row.record_name(seed)).with_suffix("").name
        # the module scripts/train.py runs, so a checkout's rnnlab (PYTHONPATH) makes it, wherever --root is
        argv = [sys.executable, "-m", "rnnlab.cli.train", f"experiment={row.preset}", *overrides, f"seed={seed}"]
        argv += ["resume=true", f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"]
        log.info("%s seed %d: %s", row.name, seed, " ".join(argv[3:]))
        if subprocess.run(argv, check=False).returncode != 0:
            raise RnnlabError(f"{run_dir}: seed {seed} of {row.name!r} failed; run the same command again to resume")
        atomic_write_json(record, summarize(run_dir, row.table, row.name))
        written.append(record)
    return written
