"""What the LightningModules share: hyper-parameters saved as plain data, the codec that travels in
their checkpoints, and an optimizer / LR schedule that come from the config as partials."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from rnnlab.data.codec import TextCodec
from rnnlab.errors import ConfigError
from rnnlab.models.encoder import EncoderSettings
from rnnlab.models.schedules import wants_total_steps

CODEC_KEY = "rnnlab_codec"
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


class RecurrentModule(pl.LightningModule):
    """Base class: holds the optimizer/scheduler factories handed over by Hydra (``_partial_: true``)."""

    def __init__(
        self,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str = "val/loss",
    ):
        super().__init__()
        self.codec: TextCodec | None = None  # text ↔ ids, from the DataModule; travels in checkpoints
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval, self.scheduler_monitor = scheduler_interval, scheduler_monitor

    @classmethod
    def saved_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """A checkpoint's hyper-parameters as this class takes them now (older layouts moved into their nodes)."""
        return EncoderSettings.nest(hparams)

    def save_settings(self, encoder: Mapping[str, Any] | EncoderSettings | None) -> EncoderSettings:
        """Save the subclass constructor's arguments as hyper-parameters, the encoder's settings as a
        plain dict (a checkpoint then loads as data only), and return those settings checked."""
        settings = EncoderSettings.of(encoder)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False, frame=inspect.currentframe().f_back)
        self.hparams["encoder"] = settings.as_dict()
        return settings

    # ---- the vocabulary travels with the model: a checkpoint reads new text without its DataModule
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.codec is None and datamodule is not None and hasattr(datamodule, "codec"):
            self.codec = datamodule.codec

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.codec is not None:
            checkpoint[CODEC_KEY] = self.codec.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if CODEC_KEY in checkpoint:
            self.codec = TextCodec.from_dict(checkpoint[CODEC_KEY])

    def parameter_groups(self) -> list[dict[str, Any]]:
        """What the optimizer updates; a group's ``lr_scale`` multiplies the configured learning rate."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self) -> Any:
        groups = [dict(group) for group in self.parameter_groups() if group["params"]]
        scales = [group.pop("lr_scale", 1.0) for group in groups]
        optimizer = (self.optimizer_factory or torch.optim.Adam)(params=groups)
        for group, scale in zip(optimizer.param_groups, scales, strict=True):
            group["lr"] *= scale  # before the scheduler records each group's initial_lr
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer, **self._schedule_length())
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": self.scheduler_interval,
                "monitor": self.scheduler_monitor,
            },
        }

    def _schedule_length(self) -> dict[str, int]:
        """``total_steps`` for a schedule that asks for it: the optimizer steps this run will take."""
        if not wants_total_steps(self.scheduler_factory):
            return {}
        if self.scheduler_interval != "step":
            raise ConfigError(
                f"model.scheduler is sized in optimizer steps (it takes total_steps) but "
                f"model.scheduler_interval={self.scheduler_interval!r}; set model.scheduler_interval=step"
            )
        return {"total_steps": int(self.trainer.estimated_stepping_batches)}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the gradient norm (before clipping) so exploding gradients show up in TensorBoard."""
        if self.trainer.global_step % max(self.trainer.log_every_n_steps, 1) == 0:
            norm = nn.utils.get_total_norm([p.grad for p in self.parameters() if p.grad is not None])
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
