"""Training throughput: examples and tokens a second over the time the training loop spends on batches.

A run's wall time also counts start-up, validation, checkpoints and the test, each of which another
machine, precision or schedule moves differently; examples a second over the training batches alone
is the figure that compares machines and settings (and what a GPU result is reported with).
Lightning's ``ThroughputMonitor`` gives a rolling window to the loggers only; this one's per-epoch
figure also reaches ``metrics.json`` (through the callback metrics), so the run folder keeps it.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch

from rnnlab.data.batching import labelled_and_unlabelled
from rnnlab.runs.record import PERF_PREFIX

EXAMPLES_PER_S = f"{PERF_PREFIX}train_examples_per_s"
TOKENS_PER_S = f"{PERF_PREFIX}train_tokens_per_s"


class TrainingThroughput(pl.Callback):
    """Logs ``perf/train_examples_per_s`` and ``perf/train_tokens_per_s`` (real tokens, padding left out)
    at the end of each training epoch, over that epoch's batches.

    The clock runs from the epoch's start and stops for validation (inside the epoch too), so loading
    the next batch counts and evaluating does not. Under DDP each process times its own share and the
    figures are summed: the rate of the whole job.
    """

    def __init__(self) -> None:
        self._started: float | None = None  # when the clock last started; None while it is stopped
        self._seconds = 0.0
        self._examples = 0
        self._tokens = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._seconds, self._examples, self._tokens = 0.0, 0, 0
        self._started = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self._started is None:  # the first batch after a validation inside the epoch
            self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int):
        counted, _ = labelled_and_unlabelled(batch)  # what an epoch counts: the unlabelled reviews ride along
        self._examples += len(counted)
        self._tokens += int(counted.lengths.sum())

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop(pl_module)
        # every process logs, even one that timed nothing: under DDP the sum is a collective call
        seconds = self._seconds if self._seconds > 0 else float("inf")
        rates = {EXAMPLES_PER_S: self._examples / seconds, TOKENS_PER_S: self._tokens / seconds}
        pl_module.log_dict(rates, on_step=False, on_epoch=True, sync_dist=True, reduce_fx="sum")

    def _stop(self, pl_module: pl.LightningModule) -> None:
        if self._started is None:  # not training (the sanity check), or already stopped
            return
        if pl_module.device.type == "cuda":  # kernels still queued belong to the training time
            torch.cuda.synchronize(pl_module.device)
        self._seconds += time.perf_counter() - self._started
        self._started = None
