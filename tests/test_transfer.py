"""LM pretraining on IMDb text, then a classifier that starts from its embedding and encoder."""

import pytest
import torch

from rnnlab.builders import build_datamodule, build_model
from rnnlab.data.codec import TextCodec
from rnnlab.errors import ConfigError
from rnnlab.models.base import CODEC_KEY
from rnnlab.models.classifier import SequenceClassifier
from rnnlab.models.encoder import CELLS
from rnnlab.models.transfer import encoder_state
from rnnlab.runs.checkpoints import load_checkpoint
from rnnlab.tasks.generate import generate
from rnnlab.tasks.train import train

TINY = ("data.val_size=8", "data.batch_size=8", "trainer.log_every_n_steps=1")
SMALL = ("model.encoder.embed_dim=16", "model.encoder.hidden_size=24")


def language_model_codec(path: str) -> TextCodec:
    return TextCodec.from_dict(load_checkpoint(path)[CODEC_KEY])


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

    # adversarial training normalises the embeddings; its classifier still starts from the LM's function
    normalising = build_model(cfg := finetune_cfg("model.adversarial.mode=vat", name="vat"), build_datamodule(cfg))
    assert normalising.token_frequencies.sum() == pytest.approx(1.0)
    tokens, lengths = torch.randint(1, model.encoder.embedding.num_embeddings, (3, 9)), torch.tensor([9, 5, 2])
    with torch.no_grad():
        raw, _ = model.eval().encoder(tokens, lengths)
        normalised, _ = normalising.eval().encoder.encode(normalising.embed(tokens), lengths)
    torch.testing.assert_close(normalised, raw, rtol=1e-4, atol=1e-5)

    metrics = train(finetune_cfg("trainer.max_epochs=1"))
    assert metrics["status"] == "completed" and 0.0 <= metrics["test/acc"] <= 1.0

    with pytest.raises(ConfigError, match="vocabulary .* differs"):
        build_model(cfg := finetune_cfg("data.max_size=20", name="v"), build_datamodule(cfg))
    with pytest.raises(ConfigError, match="model.encoder.hidden_size=24"):
        build_model(cfg := finetune_cfg("model.encoder.hidden_size=32", name="h"), build_datamodule(cfg))
    with pytest.raises(ConfigError, match="bidirectional=false"):
        build_model(cfg := finetune_cfg("model.encoder.bidirectional=true", name="b"), build_datamodule(cfg))
    with pytest.raises(ConfigError, match="trained with data.reverse=false .* set data.reverse=false"):
        build_model(cfg := finetune_cfg("data.reverse=true", name="r"), build_datamodule(cfg))


def test_forward_backward_language_model_starts_a_bidirectional_classifier(compose_cfg, tmp_path):
    lm_run = train(
        compose_cfg(
            "experiment=imdb_lm_pretrain", *TINY, *SMALL, "model.encoder.bidirectional=true", output_dir=tmp_path / "lm"
        )
    )
    assert {"val/loss", "val/loss_forward", "val/ppl_forward"} <= lm_run.keys()
    assert lm_run["val/loss_forward"] != lm_run["val/loss"]
    extra = (f"model.pretrained={lm_run['best_checkpoint']}", *TINY, *SMALL)
    cfg = compose_cfg(
        "experiment=imdb_finetune", *extra, "model.encoder.bidirectional=true", output_dir=tmp_path / "ft"
    )
    model = build_model(cfg, build_datamodule(cfg))
    lm_encoder = encoder_state(load_checkpoint(lm_run["best_checkpoint"]))
    assert lm_encoder.keys() == model.encoder.state_dict().keys()
    assert all(torch.equal(v, lm_encoder[k]) for k, v in model.encoder.state_dict().items())
    with pytest.raises(ConfigError, match="bidirectional=true"):
        build_model(
            cfg := compose_cfg("experiment=imdb_finetune", *extra, output_dir=tmp_path / "u"), build_datamodule(cfg)
        )


