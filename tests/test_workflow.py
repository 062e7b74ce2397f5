"""Sweeps, reports, resume and rerun: what users do all day, on tiny data through the real entry points."""

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rnnlab.errors import ConfigError
from rnnlab.reporting.curves import job_label, line_styles
from rnnlab.reporting.sweep import write_report
from rnnlab.runs.folder import job_dirs
from rnnlab.tasks.evaluate import evaluate
from rnnlab.tasks.train import train

from conftest import SCRIPTS, TINY_NOVEL_LM

SCRIPT = SCRIPTS / "train.py"
QUICK = [
    "experiment=imdb_lstm",
    "data.val_size=8",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def multirun(sweep_dir: Path, data_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(SCRIPT),
        "-m",
        *QUICK,
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={sweep_dir.parent / 'cache'}",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_multirun_two_by_two_and_its_report(tiny_data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    multirun(sweep, tiny_data_dir, "model/cell=lstm,gru", "seed=1,2")
    jobs = job_dirs(sweep)
    expected = [(0, "lstm", 1), (1, "lstm", 2), (2, "gru", 1), (3, "gru", 2)]
    for job, (number, cell, seed) in zip(jobs, expected, strict=True):
        assert job.name.startswith(f"{number}_") and f"model-cell-{cell}" in job.name and f"seed-{seed}" in job.name
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["status"] == "completed"
        assert (job / ".hydra" / "config.yaml").is_file() and (job / "checkpoints" / "last.ckpt").is_file()
    paths = write_report(sweep)
    table = pd.read_csv(paths["csv"])
    assert len(table) == 4 and set(table["model/cell"]) == {"lstm", "gru"} and set(table["seed"]) == {1, 2}
    for column in ("status", "best", "val/acc", "test/acc", "wall_time_s"):
        assert column in table.columns
    assert (table["best"] == "★").sum() == 1
    summary = paths["md"].read_text()
    assert "Mean ± std over seeds" in summary and summary.count("| lstm |") == 3  # 2 jobs + 1 mean row
    assert paths["val/acc"].name == "curves-acc.png" and paths["val/acc"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failed_job_is_recorded_and_resume_skips_completed_jobs(tiny_data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    multirun(sweep, tiny_data_dir, "model.encoder.hidden_size=0,8")
    zero, one = job_dirs(sweep)
    failed, done = (json.loads((job / "metrics.json").read_text()) for job in (zero, one))
    assert failed["status"] == "failed" and "model.encoder.hidden_size" in failed["error"]
    assert done["status"] == "completed"
    stamp = (one / "metrics.json").stat().st_mtime_ns
    proc = multirun(sweep, tiny_data_dir, "model.encoder.hidden_size=0,8", "resume=true")
    assert "already completed; skipped" in proc.stdout + proc.stderr
    assert (one / "metrics.json").stat().st_mtime_ns == stamp


def test_kill_and_resume_equals_an_uninterrupted_run(compose_cfg, tmp_path):
    full = train(compose_cfg(*QUICK, output_dir=tmp_path / "full"))
    cut = tmp_path / "cut"
    train(compose_cfg(*QUICK, "trainer.max_epochs=1", output_dir=cut))
    # as a SIGKILL after epoch 1 leaves it: last.ckpt, no metrics.json, a provenance.json without an end
    (cut / "metrics.json").unlink()
    started = json.loads((cut / "provenance.json").read_text())
    unended = {k: v for k, v in started.items() if k not in ("ended", "status", "wall_time_s")}
    (cut / "provenance.json").write_text(json.dumps(unended))
    recorded = cut / "config_resolved.yaml"  # the killed process had been launched for both epochs
    recorded.write_text(recorded.read_text().replace("max_epochs: 1\n", "max_epochs: 2\n"))
    resumed = train(compose_cfg(*QUICK, "resume=true", output_dir=cut))  # continues from last.ckpt
    assert resumed["status"] == "completed"
    for key in ("val/acc", "val/loss", "test/acc", "test/loss", "train/loss"):
        assert resumed[key] == full[key], key
    # the record keeps the killed process (no metrics.json, so no wall time) beside the one that finished
    (killed,) = json.loads((cut / "provenance.json").read_text())["earlier_processes"]
    assert killed["started"] == started["started"] and killed["wall_time_s"] is None and resumed["processes"] == 2


def test_resume_refuses_a_folder_made_with_settings_the_command_no_longer_gives(compose_cfg, tmp_path):
    """The same command after a preset changed is another run: resume neither skips it as done nor continues it."""
    done = tmp_path / "done"
    train(compose_cfg(*QUICK, "trainer.max_epochs=1", output_dir=done))
    before = (done / "metrics.json").read_text()
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs: 1 -> 2.*resume it at commit [0-9a-f]{7},"):
        train(compose_cfg(*QUICK, "resume=true", output_dir=done))
    assert (done / "metrics.json").read_text() == before
    # where the files live is not what the run is: another cache folder resumes (here: skips) it
    again = train(
        compose_cfg(*QUICK, "trainer.max_epochs=1", "resume=true", f"paths.cache_dir={tmp_path / 'c'}", output_dir=done)
    )
    assert again["status"] == "completed"


def test_a_run_continued_in_its_folder_keeps_every_process_and_their_wall_time(compose_cfg, tmp_path):
    run = tmp_path / "run"
    first = train(compose_cfg(*QUICK, "trainer.max_epochs=1", output_dir=run))
    first_record = json.loads((run / "provenance.json").read_text())
    continued = train(compose_cfg(*QUICK, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", output_dir=run))
    record = json.loads((run / "provenance.json").read_text())
    (earlier,) = record["earlier_processes"]
    assert earlier["started"] == first_record["started"] and earlier["wall_time_s"] == first["wall_time_s"]
    assert record["started"] >= earlier["ended"] and "earlier_processes" not in earlier
    assert continued["processes"] == 2 and continued["wall_time_s"] > first["wall_time_s"]
    # a third process counts each earlier one's own time once, not the second's running total again
    train(compose_cfg(*QUICK, "trainer.max_epochs=3", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", output_dir=run))
    third = json.loads((run / "provenance.json").read_text())
    assert [p["wall_time_s"] for p in third["earlier_processes"]] == [first["wall_time_s"], record["wall_time_s"]]
    total = json.loads((run / "metrics.json").read_text())["wall_time_s"]
    assert total == round(first["wall_time_s"] + record["wall_time_s"] + third["wall_time_s"], 3)
    # a run started afresh in another folder from that checkpoint is a new run with one process
    elsewhere = train(compose_cfg(*QUICK, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", output_dir=tmp_path / "b"))
    assert "processes" not in elsewhere
    assert "earlier_processes" not in json.loads((tmp_path / "b" / "provenance.json").read_text())


def test_ckpt_path_continues_a_run(compose_cfg, tmp_path):
    full = train(compose_cfg(*QUICK, output_dir=tmp_path / "full"))
    train(compose_cfg(*QUICK, "trainer.max_epochs=1", output_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    continued = train(compose_cfg(*QUICK, f"ckpt_path={last}", output_dir=tmp_path / "second"))
    # same weights at the end (the best checkpoint is tracked per folder, so test/* may pick another epoch)
    for key in ("val/loss", "val/acc", "val/auroc", "train/loss"):
        assert continued[key] == full[key], key


def test_tensorboard_has_scalars_hparams_and_a_text_sample(compose_cfg, tmp_path):
    run_dir = tmp_path / "lm"
    train(compose_cfg(*TINY_NOVEL_LM, "trainer.log_every_n_steps=1", "model.sample_length=12", output_dir=run_dir))
    scalars, texts, plugins, val_steps = set(), set(), set(), []
    for events in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
        if "val/loss" in acc.Tags()["scalars"]:
            val_steps += [e.step for e in acc.Scalars("val/loss")]
        texts |= set(acc.Tags()["tensors"])
        with contextlib.suppress(KeyError):  # an event file without hparams
            plugins |= set(acc.PluginTagToContent("hparams"))
    for tag in ("train/loss", "train/grad_norm", "val/loss", "val/ppl", "val/bpt", "val/acc", "test/loss", "lr-Adam"):
        assert tag in scalars, tag
    assert any(t.startswith("samples") for t in texts)
    assert len(val_steps) == 2 and 0 not in val_steps  # the two validations, no final value at step 0
    assert "hp/test/loss" in scalars
    assert "_hparams_/session_start_info" in plugins


def test_ddp_cpu_two_processes_give_the_same_test_metrics_as_one(compose_cfg, tmp_path):
    metrics = train(compose_cfg(*QUICK, output_dir=tmp_path / "run"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    one = evaluate(compose_cfg(f"ckpt_path={ckpt}", config_name="eval", output_dir=tmp_path / "e1"))
    two = evaluate(
        compose_cfg(
            f"ckpt_path={ckpt}",
            "trainer=ddp_cpu",
            "trainer.enable_progress_bar=false",
            config_name="eval",
            output_dir=tmp_path / "e2",
        )
    )
    assert metrics["status"] == one["status"] == two["status"] == "completed"
    # accuracy, F1 and AUROC are synced torchmetrics states: equal; the loss is a mean of per-rank means
    for key in ("test/acc", "test/f1", "test/auroc"):
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
    assert two["test/loss"] == pytest.approx(one["test/loss"], abs=2e-2)


def test_last_checkpoint_follows_training_even_without_improvement(compose_cfg, tmp_path):
    run_dir = tmp_path / "flat"
    metrics = train(compose_cfg(*QUICK, "trainer.max_epochs=3", "model.optimizer.lr=0.0", output_dir=run_dir))
    assert Path(metrics["best_checkpoint"]).name.startswith("best-000-")  # never improved after epoch 0
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2


def test_curve_labels_name_only_the_overrides_a_job_sets():
    frame = pd.DataFrame(
        [
            {"experiment": "news_gru", "model/cell": None, "seed": "1"},
            {"experiment": "news_gru", "model/cell": "lstm", "seed": "2"},
        ]
    )
    keys = ["experiment", "model/cell", "seed"]
    assert job_label(frame.iloc[0], keys) == "experiment=news_gru"
    assert job_label(frame.iloc[1], keys) == "experiment=news_gru, model/cell=lstm"
    assert job_label(None, keys) == "all"


def test_more_lines_than_colours_still_look_different():
    styles = line_styles(25)
    assert len(set(styles)) == 25
    assert styles[0][1] == "-" and styles[10][1] != "-"  # the dash changes when the colours repeat
