"""Resume: a job of a sweep that already completed is skipped; an unfinished one continues
from its ``last.ckpt``. A job folder is reused only if it was made with the same overrides and,
where the folder recorded its resolved config, the same settings: a preset or default that changed
since (new code) would otherwise skip a run that is not the one asked for, or continue it under
other settings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rnnlab.errors import ConfigError
from rnnlab.runs.folder import (
    LAST_CHECKPOINT,
    NOT_DEFINING,
    defining_overrides,
    flat_settings,
    read_metrics,
    read_overrides,
    read_provenance,
    read_resolved_config,
)

log = logging.getLogger(__name__)

FINISHED = ("completed", "pruned")  # a pruned trial ran as far as its study wanted


def previous_outcome(
    run_dir: Path, overrides: list[str] | None, config: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any] | Path | None]:
    """``("completed", metrics)``, ``("continue", last_ckpt)`` or ``("fresh", None)``.

    ``config`` is the resolved config of the run asked for; it must match the one the folder recorded."""
    saved = read_overrides(run_dir)
    if saved is not None and overrides is not None:
        mine, theirs = sorted(defining_overrides(overrides)), sorted(defining_overrides(saved))
        if mine != theirs:
            raise ConfigError(
                f"{run_dir} was made with overrides {theirs}, not {mine}: resume it with the same "
                f"command and hydra.sweep.dir (or hydra.run.dir) pointing at it"
            )
    recorded = read_resolved_config(run_dir)
    if recorded is not None and config is not None:
        changed = changed_settings(recorded, config)
        if changed:
            code = read_provenance(run_dir).get("code")
            commit = str(code.get("commit") or "")[:7] if isinstance(code, dict) else ""
            raise ConfigError(
                f"{run_dir} was made with other settings than this command gives now "
                f"({'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}): the code or a preset changed "
                f"since; resume it {f'at commit {commit}' if commit else 'with the code it was made with'}, "
                f"or start a new run with another hydra.run.dir"
            )
    metrics = read_metrics(run_dir)
    if metrics is not None and metrics.get("status") in FINISHED:
        return "completed", metrics
    last = run_dir / LAST_CHECKPOINT
    if last.is_file():
        return "continue", last
    return "fresh", None


def _is_location(key: str) -> bool:
    """Where a run reads and writes its files (another machine mounts them elsewhere), not what it is."""
    leaf = key.rsplit(".", 1)[-1]
    return key.split(".")[0] == "paths" or leaf.endswith("_dir") or leaf == "dirpath"


def changed_settings(recorded: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """``key: recorded -> now`` for every setting that defines the run and differs (a missing one is ``absent``)."""
    theirs, mine = flat_settings(recorded), flat_settings(config)
    keys = sorted(k for k in set(theirs) | set(mine) if k.split(".")[0] not in NOT_DEFINING and not _is_location(k))
    return [
        f"{k}: {theirs.get(k, 'absent')!r} -> {mine.get(k, 'absent')!r}"
        for k in keys
        if theirs.get(k, "absent") != mine.get(k, "absent")
    ]
