"""A Hydra sweeper over Optuna's ask-and-tell API, for Optuna ≥ 4 and SQLAlchemy 2.

    python scripts/train.py -m hparams_search=imdb_optuna hydra.sweeper.n_trials=20

The search space is ``hydra.sweeper.params`` plus any sweep on the command line, in Hydra's
override syntax: ``choice(a,b)`` / ``a,b`` (categorical), ``range(1,9,2)`` (integers or a float
grid), ``interval(1e-4,1e-2)`` (uniform), ``int(interval(16,256))``, ``tag(log, interval(...))``.
Each trial is a job of the multirun, launched by the configured launcher (``n_jobs`` at a time,
for a launcher that runs them in parallel); the job reports the monitored metric after every
validation (``rnnlab.training.tune.TrialReporter``), so the pruner can stop it, and its objective is the
best validation value of the run (``best_score`` in its ``metrics.json``).

``n_trials`` is the size of the study, not of this command: a second command on the same
storage (``journal:<file>`` or ``sqlite:///<file>`` on one machine, any SQLAlchemy URL across
machines) works on the same study, and an interrupted search, run again, goes on from the
trials already finished; a trial left RUNNING by a process that died is marked failed and its
parameters are queued again. On one machine (a journal or SQLite file) a dead process is found by
its pid; across machines (a database server such as PostgreSQL) by Optuna's heartbeats: each
worker beats for the trials it runs, and a trial silent for ``grace_period`` seconds (its job
killed or preempted) is failed by another worker and run again as a new trial
(``RetryFailedTrialCallback``); such a failure does not use the budget, and a worker waits for the
trials other workers run before it ends, so the study ends with ``n_trials`` finished and none
left RUNNING.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rnnlab.io import atomic_write_json
from rnnlab.runs.folder import read_metrics
from rnnlab.training.tune import (
    PRUNER_ATTR,
    STUDY_FILE,
    build_pruner,
    is_stale,
    open_storage,
    optuna_module,
    owner,
    storage_spec,
)

log = logging.getLogger(__name__)

DIRECTIONS = {"max": "maximize", "min": "minimize", "maximize": "maximize", "minimize": "minimize"}


def distribution(override: Override) -> Any:
    """The Optuna distribution of one sweep override."""
    optuna = optuna_module()
    dists = optuna.distributions
    value = override.value()
    log_scale = "log" in getattr(value, "tags", set())
    if override.is_choice_sweep():
        return dists.CategoricalDistribution(list(override.sweep_string_iterator()))
    if override.is_range_sweep():
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return dists.IntDistribution(value.start, value.stop - 1, step=value.step, log=log_scale)
        return dists.CategoricalDistribution(list(override.sweep_string_iterator()))
    if override.is_interval_sweep():
        if isinstance(value.start, int) and isinstance(value.end, int):
            return dists.IntDistribution(value.start, value.end, log=log_scale)
        return dists.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{override.input_line}: not a sweep rnnlab's Optuna sweeper understands")


def to_plain(node: Any) -> dict[str, Any] | None:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def suggest(trial: Any, name: str, dist: Any) -> Any:
    """``trial.suggest_*`` for one of the distributions ``distribution()`` makes (a queued trial gets its value)."""
    if hasattr(dist, "choices"):
        return trial.suggest_categorical(name, dist.choices)
    integer = isinstance(dist, optuna_module().distributions.IntDistribution)
    suggest_number = trial.suggest_int if integer else trial.suggest_float
    return suggest_number(name, dist.low, dist.high, step=dist.step, log=dist.log)


def retry_callback() -> type:
    """Optuna's callback that queues a stale trial again (its newer name, else the older one)."""
    storages = optuna_module().storages
    return getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback


