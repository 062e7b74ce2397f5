"""Callbacks that make failures recoverable: stop on a non-finite loss before it reaches the
weights, and leave a complete ``last.ckpt`` when training is interrupted (Ctrl-C, SIGTERM)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning.pytorch as pl
from torch import Tensor

from rnnlab.errors import RnnlabError

log = logging.getLogger(__name__)


class NonFiniteLossError(RnnlabError):
    """The training loss became NaN or infinite."""


class NonFiniteLossGuard(pl.Callback):
    """Raises before ``backward`` when the loss is not finite, so no NaN gradient is ever applied."""

    def __init__(self) -> None:
        self.last_finite: tuple[int, float] | None = None

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        value = float(loss.detach())
        step = trainer.global_step
        if math.isfinite(value):
            self.last_finite = (step, value)
            return
        before = (
            f"last finite loss {self.last_finite[1]:.4f} at step {self.last_finite[0]}"
            if self.last_finite
            else "no finite loss before it"
        )
        raise NonFiniteLossError(
            f"training loss became {value} at step {step} ({before}); the weights are those before this step "
            f"(saved in checkpoints/last.ckpt). Lower model.optimizer.lr or set trainer.gradient_clip_val=1.0."
        )


class CheckpointOnInterrupt(pl.Callback):
    """Writes ``last.ckpt`` (atomically, by Lightning) when fit stops on an exception after a step.

    Before the first step there is nothing worth resuming, so a setup error writes nothing.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last"):
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.global_step == 0 or trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.path)
        log.warning(
            "%s at step %d: state saved to %s (resume with ckpt_path=%s)",
            type(exception).__name__,
            trainer.global_step,
            self.path,
            self.path,
        )
