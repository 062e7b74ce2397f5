"""The run folder's ``metrics.json``: one flat object, written atomically, failed runs included.

A sweep reads these files to know what finished, so a run that raises still leaves
one with ``status: failed`` and the error, and a run never leaves a half-written one.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only

from rnnlab.io import atomic_write_json, atomic_write_text
from rnnlab.runs.folder import COMMAND, METRICS

METRIC_PREFIXES = ("train/", "val/", "test/")


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Plain floats of the ``train/* val/* test/*`` entries (tensors converted, others dropped)."""
    out = {}
    for key, value in metrics.items():
        if not key.startswith(METRIC_PREFIXES):
            continue
        value = float(value.item() if hasattr(value, "item") else value)
        out[key] = value if math.isfinite(value) else str(value)
    return out


class RunRecord:
    """Context manager: collects metrics, times the run, writes ``metrics.json`` however it ends."""

    def __init__(self, output_dir: str | Path, seed: int | None):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / METRICS
        self.data: dict[str, Any] = {"status": "running", "seed": seed}
        self._start = time.perf_counter()

    def update(self, values: Mapping[str, Any]) -> None:
        self.data.update(values)

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.data["wall_time_s"] = round(time.perf_counter() - self._start, 3)
        if exc is None:
            self.data["status"] = "completed"
        else:
            self.data["status"] = "failed"
            message = str(exc) or (exc_type.__doc__ or "").strip().split("\n")[0]
            self.data["error"] = f"{exc_type.__name__}: {message}"
        self.write()
        return False

    @rank_zero_only
    def write(self) -> None:
        atomic_write_json(self.path, self.data)


@rank_zero_only
def save_command(output_dir: str | Path) -> None:
    """The exact command line, so a person can see (and rerun) how the folder was made."""
    atomic_write_text(Path(output_dir) / COMMAND, " ".join([sys.executable, *sys.argv]) + "\n")
