"""Weight averaging over the later part of training (SWA's equal average, or an exponential one).

Lightning's ``WeightAveraging`` keeps the average beside the model, swaps it in for validation and
writes it as a checkpoint's ``state_dict``. Three of its defaults do not fit a run that starts the
average late and tests its best checkpoint, so this subclass changes them:

- until the first update the average is only a copy of the initial weights: validation, checkpoints
  and the end of training then use the live weights, so early epochs are measured and saved as
  trained rather than as they were before training;
- ``trainer.test(ckpt_path=...)`` after ``fit`` would load the checkpoint's *live* weights
  (``current_model_state``) instead of the averaged ones it was chosen by; outside ``fit`` the
  checkpoint's ``state_dict`` (the average) is kept, as ``eval.py`` and ``predict.py`` read it;
- the average starts after a fraction of ``trainer.max_epochs`` rather than at a step count, so a
  sweep over the epoch budget keeps averaging over the same share of it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.swa_utils import get_ema_avg_fn

from rnnlab.errors import ConfigError

log = logging.getLogger(__name__)


class WeightAverage(WeightAveraging):
    """Average the weights after every optimizer step from epoch ``floor(start_fraction * max_epochs)``.

    ``decay=None`` gives every step the same weight (stochastic weight averaging, Izmailov et al.
    2018); a number in (0, 1) keeps an exponential moving average with that decay per step. Buffers
    are averaged too (rnnlab's are constants, such as the word frequencies of normalised embeddings).
    """

    def __init__(self, start_fraction: float = 0.5, decay: float | None = None) -> None:
        if not 0.0 <= start_fraction < 1.0:
            raise ConfigError(
                f"callbacks.weight_average.start_fraction={start_fraction}: the share of trainer.max_epochs "
                "trained before averaging starts must lie in [0, 1)"
            )
        if decay is not None and not 0.0 < decay < 1.0:
            raise ConfigError(
                f"callbacks.weight_average.decay={decay}: an exponential average needs 0 < decay < 1 "
                "(null: the equal average)"
            )
        super().__init__(use_buffers=True, **({"avg_fn": get_ema_avg_fn(decay)} if decay is not None else {}))
        self.start_fraction = start_fraction
        self.decay = decay
        self.start_epoch = 0

    @property
    def averaging(self) -> bool:
        """Whether the average holds any trained weights yet."""
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == TrainerFn.FITTING:
            epochs = trainer.max_epochs
            if epochs is None or epochs < 1:
                raise ConfigError(
                    f"callbacks.weight_average starts after a share of trainer.max_epochs, which is {epochs}; "
                    "set trainer.max_epochs"
                )
            self.start_epoch = math.floor(self.start_fraction * epochs)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # the base class updates after every step it is called for (should_update is told the step only)
        if trainer.current_epoch >= self.start_epoch:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    # no step is taken during validation, so both ends see the same answer and the swap is undone
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.averaging:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.averaging:
            self._swap_models(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.averaging:
            self._copy_average_to_current(pl_module)
        else:
            log.info("training ended before epoch %d: no weights were averaged", self.start_epoch)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if self.averaging:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # resuming restores the live weights and the average; testing or predicting keeps the average;
        # a checkpoint from before the first update holds the live weights only, already loaded
        if trainer.state.fn == TrainerFn.FITTING and "current_model_state" in checkpoint:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
