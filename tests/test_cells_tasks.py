"""The parallel-scan cells wherever the classic ones run: every task, checkpoints, transfer, DDP, bf16."""

from __future__ import annotations

import math

import pytest

from rnnlab.tasks.evaluate import evaluate
from rnnlab.tasks.generate import generate
from rnnlab.tasks.predict import predict
from rnnlab.tasks.train import train

NEW_CELLS = ["mingru", "minlstm", "lru", "mamba", "mlstm"]
SMALL = ("model.encoder.embed_dim=8", "model.encoder.hidden_size=8")
TASKS = {
    "imdb_bilstm": ("data.val_size=8", "model.pooling=meanmax"),  # bidirectional classifier
    "novel_lstm": (
        "data.filename=tiny.txt",
        "data.eval_batch_size=4",
        "data.val_fraction=0.1",
        "data.test_fraction=0.1",
    ),
    "news_gru": (),
}
NOVEL_STREAMS = (
    "experiment=novel_lstm",
    "data.filename=tiny.txt",
    "data.streams=true",  # stateful: the state is carried from batch to batch (truncated BPTT)
    "data.seq_length=10",
    "data.batch_size=4",
    "data.eval_batch_size=2",
    "data.val_fraction=0.1",
    "data.test_fraction=0.1",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
)
IMDB_QUICK = ("data.val_size=8", "data.batch_size=8", "trainer.max_epochs=1", "trainer.log_every_n_steps=1")


@pytest.mark.parametrize("experiment", list(TASKS))
@pytest.mark.parametrize("cell", NEW_CELLS)
def test_each_new_cell_runs_each_task_in_debug_fdr(cell, experiment, compose_cfg, tmp_path):
    cfg = compose_cfg(f"experiment={experiment}", f"model/cell={cell}", "debug=fdr", *TASKS[experiment], *SMALL)
    assert cfg.model.encoder.cell == cell
    metrics = train(cfg)
    assert metrics["status"] == "completed" and any(key.startswith("val/") for key in metrics)


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_a_checkpoint_of_each_cell_evaluates_predicts_and_generates(cell, compose_cfg, tmp_path):
    classifier = train(compose_cfg("experiment=imdb_lstm", f"model/cell={cell}", *IMDB_QUICK, *SMALL))
    again = evaluate(compose_cfg(f"ckpt_path={classifier['best_checkpoint']}", config_name="eval"))
    assert again["test/acc"] == pytest.approx(classifier["test/acc"], abs=1e-6)
    asked = predict(
        compose_cfg(f"ckpt_path={classifier['best_checkpoint']}", "text='a fine film'", config_name="predict")
    )
    assert 0.0 <= float(asked["probability"][0]) <= 1.0

    lm = train(compose_cfg(*NOVEL_STREAMS, f"model/cell={cell}", *SMALL, output_dir=tmp_path / "lm"))
    assert lm["status"] == "completed" and math.isfinite(lm["test/loss"])
    ask = compose_cfg(f"ckpt_path={lm['best_checkpoint']}", "max_new_tokens=12", "seed=3", config_name="generate")
    first, second = generate(ask), generate(ask)
    assert first == second and first.startswith("The island") and len(first) == len("The island") + 12


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_a_classifier_starts_from_a_language_model_of_each_cell(cell, compose_cfg, tmp_path):
    lm = train(
        compose_cfg(
            "experiment=imdb_lm_pretrain", f"model/cell={cell}", *IMDB_QUICK, *SMALL, output_dir=tmp_path / "lm"
        )
    )
    # adversarial fine-tuning: normalised embeddings read through the LM's input projection, perturbed after dropout
    cfg = compose_cfg(
        "experiment=imdb_vat",
        f"model/cell={cell}",
        f"model.pretrained={lm['best_checkpoint']}",
        *IMDB_QUICK,
        *SMALL,
        output_dir=tmp_path / "ft",
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed" and metrics["train/loss_vat"] > 0 and 0.0 <= metrics["test/acc"] <= 1.0


def test_a_new_cell_trains_under_ddp_on_two_cpu_processes_in_bf16_mixed(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "experiment=imdb_lstm", "model/cell=lru", "trainer=ddp_cpu", "trainer.precision=bf16-mixed", *IMDB_QUICK, *SMALL
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed" and math.isfinite(metrics["test/loss"])
