"""Hyper-parameter search with Optuna: the study's storage, and a trial's side inside a training job.

The search itself (ask a trial, launch its job, tell the result) is the Hydra sweeper in
``hydra_plugins/rnnlab_optuna_sweeper``; a job learns which trial it is from ``tune.*`` in its
config, reports the monitored metric to the study after every validation, and stops early when
the study's pruner says so. Optuna is an optional dependency (the ``sweep`` extra): it is
imported only when a search runs.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from rnnlab.errors import ConfigError

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal:"
STUDY_FILE = "optuna_study.json"  # written into a search's sweep folder: where its report finds the study
PRUNER_ATTR = "rnnlab_pruner"  # the study's pruner config: a pruner is a process's object, not the storage's
PRUNERS = "optuna.pruners."


def optuna_module():
    try:
        import optuna
    except ImportError as exc:  # the sweep extra is opt-in
        raise ConfigError('hyper-parameter search needs Optuna: pip install -e ".[sweep]"') from exc
    return optuna


def storage_spec(spec: str) -> str:
    """A storage as every process must read it: file-based storages with absolute paths.

    ``journal:<file>`` (or a file ending in .journal / .log) is Optuna's journal file, right for
    several processes on one machine; ``sqlite:///<file>`` too; any other SQLAlchemy URL (e.g.
    ``postgresql://user@host/db``) is shared by machines.
    """
    if spec.startswith(JOURNAL_PREFIX) or spec.endswith((".journal", ".log")):
        path = Path(spec.removeprefix(JOURNAL_PREFIX)).expanduser().resolve()
        return f"{JOURNAL_PREFIX}{path}"
    if spec.startswith("sqlite:///") and not spec.startswith("sqlite:////"):
        return f"sqlite:///{Path(spec.removeprefix('sqlite:///')).expanduser().resolve()}"
    return spec


def open_storage(spec: str, heartbeat_interval: int | None = None):
    """The Optuna storage a spec names (folders created for file-based ones)."""
    optuna = optuna_module()
    spec = storage_spec(spec)
    if spec.startswith(JOURNAL_PREFIX):
        path = Path(spec.removeprefix(JOURNAL_PREFIX))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    if spec.startswith("sqlite:///"):
        Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # an RDB storage can tell a trial whose process died from one still running (heartbeats)
    return optuna.storages.RDBStorage(spec, heartbeat_interval=heartbeat_interval)


def build_pruner(spec: dict[str, Any] | None):
    """The pruner a config names (one of ``optuna.pruners``; nothing else is built from a study)."""
    optuna = optuna_module()
    if not spec:
        return optuna.pruners.NopPruner()
    target = str(spec.get("_target_", ""))
    name = target.removeprefix(PRUNERS)
    if not target.startswith(PRUNERS) or not name.isidentifier() or not hasattr(optuna.pruners, name):
        raise ConfigError(f"hydra.sweeper.pruner._target_={target!r}: choose a pruner of optuna.pruners")
    return getattr(optuna.pruners, name)(**{k: v for k, v in spec.items() if k != "_target_"})


def owner() -> dict[str, Any]:
    """Who runs a trial: a trial RUNNING under a process that is gone is stale."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def is_stale(user_attrs: dict[str, Any]) -> bool:
    """A RUNNING trial launched on this machine by a process that no longer exists."""
    who = user_attrs.get("rnnlab_owner") or {}
    if who.get("host") != socket.gethostname() or not who.get("pid"):
        return False
    try:
        os.kill(int(who["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class TrialReporter(pl.Callback):
    """Reports the monitored metric to the trial after every validation; stops the run when pruned.

    Under DDP, rank 0 talks to the study and the decision is broadcast, so every rank stops at
    the same step (a rank that raised alone would leave the others waiting in a collective).
    """

    def __init__(self, storage: str, study: str, trial: int, monitor: str):
        self.storage, self.study_name, self.trial_number, self.monitor = storage, study, trial, monitor
        self.pruned = False
        self._trial = None

    def _open(self):
        if self._trial is None:
            optuna = optuna_module()
            storage = open_storage(self.storage)
            pruner = build_pruner(
                optuna.load_study(study_name=self.study_name, storage=storage).user_attrs.get(PRUNER_ATTR)
            )
            study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=pruner)
            # Trial(study, id) is how Optuna hands a trial to another process; the id is the storage's
            trial_id = next(t._trial_id for t in study.get_trials(deepcopy=False) if t.number == self.trial_number)
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None and math.isfinite(float(value)):
                trial = self._open()
                trial.report(float(value), step=trainer.global_step)
                prune = trial.should_prune()
        prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            log.info("trial %d pruned at step %d (%s)", self.trial_number, trainer.global_step, self.monitor)
            self.pruned = True
            trainer.should_stop = True


def reporter_from_config(tune: dict[str, Any] | None, monitor: str) -> TrialReporter | None:
    """The reporter for a job the sweeper launched (``tune.{storage,study,trial}`` in its config)."""
    if not tune:
        return None
    missing = [k for k in ("storage", "study", "trial") if tune.get(k) is None]
    if missing:
        raise ConfigError(f"tune.{missing[0]} is not set: tune.* is written by the Optuna sweeper, not by hand")
    return TrialReporter(str(tune["storage"]), str(tune["study"]), int(tune["trial"]), monitor)
