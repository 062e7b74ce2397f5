"""Schedules sized in optimizer steps: the slanted triangular shape, and the step count the trainer supplies."""

from functools import partial

import lightning.pytorch as pl
import pytest
import torch
from test_transfer import SMALL, TINY
from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR

from rnnlab.builders import build_datamodule, build_model
from rnnlab.errors import ConfigError
from rnnlab.models.schedules import slanted_triangular, wants_total_steps

STLR = ("~model.scheduler", "+model.scheduler={_target_:rnnlab.models.schedules.slanted_triangular,_partial_:true}")


def fit_finetune(compose_cfg, output_dir, *overrides: str, epochs: int) -> pl.Trainer:
    """A from-scratch imdb_finetune on the tiny data with the slanted triangular schedule."""
    cfg = compose_cfg(
        "experiment=imdb_finetune", "model.pretrained=null", *TINY, *SMALL, *STLR, *overrides, output_dir=output_dir
    )
    datamodule = build_datamodule(cfg)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(build_model(cfg, datamodule), datamodule=datamodule)
    return trainer


def rates(total_steps: int, **kwargs) -> list[list[float]]:
    head, encoder = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [encoder], "lr": 0.1}, {"params": [head], "lr": 1.0}], lr=1.0)
    scheduler = slanted_triangular(optimizer, total_steps, **kwargs)
    seen = []
    for _ in range(total_steps + 1):
        seen.append(scheduler.get_last_lr())
        optimizer.step()
        scheduler.step()
    return seen


def test_slanted_triangular_rises_briefly_then_falls_for_each_group():
    seen = rates(100, warmup_fraction=0.1, ratio=32)
    head = [lr for _, lr in seen]
    assert head[0] == pytest.approx(1 / 32)
    assert max(head) == pytest.approx(1.0) and head.index(max(head)) == 10
    assert head[100] == pytest.approx(1 / 32)
    assert all(a < b for a, b in zip(head[:10], head[1:11], strict=True))
    assert all(a > b for a, b in zip(head[10:100], head[11:101], strict=True))
    assert all(enc == pytest.approx(0.1 * h) for enc, h in seen)  # the group's own scale is kept


def test_slanted_triangular_rejects_settings_it_cannot_honour():
    with pytest.raises(ConfigError, match="warmup_fraction=1.5"):
        rates(10, warmup_fraction=1.5)


def test_only_schedules_that_take_total_steps_and_leave_it_open_get_it():
    assert wants_total_steps(partial(slanted_triangular))
    assert wants_total_steps(partial(OneCycleLR, max_lr=0.1))
    assert not wants_total_steps(partial(slanted_triangular, total_steps=5))
    assert not wants_total_steps(partial(CosineAnnealingLR, T_max=3))


def test_finetune_with_slanted_triangular_spans_the_whole_run(compose_cfg, tmp_path):
    trainer = fit_finetune(compose_cfg, tmp_path, "model.scheduler_interval=step", epochs=2)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == trainer.global_step > 0
    assert scheduler.get_last_lr() == pytest.approx([1e-3 / 32, 1e-3 / 32])  # back at the floor after the last step


def test_a_step_sized_schedule_stepped_per_epoch_names_the_fix(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match="model.scheduler_interval=step"):
        fit_finetune(compose_cfg, tmp_path, epochs=1)
