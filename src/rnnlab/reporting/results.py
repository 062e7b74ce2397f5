"""Published results, regenerated from run folders.

Every figure in the README and ``docs/`` comes from a summary of one run folder: its metrics,
the command that made it and its provenance (commit, machine, threads, date), kept as a small
JSON file under ``docs/results/runs/<table>/``. Tables in the markdown files are the blocks
between ``<!-- results:<table> -->`` and ``<!-- /results -->``; ``render`` rewrites them from the
summaries, ``check`` says whether the committed text is what ``render`` would write. A figure
whose run folder was not kept says so and names the commit that reported it.

``docs/results/tables.yaml`` says what each table shows: its metric columns and, for a table
that gathers rows from others (the README's headline), which rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rnnlab.errors import RnnlabError
from rnnlab.io import atomic_write_json, atomic_write_text
from rnnlab.reporting.tables import markdown_table
from rnnlab.runs.folder import defining_overrides, read_metrics, read_overrides, read_provenance

# overrides that change where files go or what the terminal shows, never a figure: left out of a row's command
DISPLAY_ONLY = ("paths.", "trainer.enable_progress_bar", "trainer.enable_model_summary")
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)
FORMATS = {
    "pct": lambda v: f"{100 * v:.2f} %",
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


def summarize(run_dir: Path, table: str, row: str, order: int = 0, note: str | None = None) -> dict[str, Any]:
    """The summary of a completed run folder that a table row is rendered from."""
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
        "order": order,
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


def add(run_dir: Path, docs: Path, table: str, row: str, order: int = 0, note: str | None = None) -> Path:
    name = re.sub(r"[^\w.+-]", "-", row)
    path = docs / "runs" / table / f"{name}.json"
    atomic_write_json(path, summarize(run_dir, table, row, order, note))
    return path


def load_summaries(docs: Path) -> dict[str, list[dict[str, Any]]]:
    """``{table: [summary, ...]}`` ordered by each summary's ``order`` (then row name)."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((docs / "runs").glob("*/*.json")):
        summary = json.loads(path.read_text(encoding="utf-8"))
        tables.setdefault(path.parent.name, []).append(summary)
    for rows in tables.values():
        rows.sort(key=lambda s: (s.get("order", 0), s["row"]))
    return tables


def _value(summary: dict[str, Any], metric: str) -> Any:
    return summary.get(metric) if metric in ("best_score", "wall_time_s") else summary["metrics"].get(metric)


def _short(commit: str) -> str:
    return commit[:7] if re.fullmatch(r"[0-9a-f]{40}", commit) else commit


def _commit(summary: dict[str, Any]) -> str:
    """The commit that made a row; a run continued at another commit names the earlier ones first."""
    final = _short(str(summary.get("commit") or "")) + (" + patch" if summary.get("dirty") else "")
    return ", then ".join([*(_short(str(c)) for c in summary.get("earlier_commits") or []), final])


def render_table(spec: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    columns = [Column(*c) for c in spec["columns"]]
    header = ["run", "command", *(c.header for c in columns), "wall time", "machine", "commit", "date"]
    body = []
    for s in rows:
        values = []
        for c in columns:
            value = _value(s, c.metric)
            values.append(FORMATS[c.format](value) if isinstance(value, (int, float)) else "—")
        wall = s.get("wall_time_s")
        where = s["machine"] + ("" if s.get("source") == "run folder" else " ¹")
        body.append(
            [s["row"], f"`{s['command']}`", *values, f"{wall:,.0f} s" if wall else "—", where, _commit(s), s["date"]]
        )
    table = markdown_table(header, body, width=None)  # a command cut short reproduces nothing
    if any(s.get("source") != "run folder" for s in rows):
        table += "\n\n¹ the run folder was not kept: the figures are as reported at the commit named."
    notes = [f"- {s['row']}: {s['note']}" for s in rows if s.get("note")]
    return table + ("\n\n" + "\n".join(notes) if notes else "")


def render_all(docs: Path) -> dict[str, str]:
    """``{table name: markdown}`` for every table ``tables.yaml`` names."""
    specs = yaml.safe_load((docs / "tables.yaml").read_text(encoding="utf-8")) or {}
    summaries = load_summaries(docs)
    out = {}
    for name, spec in specs.items():
        if "rows" in spec:  # gathered from other tables: "table/row" references
            rows = []
            for ref in spec["rows"]:
                table, _, row = ref.partition("/")
                found = [s for s in summaries.get(table, []) if s["row"] == row]
                if not found:
                    raise RnnlabError(f"{docs / 'tables.yaml'}: {name} lists {ref!r}, which has no summary")
                rows += found
        else:
            rows = summaries.get(name, [])
        out[name] = render_table(spec, rows)
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
