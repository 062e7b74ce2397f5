"""LM pretraining on IMDb text, then a classifier that starts from its embedding and encoder."""

import pytest
import torch

from rnnlab.builders import build_datamodule, build_model
from rnnlab.checkpoints import load_checkpoint
from rnnlab.errors import ConfigError
from rnnlab.models.transfer import encoder_state
from rnnlab.train import train

TINY = ("data.val_size=8", "data.batch_size=8", "trainer.log_every_n_steps=1")
SMALL = ("model.embed_dim=16", "model.hidden_size=24")


def test_pretrain_then_finetune_starts_from_the_language_model(compose_cfg, tmp_path):
    lm_run = train(
        compose_cfg("experiment=imdb_lm_pretrain", *TINY, *SMALL, "trainer.max_epochs=2", output_dir=tmp_path / "lm")
    )
    assert lm_run["status"] == "completed" and "val/loss" in lm_run
    assert not any(key.startswith("test/") for key in lm_run)  # the test reviews stay unseen
    pretrained = lm_run["best_checkpoint"]

    def finetune_cfg(*extra: str, name: str = "ft"):
        return compose_cfg(
            "experiment=imdb_finetune",
            f"model.pretrained={pretrained}",
            *TINY,
            *SMALL,
            *extra,
            output_dir=tmp_path / name,
        )

    cfg = finetune_cfg()
    model = build_model(cfg, build_datamodule(cfg))
    lm_encoder = encoder_state(load_checkpoint(pretrained))
    assert lm_encoder.keys() == model.encoder.state_dict().keys()
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, lm_encoder[key]), key
    assert "pretrained" not in model.hparams  # a checkpoint of the classifier must not need the LM file

    metrics = train(finetune_cfg("trainer.max_epochs=1"))
    assert metrics["status"] == "completed" and 0.0 <= metrics["test/acc"] <= 1.0

    with pytest.raises(ConfigError, match="vocabulary .* differs"):
        build_model(cfg := finetune_cfg("data.max_size=20", name="v"), build_datamodule(cfg))
    with pytest.raises(ConfigError, match="model.hidden_size=24"):
        build_model(cfg := finetune_cfg("model.hidden_size=32", name="h"), build_datamodule(cfg))
    with pytest.raises(ConfigError, match="bidirectional=false"):
        build_model(cfg := finetune_cfg("model.bidirectional=true", name="b"), build_datamodule(cfg))


def test_pretrained_must_be_a_language_model_checkpoint(compose_cfg, tmp_path):
    run = train(compose_cfg("experiment=imdb_lstm", *TINY, "trainer.max_epochs=1", output_dir=tmp_path / "clf"))
    cfg = compose_cfg("experiment=imdb_lstm", f"+model.pretrained={run['best_checkpoint']}", *TINY)
    with pytest.raises(ConfigError, match="carries no vocabulary"):
        build_model(cfg, build_datamodule(cfg))


def test_finetune_without_a_checkpoint_says_which_setting_is_missing(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"model.pretrained must be set .* model.pretrained=<value>"):
        train(compose_cfg("experiment=imdb_finetune", *TINY, output_dir=tmp_path / "ft"))
    assert '"status": "failed"' in (tmp_path / "ft" / "metrics.json").read_text()
