"""callbacks/weight_average: validation, checkpoints and the test read the averaged weights."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from test_transfer import SMALL, TINY
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rnnlab.builders import build_callbacks
from rnnlab.errors import ConfigError
from rnnlab.runs.targets import foreign_targets
from rnnlab.tasks.evaluate import evaluate
from rnnlab.tasks.train import train
from rnnlab.training.weight_average import WeightAverage

EPOCHS, STEPS = 4, 3  # steps per epoch


class Line(pl.LightningModule):
    """A linear regression small enough to follow every weight by hand."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Recorder(pl.Callback):
    """The live weights after every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(flat(pl_module.state_dict()))


def flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([state["layer.weight"].flatten(), state["layer.bias"].flatten()]).clone()


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS * 4, 3, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True) + 0.5), batch_size=4)


def fit(tmp_path: Path, average: WeightAverage, epochs: int = EPOCHS, ckpt_path: str | None = None):
    recorder = Recorder()
    saver = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1, save_last=True)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[average, recorder, saver],
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = Line()
    trainer.fit(model, loader(), loader(), ckpt_path=ckpt_path)
    return model, recorder.steps


def test_swa_averages_every_step_of_the_last_half_and_checkpoints_hold_what_validation_read(tmp_path):
    model, steps = fit(tmp_path, WeightAverage(start_fraction=0.5))
    average = torch.stack(steps[STEPS * EPOCHS // 2 :]).mean(0)  # epochs 2 and 3 (0-based)
    torch.testing.assert_close(flat(model.state_dict()), average)  # the fitted model is the average
    before = torch.load(tmp_path / "epoch=0.ckpt", weights_only=True)
    assert "current_model_state" not in before  # not averaging yet: the live weights, as validated
    torch.testing.assert_close(flat(before["state_dict"]), steps[STEPS - 1])
    after = torch.load(tmp_path / f"epoch={EPOCHS - 1}.ckpt", weights_only=True)
    torch.testing.assert_close(flat(after["state_dict"]), average)
    torch.testing.assert_close(flat(after["current_model_state"]), steps[-1])
    assert not torch.allclose(average, steps[-1])  # the average is not the last step's weights


def test_ema_follows_the_recursion_from_the_first_step(tmp_path):
    decay = 0.6
    model, steps = fit(tmp_path, WeightAverage(start_fraction=0.0, decay=decay))
    expected = steps[0]
    for live in steps[1:]:
        expected = decay * expected + (1 - decay) * live
    torch.testing.assert_close(flat(model.state_dict()), expected)


def test_a_resumed_run_averages_as_an_uninterrupted_one(tmp_path):
    whole, _ = fit(tmp_path / "whole", WeightAverage(start_fraction=0.0))
    fit(tmp_path / "part", WeightAverage(start_fraction=0.0), epochs=2)
    resumed, _ = fit(tmp_path / "part", WeightAverage(start_fraction=0.0), ckpt_path=str(tmp_path / "part/last.ckpt"))
    torch.testing.assert_close(flat(resumed.state_dict()), flat(whole.state_dict()))


@pytest.mark.parametrize("kwargs", [{"start_fraction": 1.0}, {"start_fraction": -0.1}, {"decay": 1.0}])
def test_settings_out_of_range_are_config_errors(kwargs):
    with pytest.raises(ConfigError, match="callbacks.weight_average"):
        WeightAverage(**kwargs)


@pytest.mark.parametrize("option", ["swa", "ema"])
def test_each_option_composes_into_the_callbacks_and_a_rerun_accepts_it(option, compose_cfg):
    cfg = compose_cfg("experiment=imdb_vat", f"callbacks/weight_average={option}")
    assert foreign_targets(OmegaConf.to_container(cfg)) == []  # rerun.py builds a saved config of it
    callbacks = build_callbacks(cfg)
    (average,) = [c for c in callbacks if isinstance(c, WeightAverage)]
    assert (average.decay is None) == (option == "swa")


def test_the_test_after_fit_reads_the_averaged_checkpoint_as_eval_does(compose_cfg, tmp_path):
    # Lightning's own callback loads a checkpoint's live weights into trainer.test after fit
    cfg = compose_cfg(
        "experiment=imdb_vat",
        "model.pretrained=null",
        "callbacks/weight_average=swa",
        "callbacks.weight_average.start_fraction=0",
        *TINY,
        *SMALL,
        "data.batch_size=2",
        "trainer.max_epochs=2",
        output_dir=tmp_path / "run",
    )
    metrics = train(cfg)
    saved = torch.load(metrics["best_checkpoint"], weights_only=True)
    live, averaged = saved["current_model_state"], saved["state_dict"]  # an averaged checkpoint
    assert not torch.equal(live["head.0.weight"], averaged["head.0.weight"])
    again = evaluate(
        compose_cfg(f"ckpt_path={metrics['best_checkpoint']}", config_name="eval", output_dir=tmp_path / "e")
    )
    assert math.isfinite(metrics["test/loss"])
    assert again["test/loss"] == pytest.approx(metrics["test/loss"], abs=1e-6)
