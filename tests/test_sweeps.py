"""Hyper-parameter search on Optuna (rnnlab's own sweeper), shared studies, pruning, parallel launchers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnnlab.runs.folder import job_dirs, read_metrics, read_overrides, short_value

from conftest import SCRIPTS, TESTS

optuna = pytest.importorskip("optuna", reason="the search needs the sweep extra: pip install -e '.[sweep]'")

QUICK = [
    "experiment=imdb_lstm",
    "data.val_size=8",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
SEARCH = [
    "hparams_search=imdb_optuna",
    "hydra.sweeper.params=null",  # the preset's space replaced by the one sweep below
    "model.optimizer.lr=tag(log, interval(0.001, 0.05))",
    *QUICK,
]


def search(tmp_path: Path, data_dir: Path, sweep: str, *extra: str, wait: bool = True):
    cmd = [
        sys.executable,
        str(SCRIPTS / "train.py"),
        *SEARCH,
        f"paths.log_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / sweep}",
        *extra,
    ]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def study(tmp_path: Path):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna" / "imdb_optuna.journal"))
    )
    return optuna.load_study(study_name="imdb_optuna", storage=storage)


def test_a_search_runs_its_trials_and_optimises_the_best_validation_value(tiny_data_dir, tmp_path):
    search(tmp_path, tiny_data_dir, "s1", "hydra.sweeper.n_trials=3")
    trials = study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 and len(
        {t.params["model.optimizer.lr"] for t in trials}
    ) == 3
    jobs = job_dirs(tmp_path / "s1")
    assert [int(j.name.partition("_")[0]) for j in jobs] == [0, 1, 2]  # job numbers are trial numbers
    for trial, job in zip(trials, jobs, strict=True):
        metrics = read_metrics(job)
        assert trial.value == metrics["best_score"]  # the best checkpoint's val/acc, not the last epoch's
        assert read_overrides(job)[-1] == f"+tune.trial={trial.number}"
        # named by what the trial drew, not by the overrides every job shares
        assert job.name == f"{trial.number}_model.optimizer.lr-{short_value(repr(trial.params['model.optimizer.lr']))}"

    # the same command with a larger budget continues the study where it stopped
    search(tmp_path, tiny_data_dir, "s2", "hydra.sweeper.n_trials=4")
    assert len(study(tmp_path).trials) == 4 and len(job_dirs(tmp_path / "s2")) == 1

    from rnnlab.reporting.sweep import write_report

    written = write_report(tmp_path / "s1")
    for name in ("optimization_history", "param_importances"):
        assert written[name].read_bytes()[:4] == b"\x89PNG"


def test_the_pruner_stops_an_obviously_bad_trial(tiny_data_dir, tmp_path):
    search(
        tmp_path,
        tiny_data_dir,
        "s",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "monitor=val/loss",
        "monitor_mode=min",
        "trainer.max_epochs=3",
        "hydra.sweeper.enqueue=[{model.optimizer.lr: 0.003}, {model.optimizer.lr: 0.005}, {model.optimizer.lr: 1.0}]",
        "model.optimizer.lr=interval(0.001, 1.0)",
    )
    trials = study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    bad = read_metrics(job_dirs(tmp_path / "s")[2])
    assert bad["status"] == "pruned" and "test/acc" not in bad  # stopped early: no test
    assert len(trials[2].intermediate_values) < len(trials[0].intermediate_values)


def test_two_processes_share_one_study_and_a_stale_trial_runs_again(tiny_data_dir, tmp_path):
    # a trial left RUNNING by a process that died
    (tmp_path / "optuna").mkdir()
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna" / "imdb_optuna.journal"))
    )
    first = optuna.create_study(study_name="imdb_optuna", storage=storage, direction="maximize")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = first.ask({"model.optimizer.lr": optuna.distributions.FloatDistribution(0.001, 0.05, log=True)})
    orphan.set_user_attr("rnnlab_owner", {"host": __import__("socket").gethostname(), "pid": int(dead.stdout)})

    procs = [search(tmp_path, tiny_data_dir, f"p{i}", "hydra.sweeper.n_trials=5", wait=False) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-2000:] + outputs[1][-2000:]
    trials = study(tmp_path).trials
    assert trials[0].state.name == "FAIL" and 5 <= len(trials) <= 6  # each command stops when the study is full
    assert len({t.number for t in trials}) == len(trials)
    rerun = [t for t in trials[1:] if t.params == orphan.params]
    assert rerun and rerun[0].state.name == "COMPLETE"  # the interrupted configuration ran again
    drawn = [t.params["model.optimizer.lr"] for t in trials[1:] if t.params != orphan.params]
    assert len(set(drawn)) == len(drawn) == len(trials) - 2  # the two commands never drew the same value
    ran = [len(job_dirs(tmp_path / f"p{i}")) for i in range(2)]
    assert all(n >= 1 for n in ran) and sum(ran) == len(trials) - 1
    assert "left running by a process that is gone" in "".join(outputs)


DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def test_ddp_inside_a_grid_multirun_and_a_search_runs_each_job_on_its_own_config(tiny_data_dir, tmp_path):
    grid = [sys.executable, str(SCRIPTS / "train.py"), "-m", *QUICK, "seed=1,2", *DDP]
    paths = [f"paths.data_dir={tiny_data_dir}", f"paths.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run([*grid, *paths, f"hydra.sweep.dir={tmp_path / 'grid'}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("Launching 2 jobs locally") == 1  # no rank started a sweep of its own
    assert out.count("Starting with 2 processes") == 2  # each job had its two ranks
    jobs = job_dirs(tmp_path / "grid")
    assert len(jobs) == 2 and all(read_metrics(j)["status"] == "completed" for j in jobs)
    assert all((j / "train_rank1.log").is_file() and list((j / "checkpoints").glob("best-*")) for j in jobs)

    found = search(tmp_path, tiny_data_dir, "search", "hydra.sweeper.n_trials=2", *DDP)
    out = found.stdout + found.stderr
    assert out.count("Optuna study 'imdb_optuna'") == 1 and out.count("Starting with 2 processes") == 2
    assert [t.state.name for t in study(tmp_path).trials] == ["COMPLETE", "COMPLETE"]
    assert len(job_dirs(tmp_path / "search")) == 2


def rendezvous(folder: Path, jobs: int, timeout_s: float) -> list[str]:
    """Overrides holding each job at its start until all ``jobs`` have started (tests/rendezvous.py)."""
    prefix = "+hydra.callbacks.rendezvous"
    return [
        f"{prefix}._target_=rendezvous.Rendezvous",
        f"{prefix}.folder={folder}",
        f"{prefix}.jobs={jobs}",
        f"{prefix}.timeout_s={timeout_s}",
    ]


def test_a_local_parallel_launcher_runs_two_jobs_at_once(tiny_data_dir, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra")
    cmd = [sys.executable, str(SCRIPTS / "train.py"), "-m", *QUICK, "seed=1,2"]
    paths = [f"paths.data_dir={tiny_data_dir}", f"paths.cache_dir={tmp_path / 'cache'}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}

    def sweep(name: str, *launcher: str, timeout_s: float) -> subprocess.CompletedProcess:
        meeting = rendezvous(tmp_path / f"{name}_meeting", 2, timeout_s)
        overrides = [*paths, *launcher, *meeting, f"hydra.sweep.dir={tmp_path / name}"]
        return subprocess.run([*cmd, *overrides], capture_output=True, text=True, env=env)

    # each job waits at its start for the other: both meet only if they run side by side
    proc = sweep("parallel", "hydra/launcher=submitit_local", timeout_s=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(tmp_path / "parallel")
    assert len(jobs) == 2 and all(read_metrics(j)["status"] == "completed" for j in jobs)
    assert sorted(p.name for p in (tmp_path / "parallel_meeting" / "met").iterdir()) == ["0", "1"]
    # under the default launcher, one job after the other, the first job meets no one: the check can fail
    proc = sweep("sequential", timeout_s=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "sequential_meeting" / "met").iterdir()) == ["1"]
