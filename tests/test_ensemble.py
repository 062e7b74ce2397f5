"""Averaging classifiers: each member scores the held-out reviews through its own DataModule."""

import pytest
import torch
from test_transfer import TINY

from rnnlab.errors import ConfigError
from rnnlab.runs.checkpoints import Checkpoint
from rnnlab.tasks.ensemble import classification_metrics, ensemble, member_scores
from rnnlab.tasks.evaluate import evaluate
from rnnlab.tasks.train import train

QUICK = (*TINY, "trainer.max_epochs=1", "model.encoder.embed_dim=16", "model.encoder.hidden_size=24")


@pytest.fixture
def members(compose_cfg, tmp_path):
    """A forward classifier and a backward one with its own vocabulary: members need not share data settings."""
    forward = train(compose_cfg("experiment=imdb_lstm", *QUICK, output_dir=tmp_path / "fwd"))
    backward = train(
        compose_cfg("experiment=imdb_lstm", *QUICK, "data.reverse=true", "data.min_freq=2", output_dir=tmp_path / "bwd")
    )
    return forward["best_checkpoint"], backward["best_checkpoint"]


def test_members_score_as_alone_and_the_ensemble_averages_them(compose_cfg, members, tmp_path):
    paths = ",".join(members)
    result = ensemble(compose_cfg(f"ckpt_paths=[{paths}]", config_name="ensemble", output_dir=tmp_path / "ens"))
    assert result["status"] == "completed"
    for i, path in enumerate(members):
        alone = evaluate(compose_cfg(f"ckpt_path={path}", config_name="eval", output_dir=tmp_path / f"e{i}"))
        for key in ("acc", "auroc", "f1"):
            assert result[f"member{i}/test/{key}"] == pytest.approx(alone[f"test/{key}"], abs=1e-6), (i, key)

    ens_cfg = compose_cfg(f"ckpt_paths=[{paths}]", config_name="ensemble")
    scores = [member_scores(path, ens_cfg, "test") for path in members]
    mean = (scores[0].probabilities + scores[1].probabilities) / 2
    assert result["test/acc"] == classification_metrics(mean, scores[0].labels, "test/")["test/acc"]

    # each probability belongs to its own review: the backward member, one review at a time
    checkpoint = Checkpoint.open(members[1])
    model = checkpoint.model()
    datamodule = checkpoint.datamodule(ens_cfg.paths.data_dir, ens_cfg.paths.cache_dir)
    datamodule.setup("test")
    test = datamodule.datasets["test"]
    with torch.no_grad():
        alone = [model.scores(model(test[i][0][None], torch.tensor([len(test[i][0])])))[0] for i in range(len(test))]
    assert torch.allclose(torch.stack(alone), scores[1].probabilities, atol=1e-5)
    assert torch.equal(scores[1].labels, test.labels.long())


def test_ensemble_refuses_what_it_cannot_average(compose_cfg, members, tmp_path):
    def run(*overrides: str) -> None:
        ensemble(compose_cfg(*overrides, config_name="ensemble", output_dir=tmp_path / "e"))

    with pytest.raises(ConfigError, match="needs at least two"):
        run(f"ckpt_paths=[{members[0]}]")
    with pytest.raises(ConfigError, match="split='train'"):
        run(f"ckpt_paths=[{members[0]},{members[1]}]", "split=train")
    other_split = train(compose_cfg("experiment=imdb_lstm", *QUICK, "data.split_seed=2", output_dir=tmp_path / "s2"))[
        "best_checkpoint"
    ]
    with pytest.raises(ConfigError, match="another validation split"):
        run(f"ckpt_paths=[{members[0]},{other_split}]", "split=val")
    lm = train(compose_cfg("experiment=imdb_lm_pretrain", *QUICK, output_dir=tmp_path / "lm"))["best_checkpoint"]
    with pytest.raises(ConfigError, match="an ensemble averages classifiers"):
        run(f"ckpt_paths=[{members[0]},{lm}]")