def quoted(value: str) -> str:
    """A value for an override: quoted when the override grammar would read it otherwise."""
    return value if all(c.isalnum() or c in "_-./" for c in value) else "'" + value.replace("'", "\\'") + "'"


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        study_name: str,
        storage: str,
        direction: str = "maximize",
        n_trials: int = 20,
        n_jobs: int = 1,
        sampler: Any = None,
        pruner: Any = None,
        params: dict[str, str] | None = None,
        enqueue: list[dict[str, Any]] | None = None,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        max_retry: int | None = None,
    ) -> None:
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"hydra.sweeper.direction={direction!r}; choose maximize or minimize (max / min)")
        self.study_name, self.storage = study_name, storage_spec(storage)
        self.direction = DIRECTIONS[direction]
        self.n_trials, self.n_jobs = n_trials, max(n_jobs, 1)
        self.sampler, self.pruner = sampler, pruner  # configs (_recursive_: false): built here, the pruner in jobs too
        self.params = dict(params or {})
        self.enqueue = list(enqueue or [])
        self.heartbeat_interval, self.grace_period, self.max_retry = heartbeat_interval, grace_period, max_retry
        self.config: DictConfig | None = None
        self.launcher = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ---- the study
    def _study(self, space: dict[str, Any]):
        optuna = optuna_module()
        pruner = to_plain(self.pruner)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self._storage(),
            sampler=self._sampler(0),  # replaced for each trial (``_ask``)
            pruner=build_pruner(pruner),
            direction=self.direction,
            load_if_exists=True,
        )
        study.set_user_attr(PRUNER_ATTR, pruner)  # the jobs decide with the same pruner
        if not study.trials:  # a new study starts from the configurations the user names
            for params in self.enqueue:
                study.enqueue_trial({k: self._as_choice(space.get(k), v) for k, v in params.items()})
        if not self._beats(study):  # with heartbeats, Optuna finds the stale trials (``_fail_stale``)
            self._requeue_stale(study)
        return study

    def _storage(self):
        """The study's storage; a database server's with heartbeats, so that a trial whose worker died is run again.

        A journal or SQLite file lives on one machine, where a dead worker is found at once by its pid."""
        if self.storage.startswith(("journal:", "sqlite:")) or not self.heartbeat_interval:
            return open_storage(self.storage)
        optuna = optuna_module()
        rdb = optuna.storages.RDBStorage
        # the newer name of the argument where Optuna has it (the older one warns there)
        key = next(
            k
            for k in ("heartbeat_stale_trial_callback", "failed_trial_callback")
            if k in inspect.signature(rdb).parameters
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: since Optuna 2.9
            retry = retry_callback()(max_retry=self.max_retry)
            return rdb(
                self.storage, heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period, **{key: retry}
            )

    # Optuna beats only inside study.optimize; with ask-and-tell its heartbeat helpers are the way in
    @staticmethod
    def _beats(study) -> bool:
        return optuna_module().storages._heartbeat.is_heartbeat_enabled(study._storage)

    def _fail_stale(self, study) -> None:
        """Trials whose worker stopped beating: failed, and queued again by the retry callback."""
        if self._beats(study):
            optuna = optuna_module()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)

    def _sampler(self, trial_number: int) -> Any:
        """The sampler for one trial, its seed moved on by the trial's number.

        One seeded stream per command would hand two commands sharing a study the same
        configurations; the storage numbers trials uniquely, so a seed per trial number gives every
        trial of a shared study its own draw and keeps one command's search reproducible."""
        if not self.sampler:
            return None
        config = dict(to_plain(self.sampler))
        if isinstance(config.get("seed"), int):
            config["seed"] += trial_number
        return instantiate(config)

    def _ask(self, study, space: dict[str, Any]):
        """A new trial (or a queued one), then its parameters drawn by the sampler seeded for its number."""
        trial = study.ask()
        if self._beats(study):  # a first beat at once: a trial never beaten for is never found stale
            study._storage.record_heartbeat(trial._trial_id)
        study.sampler = self._sampler(trial.number) or study.sampler
        for name, dist in space.items():
            suggest(trial, name, dist)
        return trial

    def _requeue_stale(self, study) -> None:
        """Trials left RUNNING by a process of this machine that died: failed, their parameters queued again."""
        optuna = optuna_module()
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if is_stale(trial.user_attrs):
                log.warning("trial %d was left running by a process that is gone: failed, queued again", trial.number)
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                if trial.params:
                    study.enqueue_trial(trial.params)

    @staticmethod
    def _as_choice(dist: Any, value: Any) -> Any:
        """A categorical value as the override string the choices hold (``true``, not ``True``)."""
        if dist is None or not hasattr(dist, "choices"):
            return value
        return str(value).lower() if isinstance(value, bool) else "null" if value is None else str(value)

    @staticmethod
    def _counted(study) -> int:
        """Trials that used the budget: finished (complete, pruned, failed) or running, not those queued,
        nor a failure that was queued again (its retry counts instead)."""
        optuna = optuna_module()
        states = optuna.trial.TrialState
        used = (states.COMPLETE, states.PRUNED, states.FAIL, states.RUNNING)
        trials = study.get_trials(deepcopy=False)
        retry = retry_callback().retried_trial_number
        retried = {retry(t) for t in trials} - {None}
        return sum(t.state in used and not (t.state == states.FAIL and t.number in retried) for t in trials)

    @staticmethod
    def _running(study) -> int:
        return len(study.get_trials(deepcopy=False, states=(optuna_module().trial.TrialState.RUNNING,)))

    # ---- the search
    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed = parser.parse_overrides([*(f"{k}={v}" for k, v in self.params.items()), *arguments])
        space = {o.get_key_element(): distribution(o) for o in parsed if o.is_sweep_override()}
        fixed_overrides = [o for o in parsed if not o.is_sweep_override()]
        fixed = [f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in fixed_overrides]
        fixed.append(self._job_folder_names(o.key_or_group for o in fixed_overrides))
        if not space:
            raise ValueError("the search space is empty: set hydra.sweeper.params (see conf/hparams_search/)")

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = self._study(space)
        atomic_write_json(
            sweep_dir / STUDY_FILE,
            {"study_name": self.study_name, "storage": self.storage, "direction": self.direction},
        )
        log.info(
            "Optuna study %r in %s: %d trial(s) so far of %d",
            self.study_name,
            self.storage,
            len(study.trials),
            self.n_trials,
        )
        while True:
            self._fail_stale(study)
            budget = self.n_trials - self._counted(study)
            if budget <= 0:
                # a trial another worker runs may yet go silent and be queued again: wait for them
                if not (self._beats(study) and self._running(study)):
                    break
                time.sleep(self.heartbeat_interval)
                continue
            trials = [self._ask(study, space) for _ in range(min(self.n_jobs, budget))]
            for trial in trials:
                trial.set_user_attr("rnnlab_owner", owner())
            self._run(study, trials, fixed)
        best = [t for t in study.trials if t.state.name == "COMPLETE"]
        if best:
            log.info("best trial %d: %s = %s", study.best_trial.number, study.best_params, study.best_value)

    def _job_folder_names(self, same_in_every_job: Iterable[str]) -> str:
        """A job folder is named by what its trial drew (``3_model.optimizer.lr-0.006185``): the overrides
        every job shares are left out of its name (they are in the sweep's ``multirun.yaml`` and each
        job's ``.hydra/overrides.yaml``), so the drawn values are never cut off the end of a long name."""
        assert self.config is not None
        keys = [*self.config.hydra.job.config.override_dirname.exclude_keys, *same_in_every_job]
        return f"hydra.job.config.override_dirname.exclude_keys=[{','.join(quoted(k) for k in keys)}]"

    def _run(self, study, trials, fixed: list[str]) -> None:
        optuna = optuna_module()
        batches = (
            [trials]
            if [t.number for t in trials] == list(range(trials[0].number, trials[-1].number + 1))
            else [[t] for t in trials]
        )  # job numbers are trial numbers: two commands sharing a sweep folder never write one job folder
        for batch in batches:
            overrides = [self._overrides(trial, fixed) for trial in batch]
            with contextlib.ExitStack() as beating:  # the trials are alive while their jobs run
                for trial in batch:
                    beating.enter_context(
                        optuna.storages._heartbeat.get_heartbeat_thread(trial._trial_id, study._storage)
                    )
                returns = self.launcher.launch(overrides, initial_job_idx=batch[0].number)
            for trial, ret in zip(batch, returns, strict=True):
                metrics = read_metrics(Path(ret.hydra_cfg.hydra.runtime.output_dir)) or {}
                status, value = metrics.get("status"), metrics.get("best_score")
                if status == "pruned":
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
                elif status == "completed" and isinstance(value, (int, float)):
                    study.tell(trial, float(value), skip_if_finished=True)
                else:
                    log.error("trial %d failed: %s", trial.number, metrics.get("error", "no result"))
                    study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)

    def _overrides(self, trial, fixed: list[str]) -> list[str]:
        chosen = [
            f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}" for key, value in trial.params.items()
        ]
        bookkeeping = [
            f"+tune.storage={quoted(self.storage)}",
            f"+tune.study={quoted(self.study_name)}",
            f"+tune.trial={trial.number}",
        ]
        return [*fixed, *chosen, *bookkeeping]
