"""Every run records what made it, and a rerun replays that: the recorded code, data and config."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rnnlab.errors import RnnlabError
from rnnlab.reporting.rerun import likely_cause, provenance_differences, rerun
from rnnlab.runs import provenance
from rnnlab.runs.folder import job_dirs

from conftest import REPO, SCRIPTS, TINY_NOVEL_LM, write_tiny_news, write_tiny_novel

QUICK = [
    *TINY_NOVEL_LM,
    "model.sample_prompt=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
SILENT = {"echo": lambda _: None}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def train_in(code: Path | None, run_dir: Path, data_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``scripts/train.py`` of a checkout (``None``: this one), importing that checkout's rnnlab."""
    script = (code or REPO) / "scripts" / "train.py"
    env = {**os.environ, "PYTHONPATH": str((code or REPO) / "src")}
    cmd = [sys.executable, str(script), *QUICK, f"paths.data_dir={data_dir}", f"paths.cache_dir={run_dir.parent / 'c'}"]
    proc = subprocess.run([*cmd, *overrides, f"hydra.run.dir={run_dir}"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def rerun_in(code: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``scripts/rerun.py`` of a checkout, as a user of that checkout runs it."""
    env = {**os.environ, "PYTHONPATH": str(code / "src")}
    return subprocess.run(
        [sys.executable, str(code / "scripts" / "rerun.py"), *args], capture_output=True, text=True, env=env, cwd=cwd
    )


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A checkout of this repository's HEAD with the working tree's changes committed on top."""
    path = tmp_path / "clone"
    git("clone", "-q", "--shared", str(REPO), str(path), cwd=tmp_path)
    shutil.copytree(REPO / "src", path / "src", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.egg-info"))
    shutil.copytree(REPO / "scripts", path / "scripts", dirs_exist_ok=True)
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-a", "--allow-empty", "-m", "tree", cwd=path)
    git("add", "-A", cwd=path)
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "new files", cwd=path)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_tiny_novel(root)
    write_tiny_news(root)
    return root


def test_provenance_names_the_commit_the_patch_the_packages_and_the_data(clone, data, tmp_path):
    (clone / "src" / "rnnlab" / "NOTE.txt").write_text("an untracked file\n")
    models = clone / "src" / "rnnlab" / "models" / "base.py"
    models.write_text(models.read_text() + "\n# an uncommitted edit\n")
    run = tmp_path / "run"
    train_in(clone, run, data)
    record = json.loads((run / "provenance.json").read_text())
    assert record["code"]["commit"] == git("rev-parse", "HEAD", cwd=clone)
    assert record["code"]["source"] == str(clone / "src" / "rnnlab") and record["code"]["dirty"] is True
    patch = (run / "provenance.patch").read_text()
    assert "+# an uncommitted edit" in patch and "+an untracked file" in patch
    assert record["packages"]["torch"] and record["packages"]["lightning"] and record["packages"]["rnnlab"]
    assert record["platform"]["torch_threads"] >= 1 and record["platform"]["torch_cpu_capability"]
    assert record["status"] == "completed" and record["ended"] >= record["started"]
    (novel,) = record["data"]
    assert novel["sha256"] == hashlib.sha256((data / "novel" / "tiny.txt").read_bytes()).hexdigest()
    assert novel["dataset"] == "novel" and len(novel["cache_key"]) == 64
    import torch

    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["rnnlab_provenance"]["code"]["commit"] == record["code"]["commit"]


def test_rerun_replays_the_recorded_commit_after_a_later_commit_changes_the_code(clone, data, tmp_path):
    base = clone / "src" / "rnnlab" / "models" / "base.py"
    base.write_text(base.read_text() + "# an uncommitted edit: the run's provenance.patch\n")
    run = tmp_path / "run"
    train_in(clone, run, data)
    made_at = git("rev-parse", "HEAD", cwd=clone)
    # what says where this machine keeps files, which trial it reports to and what it trusts is not replayed
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    elsewhere, cwd = tmp_path / "elsewhere", tmp_path / "cwd"
    config["paths"].update(cache_dir=str(elsewhere / "c"), log_dir=str(elsewhere / "l"), output_dir=str(elsewhere))
    config.update(tune={"storage": f"journal:{elsewhere / 'j'}", "study": "s", "trial": 0}, trust_checkpoint=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    cwd.mkdir()
    # a later commit changes a default of the code (the classifier of the LM's output: a dropout)
    lm = clone / "src" / "rnnlab" / "models" / "language_model.py"
    lm.write_text(
        lm.read_text().replace(
            "self.output_dropout = nn.Dropout(output_dropout)", "self.output_dropout = nn.Dropout(0.5)"
        )
    )
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-a", "-m", "new default", cwd=clone)

    untrusted = rerun_in(clone, str(run), "--into", str(tmp_path / "replayed"))  # a patch is code: asked first
    assert untrusted.returncode == 2 and "--trust-code" in untrusted.stderr
    assert "src/rnnlab/models/base.py  +1 -0" in untrusted.stdout and not (tmp_path / "replayed").exists()
    replayed = rerun_in(clone, str(run), "--into", str(tmp_path / "replayed"), "--trust-code", cwd=cwd)
    assert replayed.returncode == 0, replayed.stdout[-2000:] + replayed.stderr[-2000:]
    assert f"recorded {made_at} code" in replayed.stdout and "metrics match" in replayed.stdout
    assert not elsewhere.exists() and list(cwd.iterdir()) == []  # only the replay's folder and the user cache
    assert json.loads((tmp_path / "replayed" / "provenance.json").read_text())["code"]["commit"] == made_at
    assert not [line for line in git("worktree", "list", cwd=clone).splitlines() if "rnnlab-replay" in line]

    today = rerun_in(clone, str(run), "--into", str(tmp_path / "today"), "--current-code")
    assert today.returncode == 1 and "code commit" in today.stdout
    assert "likely cause: the code" in today.stdout


def test_rerun_names_a_changed_data_file(data, tmp_path):
    run = tmp_path / "run"
    train_in(None, run, data)
    text = data / "novel" / "tiny.txt"
    text.write_bytes(text.read_bytes().replace(b"island", b"islund", 1))  # one byte
    (outcome,) = rerun(run, tmp_path / "again", **SILENT)
    changed = [c for c in outcome.causes if c[0].startswith("data novel")]
    assert changed and changed[0][1] != changed[0][2]
    assert not outcome.matches and likely_cause(outcome.causes).startswith("the data file")


def test_the_environment_that_moves_numbers_is_recorded_and_named_as_a_cause(monkeypatch):
    for name in provenance.NUMERICS_ENVIRONMENT:  # Lightning itself sets CUBLAS_WORKSPACE_CONFIG for
        monkeypatch.delenv(name, raising=False)  # a deterministic Trainer, so earlier tests leave it set
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    platform = provenance.platform_state()
    assert platform["environment"] == {"OMP_NUM_THREADS": "1", "MKL_CBWR": "COMPATIBLE"}
    preloaded = {**platform, "environment": {**platform["environment"], "LD_PRELOAD": "libmimalloc.so"}}
    causes = provenance_differences({"platform": platform}, {"platform": preloaded})
    assert causes == [("environment LD_PRELOAD", None, "libmimalloc.so")]
    assert likely_cause(causes).startswith("the environment")
    # a record from before the environment was kept said only OMP_NUM_THREADS: the same, so no difference
    older = {k: v for k, v in platform.items() if k != "environment"} | {"omp_num_threads": "1"}
    newer = {**platform, "environment": {"OMP_NUM_THREADS": "1"}}
    assert provenance_differences({"platform": older}, {"platform": newer}) == []


def test_rerun_of_a_sweep_compares_every_completed_job(data, tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(SCRIPTS / "train.py"), "-m", *QUICK, "seed=1,2"]
    paths = [f"paths.data_dir={data}", f"paths.cache_dir={tmp_path / 'c'}", f"hydra.sweep.dir={sweep}"]
    assert subprocess.run([*cmd, *paths], capture_output=True).returncode == 0
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "rerun.py"), str(sweep), "--into", str(tmp_path / "again")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = (tmp_path / "again" / "rerun.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| job")]
    assert len(rows) == 2 and all(row.endswith("| yes |") for row in rows)
    assert "2 of 2 run(s) match" in proc.stdout
    (only,) = rerun(sweep, tmp_path / "one", jobs=[1], **SILENT)
    assert only.run_dir == job_dirs(sweep)[1] and only.matches


def test_rerun_refuses_a_config_that_names_foreign_code(data, tmp_path):
    run = tmp_path / "run"
    train_in(None, run, data)
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    marker = tmp_path / "pwned.txt"
    config["callbacks"]["evil"] = {"_target_": "subprocess.call", "args": ["touch", str(marker)]}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(RnnlabError, match=r"refused: callbacks.evil._target_='subprocess.call'.*--trust-config"):
        rerun(run, tmp_path / "again", **SILENT)
    proc = subprocess.run([sys.executable, str(SCRIPTS / "rerun.py"), str(run)], capture_output=True, text=True)
    assert proc.returncode == 2 and "refused" in proc.stderr and not marker.exists()


def test_a_published_record_written_beside_the_code_is_not_a_code_change(tmp_path):
    # results.py run records seed 1 in docs/results/runs/ before seed 2 starts: seed 2 is still clean code
    from rnnlab.runs.provenance import uncommitted_patch

    git("init", "-q", cwd=tmp_path)
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "-A", cwd=tmp_path)
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "code", cwd=tmp_path)
    record = tmp_path / "docs" / "results" / "runs" / "cells" / "preset-0123abcd-s1.json"
    record.parent.mkdir(parents=True)
    record.write_text("{}\n")
    assert uncommitted_patch(tmp_path) == ""
    (tmp_path / "code.py").write_text("x = 2\n")
    (tmp_path / "new.py").write_text("y = 1\n")
    patch = uncommitted_patch(tmp_path)
    assert "+x = 2" in patch and "+y = 1" in patch and "preset-0123abcd" not in patch
