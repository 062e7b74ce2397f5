"""A sweep submitted with sbatch to a real (local, one-node) Slurm cluster, preempted and requeued."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rnnlab.training.requeue import job_stamp, requeued, signal_number, slurm_job_id

from cluster import release_requeued, scontrol, squeue, wait_for
from conftest import REPO, SCRIPTS

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra")

QUICK = [
    "experiment=imdb_lstm",
    "data.val_size=8",
    "data.batch_size=8",
    # long enough (~1 s an epoch on a quiet CPU) that both requeues land while the job still trains
    "trainer.max_epochs=40",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.accelerator=cpu",
]
JOB_TIMEOUT_S = 240


def test_job_stamp_and_requeue_follow_the_slurm_environment(monkeypatch):
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "SLURM_JOB_NAME"):
        monkeypatch.delenv(key, raising=False)
    assert job_stamp("2026-01-01_00-00-00") == "2026-01-01_00-00-00" and not requeued()
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    assert job_stamp("x") == "slurm-41" and not requeued()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued()
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "40_3"
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation is never requeued
    assert slurm_job_id() is None and not requeued()
    assert signal_number("usr1").name == "SIGUSR1" and signal_number("SIGUSR2").name == "SIGUSR2"
    with pytest.raises(Exception, match="callbacks.requeue_on_signal.signal='KILL'"):
        signal_number("KILL")


def test_the_launcher_asks_for_the_signal_the_job_waits_for(compose_cfg):
    cfg = compose_cfg("hydra/launcher=slurm")  # compose drops the hydra node; read the launcher file itself
    from omegaconf import OmegaConf

    launcher = OmegaConf.load(REPO / "src" / "rnnlab" / "conf" / "hydra" / "launcher" / "slurm.yaml")
    merged = OmegaConf.merge({"callbacks": cfg.callbacks, "hydra": {"launcher": launcher}})
    assert merged.hydra.launcher.additional_parameters.signal == "USR1@120"
    assert cfg.callbacks.requeue_on_signal.signal == "USR1"


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True, map_location="cpu")["epoch"])
    except Exception:  # not there yet, or being replaced
        return -1


def _train_loss_steps(run_dir: Path) -> list[int]:
    steps: list[int] = []
    for events in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if "train/loss" in acc.Tags()["scalars"]:
            steps += [e.step for e in acc.Scalars("train/loss")]
    return steps


def test_a_sweep_job_preempted_twice_comes_back_to_its_folder_and_ends_equal(slurm, tiny_data_dir, tmp_path):
    """USR1 (the time-limit warning) and then ``scontrol requeue`` (SIGTERM only): each time the job
    requeues, comes back to the same folder and continues; it ends as a run never stopped."""
    outputs = tmp_path / "outputs"
    common = [*QUICK, f"paths.data_dir={tiny_data_dir}", f"paths.cache_dir={tmp_path / 'cache'}"]
    cmd = [
        sys.executable,
        str(SCRIPTS / "train.py"),
        "-m",
        *common,
        "seed=1,1",  # two jobs of one run: job 1, never stopped, is what job 0 must equal
        f"paths.log_dir={outputs}",  # the sweep folder named by the clock when submitted
        "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=10",
    ]
    env = {**slurm, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    submitter = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        found = lambda: next(outputs.glob("imdb_lstm/*/0_*/checkpoints/last.ckpt"), None)  # noqa: E731
        last = wait_for(found, 120, "job 0's last.ckpt")
        job_dir = last.parent.parent
        job = wait_for(lambda: next((j for j in squeue(slurm, "-o", "%i").split() if j.endswith("_0")), None), 30, "id")
        subprocess.run(["scancel", "--signal=USR1", job], check=True, env=slurm, timeout=30)  # the warning
        wait_for(lambda: release_requeued(slurm, job, 1), 90, f"job {job} requeued and running again")
        first = _checkpoint_epoch(last)
        wait_for(lambda: _checkpoint_epoch(last) > first, 120, "a checkpoint after the first requeue")
        scontrol(slurm, "requeue", job)  # preemption as an administrator (or PreemptMode=REQUEUE) does it
        wait_for(lambda: release_requeued(slurm, job, 2), 90, f"job {job} requeued a second time")
        out, _ = submitter.communicate(timeout=JOB_TIMEOUT_S)
    finally:
        if submitter.poll() is None:
            submitter.kill()
            submitter.communicate()
    assert submitter.returncode == 0, out[-3000:]
    sweep = job_dir.parent
    assert sorted(p.name.split("_")[0] for p in sweep.iterdir() if (p / ".hydra").is_dir()) == ["0", "1"]
    assert list(sweep.glob(".submitit/*/*_log.out")), "submitit's job logs"
    resumed = json.loads((job_dir / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["processes"] == 3
    assert (job_dir / "checkpoints" / "interrupted.ckpt").is_file()  # the state at the second stop
    (full_dir,) = sweep.glob("1_*")
    full = json.loads((full_dir / "metrics.json").read_text())
    assert full["status"] == "completed" and "processes" not in full
    for key in ("val/acc", "val/loss", "test/acc", "test/loss", "train/loss"):
        assert resumed[key] == full[key], key
    # the curves continue: the steps of an uninterrupted run, the first one once (no second step 0)
    steps, uninterrupted = _train_loss_steps(job_dir), _train_loss_steps(full_dir)
    assert set(steps) == set(uninterrupted) and steps.count(min(steps)) == 1
