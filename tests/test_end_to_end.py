"""Runs through the real configs (Hydra compose API) on tiny generated data."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rnnlab.errors import ConfigError
from rnnlab.tasks.evaluate import evaluate
from rnnlab.tasks.train import train

from conftest import CONF_DIR

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
QUICK = ("data.val_size=8", "data.batch_size=8", "trainer.max_epochs=2", "trainer.log_every_n_steps=1")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert cfg.data._target_ and cfg.model._target_ and cfg.trainer._target_
    assert cfg.monitor.split("/")[0] == "val"


TINY_DATA = {
    "imdb": ("data.val_size=8",),
    "novel": ("data.filename=tiny.txt", "data.eval_batch_size=4", "data.val_fraction=0.1", "data.test_fraction=0.1"),
    "news": (),
    "shakespeare": ("data.eval_batch_size=4", "data.eval_windows=16"),
}

# presets sized for a GPU run, made small enough to prove their wiring in seconds
SMALLER = {
    "shakespeare_mingru": (
        "model.encoder.num_layers=2",
        "model.encoder.hidden_size=32",
        "model.encoder.embed_dim=32",
        "data.batch_size=4",
        "data.seq_length=32",
    ),
}


@pytest.mark.parametrize("debug", ["fdr", "limit"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_in_each_debug_mode(experiment, debug, compose_cfg, tmp_path):
    dataset = experiment.split("_")[0]
    scratch = ("model.pretrained=null",) if "finetune" in experiment or "vat" in experiment else ()  # LM: test_transfer
    smaller = SMALLER.get(experiment, ())
    cfg = compose_cfg(
        f"experiment={experiment}", f"debug={debug}", *TINY_DATA[dataset], *scratch, *smaller, output_dir=tmp_path
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed"
    assert any(key.startswith("val/") for key in metrics)


@pytest.mark.parametrize("cell", ["gru", "elman"])
def test_cell_swaps_from_the_command_line(cell, compose_cfg):
    cfg = compose_cfg("experiment=imdb_lstm", f"model/cell={cell}")
    assert cfg.model.encoder.cell == cell


def test_train_checkpoint_eval_round_trip(compose_cfg, tmp_path):
    run_dir = tmp_path / "train_run"
    metrics = train(compose_cfg("experiment=imdb_lstm", *QUICK, "trainer.gradient_clip_val=0.5", output_dir=run_dir))
    assert metrics["status"] == "completed"
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/f1",
        "val/auroc",
        "test/acc",
        "test/auroc",
        "wall_time_s",
        "seed",
        "perf/train_examples_per_s",
        "perf/train_tokens_per_s",
    ):
        assert key in on_disk, key
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    best = Path(on_disk["best_checkpoint"])
    assert best.is_file() and best.name.startswith("best-")
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "config_resolved.yaml").is_file()

    eval_dir = tmp_path / "eval_run"
    result = evaluate(compose_cfg(f"ckpt_path={best}", config_name="eval", output_dir=eval_dir))
    assert result["status"] == "completed"
    assert result["test/acc"] == pytest.approx(on_disk["test/acc"], abs=1e-6)
    assert json.loads((eval_dir / "metrics.json").read_text())["test/acc"] == result["test/acc"]

    # a checkpoint from before the encoder's settings were one node (flat hyper-parameters) still loads
    content = torch.load(best, weights_only=True)
    hparams = content["hyper_parameters"]
    flat = {**{k: v for k, v in hparams.items() if k != "encoder"}, **hparams["encoder"]}
    torch.save({**content, "hyper_parameters": flat}, tmp_path / "old.ckpt")
    old = evaluate(compose_cfg(f"ckpt_path={tmp_path / 'old.ckpt'}", config_name="eval", output_dir=tmp_path / "old"))
    assert old["test/acc"] == result["test/acc"]


def test_training_is_deterministic_on_cpu(compose_cfg, tmp_path):
    runs = [train(compose_cfg("experiment=imdb_bilstm", *QUICK, output_dir=tmp_path / f"r{i}")) for i in range(2)]
    keys = [k for k in runs[0] if k.startswith(("train/", "val/", "test/"))]
    assert keys and all(runs[0][k] == runs[1][k] for k in keys)


def test_config_error_is_recorded_as_failed_before_training(compose_cfg, tmp_path):
    run_dir = tmp_path / "bad"
    with pytest.raises(ConfigError, match="model.encoder.cell='transformer'"):
        train(
            compose_cfg("experiment=imdb_lstm", "model.encoder.cell=transformer", "data.val_size=8", output_dir=run_dir)
        )
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and "transformer" in record["error"]
    assert not (run_dir / "checkpoints").exists()


def test_ddp_cpu_two_processes(compose_cfg, tmp_path):
    run_dir = tmp_path / "ddp"
    metrics = train(compose_cfg("experiment=imdb_lstm", "trainer=ddp_cpu", *QUICK, output_dir=run_dir))
    assert metrics["status"] == "completed" and "test/acc" in metrics
    assert metrics["perf/train_examples_per_s"] > 0  # summed over the two processes' shares
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_a_run_that_takes_no_training_step_fails_instead_of_testing_an_untrained_model(compose_cfg, tmp_path):
    # each of the two processes holds fewer training reviews than one batch of 64
    run_dir = tmp_path / "empty"
    cfg = compose_cfg("experiment=imdb_lstm", "trainer=ddp_cpu", *QUICK, "data.batch_size=64", output_dir=run_dir)
    with pytest.raises(ConfigError, match="no training step ran.*data.batch_size=64"):
        train(cfg)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"


LM_QUICK = (
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "model.encoder.embed_dim=16",
    "model.encoder.hidden_size=24",
)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "elman"])
def test_news_language_model_trains_with_each_cell(cell, compose_cfg, tmp_path):
    cfg = compose_cfg(
        "experiment=news_gru",
        f"model/cell={cell}",
        "data.val_fraction=0.1",
        "data.test_fraction=0.1",
        "trainer.max_epochs=1",
        *LM_QUICK,
        "model.sample_length=5",
        output_dir=tmp_path / cell,
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed"
    for key in ("train/loss", "val/loss", "val/ppl", "val/bpt", "val/acc", "test/ppl", "test/acc"):
        assert key in metrics, key
    assert metrics["test/ppl"] == pytest.approx(2.718281828 ** metrics["test/loss"], rel=1e-4)


def test_novel_train_then_generate_round_trip(compose_cfg, tmp_path):
    from rnnlab.tasks.generate import generate

    run_dir = tmp_path / "novel"
    cfg = compose_cfg(
        "experiment=novel_lstm",
        "data.filename=tiny.txt",
        "data.seq_length=12",
        "data.val_fraction=0.1",
        "data.test_fraction=0.1",
        *LM_QUICK,
        "model.sample_length=10",
        output_dir=run_dir,
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed" and metrics["test/bpt"] > 0
    gen_cfg = compose_cfg(
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "max_new_tokens=25", "seed=3", config_name="generate"
    )
    first, second = generate(gen_cfg), generate(gen_cfg)
    assert first == second and first.startswith("The island") and len(first) == len("The island") + 25


def test_stateful_streams_train_through_the_configs(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "experiment=novel_lstm",
        "data.filename=tiny.txt",
        "data.streams=true",
        "data.seq_length=10",
        "data.batch_size=4",
        "data.eval_batch_size=2",
        "data.val_fraction=0.1",
        "data.test_fraction=0.1",
        *LM_QUICK,
        output_dir=tmp_path / "streams",
    )
    assert cfg.model.stateful is True
    assert train(cfg)["status"] == "completed"
    checkpoint = tmp_path / "streams" / "checkpoints" / "last.ckpt"

    def measure(*overrides: str, name: str) -> dict:
        return evaluate(
            compose_cfg(f"ckpt_path={checkpoint}", *overrides, config_name="eval", output_dir=tmp_path / name)
        )

    as_trained = measure(name="e1")
    windowed = measure("+data.streams=false", "+model.stateful=false", name="e2")  # the tutorial's measurement
    assert as_trained["status"] == windowed["status"] == "completed"
    assert as_trained["test/loss"] != windowed["test/loss"]
    assert as_trained == {**measure(name="e3"), "wall_time_s": as_trained["wall_time_s"]}
    with pytest.raises(ConfigError, match="model.hidden is not a hyper-parameter"):
        measure("+model.hidden=3", name="e4")


def test_stateful_streams_train_on_two_cpu_processes(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "experiment=novel_lstm",
        "data.filename=tiny.txt",
        "data.streams=true",
        "data.seq_length=10",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "data.val_fraction=0.2",
        "data.test_fraction=0.2",
        "trainer=ddp_cpu",
        "trainer.enable_progress_bar=false",
        *LM_QUICK,
        output_dir=tmp_path / "ddp_streams",
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed" and metrics["best_score"] is not None and "test/loss" in metrics
