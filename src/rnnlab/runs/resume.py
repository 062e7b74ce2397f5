"""Resume: a job of a sweep that already completed is skipped; an unfinished one continues
from its ``last.ckpt``. A job folder is reused only if it was made with the same overrides."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from rnnlab.errors import ConfigError

log = logging.getLogger(__name__)


def read_overrides(run_dir: Path) -> list[str] | None:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    return list(yaml.safe_load(path.read_text()) or [])


def previous_outcome(run_dir: Path, overrides: list[str] | None) -> tuple[str, dict[str, Any] | Path | None]:
    """``("completed", metrics)``, ``("continue", last_ckpt)`` or ``("fresh", None)``."""
    saved = read_overrides(run_dir)
    if saved is not None and overrides is not None:
        ignore = ("resume=", "+resume=", "hydra.")
        mine = sorted(o for o in overrides if not o.startswith(ignore))
        theirs = sorted(o for o in saved if not o.startswith(ignore))
        if mine != theirs:
            raise ConfigError(
                f"{run_dir} was made with overrides {theirs}, not {mine}: resume it with the same "
                f"command and hydra.sweep.dir (or hydra.run.dir) pointing at it"
            )
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text())
        except json.JSONDecodeError:
            metrics = {}
        if metrics.get("status") == "completed":
            return "completed", metrics
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return "continue", last
    return "fresh", None
