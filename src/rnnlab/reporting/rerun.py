"""Rerun a finished run from its saved overrides into a new folder and compare the metrics.

On CPU with ``trainer.deterministic=true`` (the default) the two metric sets are identical.
"""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from rnnlab.errors import RnnlabError
from rnnlab.runs.folder import defining_overrides, read_metrics, read_overrides
from rnnlab.runs.record import METRIC_PREFIXES

TRAIN = [sys.executable, "-m", "rnnlab.cli.train"]  # found through the package, installed or not


def rerun_command(run_dir: Path, new_dir: Path) -> list[str]:
    overrides = read_overrides(run_dir)
    if overrides is None:
        raise RnnlabError(f"{run_dir} has no .hydra/overrides.yaml: is it a run folder made by scripts/train.py?")
    return [*TRAIN, *defining_overrides(overrides), f"hydra.run.dir={new_dir}"]


def compare(old: dict[str, Any], new: dict[str, Any], tolerance: float = 0.0) -> list[str]:
    """The metric keys whose values differ by more than ``tolerance`` (or exist on one side only)."""
    keys = sorted(k for k in set(old) | set(new) if k.startswith(METRIC_PREFIXES))
    differ = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if not isinstance(a, float) or not isinstance(b, float):
            if a != b:
                differ.append(key)
        elif not math.isclose(a, b, rel_tol=0.0, abs_tol=tolerance):
            differ.append(key)
    return differ


def rerun(run_dir: Path, new_dir: Path | None = None, tolerance: float = 0.0) -> tuple[dict, dict, list[str]]:
    run_dir = Path(run_dir).resolve()
    old = read_metrics(run_dir) or {}
    if old.get("status") != "completed":
        raise RnnlabError(f"{run_dir}/metrics.json says {old.get('status')!r}: only completed runs can be compared")
    new_dir = Path(new_dir) if new_dir else run_dir.with_name(f"{run_dir.name}-rerun-{datetime.now():%H-%M-%S}")
    proc = subprocess.run(rerun_command(run_dir, new_dir), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RnnlabError(f"the rerun in {new_dir} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    new = read_metrics(new_dir) or {}
    return old, new, compare(old, new, tolerance)
