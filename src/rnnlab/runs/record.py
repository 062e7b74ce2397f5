"""What a run writes into its folder: the command, what made it, and ``metrics.json`` however it ends.

``metrics.json`` is one flat object, written atomically, failed runs included: a sweep reads these
files to know what finished, so a run that raises still leaves one with ``status: failed`` and the
error, and a run never leaves a half-written one.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from lightning.fabric.utilities.rank_zero import rank_zero_only

from rnnlab.io import atomic_write_json, atomic_write_text
from rnnlab.runs import provenance
from rnnlab.runs.folder import COMMAND, METRICS, PATCH, PROVENANCE, RESOLVED_CONFIG, read_metrics, read_provenance

METRIC_PREFIXES = ("train/", "val/", "test/")
# speed (``rnnlab.training.throughput``): recorded beside the metrics, never compared between runs, since the
# machine and whatever else it ran set it
PERF_PREFIX = "perf/"


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Plain floats of the ``train/* val/* test/* perf/*`` entries (tensors converted, others dropped)."""
    out = {}
    for key, value in metrics.items():
        if not key.startswith((*METRIC_PREFIXES, PERF_PREFIX)):
            continue
        value = float(value.item() if hasattr(value, "item") else value)
        out[key] = value if math.isfinite(value) else str(value)
    return out


class RunRecord:
    """One run folder from start to end (context manager).

    On entry it writes the command line; ``start`` writes what made the run (the resolved config
    and ``provenance.json``), ``add_data`` the data files it read; on exit, however the run ends,
    ``metrics.json`` (status, error, wall time, metrics) and the provenance's end time.

    A run continued in its own folder (``resume=true``, or ``ckpt_path`` to one of its checkpoints) was
    made by more than one process, perhaps at other commits or on other machines: ``start`` keeps each
    earlier process's provenance, with its wall time, under ``earlier_processes``, and ``metrics.json``
    gives the wall time of them all (``processes`` says how many; a process killed before it could
    write one adds nothing). From a checkpoint of another folder a run starts a record of its own.
    """

    def __init__(self, output_dir: str | Path, seed: int | None, ckpt_path: str | Path | None = None):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / METRICS
        self.data: dict[str, Any] = {"status": "running", "seed": seed}
        self.config: dict[str, Any] | None = None
        self.provenance: dict[str, Any] | None = None
        continuing = ckpt_path is not None and Path(ckpt_path).resolve().is_relative_to(self.output_dir.resolve())
        self._earlier = self._earlier_processes() if continuing else []
        self._start = time.perf_counter()

    def _earlier_processes(self) -> list[dict[str, Any]]:
        """The provenance of every process that worked on this folder before, oldest first."""
        previous = read_provenance(self.output_dir)
        if not previous:
            return []
        earlier = previous.pop("earlier_processes", [])
        if "wall_time_s" not in previous:  # written before processes kept their own: metrics.json's is its
            ended = "ended" in previous  # a process killed outright wrote neither
            previous["wall_time_s"] = (read_metrics(self.output_dir) or {}).get("wall_time_s") if ended else None
        return [*earlier, previous]

    def update(self, values: Mapping[str, Any]) -> None:
        self.data.update(values)

    def start(self, config: dict[str, Any]) -> None:
        """Record what made the run before it does anything: its config, code, packages and machine."""
        self.config = config
        self.provenance = provenance.collect(config)
        if self._earlier:
            self.provenance["earlier_processes"] = self._earlier
        self._write(RESOLVED_CONFIG, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        self._write_provenance()

    def add_data(self, record: Mapping[str, Any] | None) -> None:
        """A data file the run read (its sha256 and the cache entry built from it)."""
        if record and self.provenance is not None:
            self.provenance["data"].append(dict(record))
            self._write_provenance()

    def __enter__(self) -> RunRecord:
        self._write(COMMAND, " ".join([sys.executable, *sys.argv]) + "\n")
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        own = round(time.perf_counter() - self._start, 3)
        earlier = [p["wall_time_s"] for p in self._earlier if isinstance(p.get("wall_time_s"), (int, float))]
        self.data["wall_time_s"] = round(own + sum(earlier), 3)
        if self._earlier:
            self.data["processes"] = len(self._earlier) + 1
        if exc is None:
            self.data["status"] = "completed" if self.data["status"] == "running" else self.data["status"]
        else:
            self.data["status"] = "failed"
            message = str(exc) or (exc_type.__doc__ or "").strip().split("\n")[0]
            self.data["error"] = f"{exc_type.__name__}: {message}"
        self._write_json(METRICS, self.data)
        if self.provenance is not None:
            self.provenance.update(ended=provenance.now(), status=self.data["status"], wall_time_s=own)
            self._write_provenance()
        return False

    def _write_provenance(self) -> None:
        """``provenance.json``, with the uncommitted diff beside it as a patch ``git apply`` takes."""
        record = dict(self.provenance)
        code = dict(record["code"])
        patch = code.pop("patch", None)
        if patch:
            self._write(PATCH, patch)
            code["patch_file"] = PATCH
        record["code"] = code
        self._write_json(PROVENANCE, record)

    @rank_zero_only  # under DDP every rank runs the task; one writes the folder
    def _write(self, name: str, text: str) -> None:
        atomic_write_text(self.output_dir / name, text)

    @rank_zero_only
    def _write_json(self, name: str, data: Any) -> None:
        atomic_write_json(self.output_dir / name, data)
