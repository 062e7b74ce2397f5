"""Resume: a job of a sweep that already completed is skipped; an unfinished one continues
from its ``last.ckpt``. A job folder is reused only if it was made with the same overrides."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rnnlab.errors import ConfigError
from rnnlab.runs.folder import LAST_CHECKPOINT, defining_overrides, read_metrics, read_overrides

log = logging.getLogger(__name__)

FINISHED = ("completed", "pruned")  # a pruned trial ran as far as its study wanted


def previous_outcome(run_dir: Path, overrides: list[str] | None) -> tuple[str, dict[str, Any] | Path | None]:
    """``("completed", metrics)``, ``("continue", last_ckpt)`` or ``("fresh", None)``."""
    saved = read_overrides(run_dir)
    if saved is not None and overrides is not None:
        mine, theirs = sorted(defining_overrides(overrides)), sorted(defining_overrides(saved))
        if mine != theirs:
            raise ConfigError(
                f"{run_dir} was made with overrides {theirs}, not {mine}: resume it with the same "
                f"command and hydra.sweep.dir (or hydra.run.dir) pointing at it"
            )
    metrics = read_metrics(run_dir)
    if metrics is not None and metrics.get("status") in FINISHED:
        return "completed", metrics
    last = run_dir / LAST_CHECKPOINT
    if last.is_file():
        return "continue", last
    return "fresh", None