def test_backward_language_model_starts_a_backward_classifier(compose_cfg, tmp_path):
    lm_run = train(compose_cfg("experiment=imdb_lm_pretrain", *TINY, *SMALL, "data.reverse=true", output_dir=tmp_path))
    # it reads prompts last word first and writes what comes before them
    gen_cfg = compose_cfg(f"ckpt_path={lm_run['best_checkpoint']}", "prompt=A great movie", config_name="generate")
    text = generate(gen_cfg)
    assert text.endswith(" A great movie") and len(text.split()) == 3 + gen_cfg.max_new_tokens
    codec = language_model_codec(lm_run["best_checkpoint"])
    forward = TextCodec.from_dict({**codec.to_dict(), "reverse": False})
    words = " ".join(codec.itos[2:6])  # four different known words
    assert codec.reverse and codec.encode(words) == forward.encode(words)[::-1] != forward.encode(words)
    assert codec.decode(codec.encode(words)) == forward.decode(forward.encode(words)) == words
    extra = (f"model.pretrained={lm_run['best_checkpoint']}", *TINY, *SMALL)
    cfg = compose_cfg("experiment=imdb_finetune", *extra, "data.reverse=true")
    model = build_model(cfg, build_datamodule(cfg))
    lm_encoder = encoder_state(load_checkpoint(lm_run["best_checkpoint"]))
    assert all(torch.equal(v, lm_encoder[k]) for k, v in model.encoder.state_dict().items())
    with pytest.raises(ConfigError, match="trained with data.reverse=true"):
        build_model(cfg := compose_cfg("experiment=imdb_finetune", *extra), build_datamodule(cfg))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_a_normalising_classifier_reads_a_raw_embedding_encoder_unchanged(cell, bidirectional):
    torch.manual_seed(0)
    settings = {"cell": cell, "embed_dim": 8, "hidden_size": 12, "num_layers": 2, "bidirectional": bidirectional}
    model = SequenceClassifier(vocab_size=30, encoder=settings, adversarial={"normalize_embeddings": True}).eval()
    tokens, lengths = torch.randint(1, 30, (3, 7)), torch.tensor([7, 4, 2])
    with torch.no_grad():
        raw, _ = model.encoder(tokens, lengths)  # what a language model's encoder computes
        model.adopt_raw_embedding_encoder(torch.rand(30) + 0.1)
        assert (model.embed(tokens) - model.encoder.embedding(tokens)).abs().max() > 0.1  # other inputs ...
        normalised, _ = model.encoder.encode(model.embed(tokens), lengths)
    torch.testing.assert_close(normalised, raw, rtol=1e-4, atol=1e-5)  # ... the same function


def test_pretrained_must_be_a_language_model_checkpoint(compose_cfg, tmp_path):
    run = train(compose_cfg("experiment=imdb_lstm", *TINY, "trainer.max_epochs=1", output_dir=tmp_path / "clf"))
    cfg = compose_cfg("experiment=imdb_lstm", f"+model.pretrained={run['best_checkpoint']}", *TINY)
    with pytest.raises(ConfigError, match="is a SequenceClassifier checkpoint; it needs a language model"):
        build_model(cfg, build_datamodule(cfg))


def test_finetune_without_a_checkpoint_says_which_setting_is_missing(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"model.pretrained must be set .* model.pretrained=<value>"):
        train(compose_cfg("experiment=imdb_finetune", *TINY, output_dir=tmp_path / "ft"))
    assert '"status": "failed"' in (tmp_path / "ft" / "metrics.json").read_text()


def test_frozen_encoder_waits_and_learns_at_its_own_rate(compose_cfg, tmp_path):
    import lightning.pytorch as pl

    cfg = compose_cfg(
        "experiment=imdb_finetune",
        "model.pretrained=null",
        "model.freeze_encoder_epochs=1",
        "model.encoder_lr_scale=0.1",
        *TINY,
        *SMALL,
        output_dir=tmp_path,
    )
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    optimizer = model.configure_optimizers()["optimizer"]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 1e-3])

    def fit(epochs: int) -> dict[str, torch.Tensor]:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False)
        trainer.fit(model, datamodule=datamodule)
        return {k: not torch.equal(v, model.state_dict()[k]) for k, v in before.items() if v.is_floating_point()}

    changed = fit(1)
    assert not any(v for k, v in changed.items() if k.startswith("encoder."))
    assert all(v for k, v in changed.items() if k.startswith("head.") and "weight" in k)
    changed = fit(2)  # a fresh Trainer from epoch 0: frozen again for one epoch, then trained
    assert all(v for k, v in changed.items() if k.startswith("encoder.") and "weight" in k)


def test_large_presets_build_encoders_of_one_shape(compose_cfg, tmp_path):
    """A GPU run must not find out after pretraining that the fine-tuning preset cannot load it."""
    lm_cfg = compose_cfg("experiment=imdb_lm_pretrain_large", *TINY, output_dir=tmp_path / "lm")
    lm = build_model(lm_cfg, build_datamodule(lm_cfg))
    ft_cfg = compose_cfg("experiment=imdb_finetune_large", "model.pretrained=null", *TINY, output_dir=tmp_path / "ft")
    classifier = build_model(ft_cfg, build_datamodule(ft_cfg))
    theirs = {k: v.shape for k, v in lm.encoder.state_dict().items()}
    assert theirs == {k: v.shape for k, v in classifier.encoder.state_dict().items()}
    assert lm.encoder.hidden_size == 1024
