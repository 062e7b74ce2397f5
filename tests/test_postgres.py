"""One Optuna study on PostgreSQL shared by workers submitted with sbatch; a worker killed mid-trial."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from cluster import job_fields, squeue, wait_for
from conftest import REPO, SCRIPTS

optuna = pytest.importorskip("optuna", reason="the search needs the sweep extra: pip install -e '.[sweep]'")

WORKERS, N_TRIALS = 4, 6
SEARCH = [
    "hparams_search=imdb_optuna",
    "hydra.sweeper.params=null",
    "model.optimizer.lr=tag(log, interval(0.001, 0.05))",
    "hydra.sweeper.pruner=null",  # every trial runs to its end: the count below is exact
    "experiment=imdb_lstm",
    "data.val_size=8",
    "data.batch_size=8",
    "trainer.max_epochs=4",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    # beats every second; silent for 6 s is stale (a real cluster: a minute and five)
    "hydra.sweeper.heartbeat_interval=1",
    "hydra.sweeper.grace_period=6",
]
WORKERS_TIMEOUT_S = 300
VICTIM_EPOCHS = 1_000_000  # never reached: the job is killed first


def test_four_sbatch_workers_finish_one_study_when_one_is_killed_mid_trial(
    slurm, postgres_url, tiny_data_dir, tmp_path
):
    study_name = f"shared-{uuid.uuid4().hex[:8]}"
    worker = [
        sys.executable,
        str(SCRIPTS / "train.py"),
        "-m",
        *SEARCH,
        f"hydra.sweeper.storage={postgres_url}",
        f"hydra.sweeper.study_name={study_name}",
        f"hydra.sweeper.n_trials={N_TRIALS}",
        f"paths.data_dir={tiny_data_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.log_dir={tmp_path / 'outputs'}",  # each worker's sweep folder: slurm-<its job id>
    ]
    env = {**slurm, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    # the victim's trial runs until it is killed (its job's time limit ends it otherwise), so that the
    # kill lands mid-trial however fast the machine and however late this process looks; the retry
    # runs in another worker, with that worker's 4 epochs
    wraps = [
        " ".join(f"'{a}'" for a in (*worker, *([f"trainer.max_epochs={VICTIM_EPOCHS}"] if i == 0 else [])))
        for i in range(WORKERS)
    ]
    jobs = []
    for i in range(WORKERS):
        submitted = subprocess.run(
            ["sbatch", "--parsable", "-J", f"worker{i}", "-c", "1", "-t", "10", "-o", str(tmp_path / f"w{i}.log")]
            + ["--wrap", wraps[i]],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=True,
        )
        jobs.append(submitted.stdout.strip())
    try:
        storage = optuna.storages.RDBStorage(postgres_url)
        study = wait_for(lambda: _loaded(study_name, storage), 120, "the study")
        # a trial running under worker 0: kill that job at once (SIGKILL, nothing saved, no last word)
        victim = jobs[0]
        seen: list[str] = []
        try:
            running = lambda: _running_in(study, tmp_path / "outputs", victim, seen)  # noqa: E731
            ran = wait_for(running, 180, f"a trial of job {victim}").number
        except pytest.fail.Exception as failed:
            pytest.fail(f"{failed.msg}; first seen {seen[:1]}, last seen {seen[-1:]}")
        subprocess.run(["scancel", "--signal=KILL", "--full", victim], check=True, env=env, timeout=30)
        wait_for(lambda: all(not squeue(env, "-j", j) for j in jobs), WORKERS_TIMEOUT_S, "the workers to end")
    finally:
        subprocess.run(["scancel", *jobs], env=env, timeout=30)
    states = {j: job_fields(env, j).get("JobState") for j in jobs}
    assert states[victim] in ("CANCELLED", "FAILED") and [states[j] for j in jobs[1:]] == ["COMPLETED"] * 3, states
    trials = optuna.load_study(study_name=study_name, storage=storage).trials
    by_state = {s: [t for t in trials if t.state.name == s] for s in ("COMPLETE", "FAIL", "RUNNING", "WAITING")}
    assert not by_state["RUNNING"] and not by_state["WAITING"], [(t.number, t.state.name) for t in trials]
    assert len(by_state["COMPLETE"]) == N_TRIALS  # the study reached n_trials, none lost
    (killed,) = by_state["FAIL"]
    assert killed.number == ran
    retried = [t for t in by_state["COMPLETE"] if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params  # the killed trial ran again


def _loaded(name: str, storage):
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _running_in(study, outputs, job: str, seen: list[str]):
    """A RUNNING trial whose folder is in job ``job``'s sweep folder and has trained a step, or None.

    The trial itself, not its number: ``wait_for`` waits for a truthy value, and trial 0 is often the
    victim's. What it looked at is appended to ``seen``, for the failure's message."""
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.state == optuna.trial.TrialState.RUNNING and any(
            outputs.glob(f"*/slurm-{job}/{trial.number}_*/checkpoints/last.ckpt")
        ):
            return trial
    states = ", ".join(f"{t.number} {t.state.name}" for t in trials)
    folders = sorted(str(p.relative_to(outputs)) for p in outputs.glob(f"*/slurm-{job}/*_*/checkpoints/*"))
    seen.append(f"{time.strftime('%H:%M:%S')}: trials [{states}]; job {job}'s checkpoints {folders}")
    return None
