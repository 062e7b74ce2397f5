"""The declared list of published runs: which runs make the tables, and how to make them again.

``docs/results/published.yaml`` lists rows; each is a name, the script and preset that ran, its
overrides, its seeds, the table it belongs to and the anchor it stands beside (a figure from
elsewhere, or another row). Each seed of a row is one record, ``runs/<table>/<preset>-<hash>-s<seed>.json``:
the hash is of what defines the row (script, preset, overrides and, for a row kept for the code of
an earlier commit, that commit), so a record's name never changes when its prose does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rnnlab.errors import RnnlabError

LIST = "published.yaml"
RECORDS = "runs"
ROW_KEYS = ("name", "table", "script", "preset", "overrides", "seeds", "anchor", "at", "note")


@dataclass(frozen=True)
class Row:
    """One published row: every seed of one command."""

    name: str
    table: str
    preset: str
    seeds: tuple[int, ...] = (1,)
    overrides: tuple[str, ...] = ()
    script: str = "train.py"
    anchor: str | None = None  # what the figure stands beside (a paper's figure, a control row)
    at: str | None = None  # the code of that commit, where the same command was published at several
    note: str | None = None  # a short line under the table, when the row needs one

    @property
    def key(self) -> str:
        defining = [self.script, self.preset, sorted(self.overrides), self.at]
        return hashlib.sha256(json.dumps(defining).encode()).hexdigest()[:8]

    def record_name(self, seed: int) -> str:
        preset = self.preset if self.script == "train.py" else self.script.removesuffix(".py")
        return f"{self.table}/{preset}-{self.key}-s{seed}.json"

    def arguments(self, seed: int | None = None) -> list[str]:
        """The script's arguments: the preset, the overrides and the seed (train.py)."""
        if self.script != "train.py":
            return list(self.overrides)
        return [f"experiment={self.preset}", *self.overrides, *([f"seed={seed}"] if seed is not None else [])]

    def command(self) -> str:
        """The command a reader types: every seed at once (a multirun) when there are several."""
        if self.script != "train.py":
            return " ".join([f"python scripts/{self.script}", *self.arguments()])
        seeds = ",".join(map(str, self.seeds))
        return " ".join(["python scripts/train.py", *(["-m"] if len(self.seeds) > 1 else []), *self.arguments()]) + (
            f" seed={seeds}"
        )


def row_of(entry: Any, where: Path) -> Row:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise RnnlabError(f"{where}: each row is a mapping with a name; got {entry!r}")
    unknown = sorted(set(entry) - set(ROW_KEYS))
    if unknown:
        raise RnnlabError(f"{where}: row {entry['name']!r} has {unknown[0]!r}; a row has {', '.join(ROW_KEYS)}")
    missing = [k for k in ("table", "preset") if not entry.get(k)]
    if missing:
        raise RnnlabError(f"{where}: row {entry['name']!r} needs {missing[0]}")
    seeds = entry.get("seeds", [1])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise RnnlabError(f"{where}: row {entry['name']!r}: seeds must be a list of integers, got {seeds!r}")
    values = {k: entry[k] for k in ("anchor", "at", "note", "script") if entry.get(k) is not None}
    return Row(
        name=entry["name"],
        table=entry["table"],
        preset=str(entry["preset"]),
        seeds=tuple(seeds),
        overrides=tuple(str(o) for o in entry.get("overrides") or []),
        **values,
    )


def load_rows(docs: Path) -> list[Row]:
    """The declared rows, in the order of the list; names and record names unique."""
    where = docs / LIST
    if not where.is_file():
        raise RnnlabError(f"{where} is missing: it lists the published rows (python scripts/results.py --help)")
    rows = [row_of(entry, where) for entry in yaml.safe_load(where.read_text(encoding="utf-8")) or []]
    seen: dict[str, str] = {}
    for row in rows:
        for name in (f"name {row.name}", *(row.record_name(s) for s in row.seeds)):
            if name in seen:
                raise RnnlabError(f"{where}: {name!r} is declared twice (rows {seen[name]!r} and {row.name!r})")
            seen[name] = row.name
    return rows


def find_row(rows: list[Row], name: str, where: Path) -> Row:
    for row in rows:
        if row.name == name:
            return row
    raise RnnlabError(f"{where}: no row is named {name!r} (python scripts/results.py list shows them)")
