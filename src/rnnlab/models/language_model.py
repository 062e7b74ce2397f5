"""Many-to-many language model: encoder → dropout → output layer over the vocabulary.

The output layer runs only where a target exists (real positions are gathered
before it), so padding never costs a vocabulary-sized softmax. With ``stateful``
the hidden state is carried across consecutive batches of contiguous streams
(truncated BPTT, which Lightning 2.x no longer does for us) and detached each time.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from rnnlab.data.batching import IGNORE_INDEX, Batch
from rnnlab.data.codec import TextCodec
from rnnlab.errors import ConfigError
from rnnlab.models.base import OptimizerFactory, RecurrentModule, SchedulerFactory
from rnnlab.models.encoder import SequenceEncoder, State
from rnnlab.models.generation import generate

CODEC_KEY = "rnnlab_codec"

log = logging.getLogger(__name__)


def detach_state(state: State | None) -> State | None:
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class LanguageModel(RecurrentModule):
    """Next-token model; metrics ``loss`` (nats/token), ``ppl``, ``bpt`` (bits/token), ``acc``."""

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 256,
        hidden_size: int = 512,
        num_layers: int = 1,
        cell: str = "lstm",
        bidirectional: bool = False,
        dropout: float = 0.0,
        embed_dropout: float = 0.0,
        output_dropout: float = 0.0,
        tie_weights: bool = False,
        head: str = "full",
        adaptive_cutoffs: list[int] | None = None,
        stateful: bool = False,
        padding_idx: int | None = None,
        sample_prompt: str | None = None,
        sample_length: int = 200,
        sample_temperature: float = 1.0,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str = "val/loss",
    ):
        super().__init__(optimizer, scheduler, scheduler_interval, scheduler_monitor)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        if bidirectional:
            raise ConfigError(
                "model.bidirectional=true is not allowed for a language model (it would see the "
                "token it predicts); use model=classifier for bidirectional encoders"
            )
        if head not in ("full", "adaptive"):
            raise ConfigError(f"model.head={head!r} is not allowed; choose full or adaptive")
        if tie_weights and embed_dim != hidden_size:
            raise ConfigError(
                f"model.tie_weights=true needs embed_dim == hidden_size (got {embed_dim} and {hidden_size})"
            )
        self.encoder = SequenceEncoder(
            vocab_size, embed_dim, hidden_size, num_layers, cell, False, dropout, embed_dropout, padding_idx
        )
        self.output_dropout = nn.Dropout(output_dropout)
        if head == "adaptive":
            cutoffs = [c for c in (adaptive_cutoffs or [2000, 10000]) if c < vocab_size - 1]
            if not cutoffs:  # a vocabulary smaller than every cutoff: one small tail cluster
                cutoffs = [max(vocab_size // 2, 1)]
                log.warning("model.adaptive_cutoffs all exceed the vocabulary (%d); using %s", vocab_size, cutoffs)
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(hidden_size, vocab_size, cutoffs, div_value=4.0)
            self.decoder = None
        else:
            self.adaptive = None
            self.decoder = nn.Linear(hidden_size, vocab_size)
            if tie_weights:
                self.decoder.weight = self.encoder.embedding.weight
        self.codec: TextCodec | None = None
        self.stats = nn.ModuleDict(
            {stage: nn.ModuleDict({"loss": MeanMetric(), "acc": MeanMetric()}) for stage in ("val", "test")}
        )
        self._carried: dict[str, State | None] = {}

    # ---- inference API
    def step(self, tokens: Tensor, state: State | None) -> tuple[Tensor, State]:
        """Logits ``[B, T, V]`` of every step and the state after the last one (generation)."""
        outputs, state = self.encoder(tokens, None, state)
        return self._log_probs_or_logits(outputs), state

    def _log_probs_or_logits(self, hidden: Tensor) -> Tensor:
        if self.adaptive is not None:
            return self.adaptive.log_prob(hidden.reshape(-1, hidden.size(-1))).view(*hidden.shape[:-1], -1)
        return self.decoder(hidden)

    def generate_text(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        greedy: bool = False,
        seed: int | None = None,
    ) -> str:
        if self.codec is None:
            raise ConfigError("this model has no vocabulary attached; load it from an rnnlab checkpoint")
        ids = generate(
            self, self.codec.encode(prompt), max_new_tokens, temperature, top_k, greedy, seed, stop_id=self.codec.end_id
        )
        return self.codec.decode(ids)

    # ---- training
    def loss_on_targets(
        self, batch: Batch, state: State | None = None, accuracy: bool = True
    ) -> tuple[Tensor, Tensor | None, int, State | None]:
        """Mean cross-entropy over real targets, the number of correct argmax predictions, the count.

        With an adaptive head the argmax is a second pass over the head and, for rows whose
        best guess is a tail cluster, over that cluster (measured: 70 % of an IMDb LM step early
        in training); ``accuracy=False`` skips it and returns ``None`` for the count.
        """
        outputs, state = self.encoder(batch.tokens, batch.lengths, state)
        mask = batch.targets != IGNORE_INDEX
        hidden = self.output_dropout(outputs[mask])
        targets = batch.targets[mask]
        if self.adaptive is not None:
            result = self.adaptive(hidden, targets)
            correct = None
            if accuracy:
                with torch.no_grad():
                    correct = (self.adaptive.predict(hidden) == targets).sum()
            return result.loss, correct, targets.numel(), state
        logits = self.decoder(hidden)
        loss = F.cross_entropy(logits, targets)
        return loss, (logits.detach().argmax(-1) == targets).sum(), targets.numel(), state

    def _carried_state(self, stage: str, batch: Batch) -> State | None:
        if not self.hparams.stateful:
            return None
        state = self._carried.get(stage)
        if state is None:
            return None
        h = state[0] if isinstance(state, tuple) else state
        return state if h.size(1) == batch.tokens.size(0) else None

    def _forward_stage(self, batch: Batch, stage: str, accuracy: bool = True) -> tuple[Tensor, Tensor | None, int]:
        loss, correct, count, state = self.loss_on_targets(batch, self._carried_state(stage, batch), accuracy)
        if self.hparams.stateful:
            self._carried[stage] = detach_state(state)  # truncated BPTT: no graph across batches
        return loss, correct, count

    def on_train_epoch_start(self) -> None:
        self._carried.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self._carried.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._carried.pop("test", None)

    def _logging_this_step(self) -> bool:
        """Lightning writes step metrics every ``log_every_n_steps``: costly ones are computed only then."""
        connector = getattr(self._trainer, "_logger_connector", None)  # no trainer (a bare loop): always
        return bool(getattr(connector, "should_update_logs", True))

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, correct, count = self._forward_stage(batch, "train", accuracy=self._logging_this_step())
        logged = {"train/ppl": torch.exp(loss.detach()), "train/bpt": loss.detach() / math.log(2)}
        if correct is not None:
            logged["train/acc"] = correct / max(count, 1)
        self.log_dict(logged, on_step=True, on_epoch=False, batch_size=count)
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=count)
        return loss

    def _eval_step(self, batch: Batch, stage: str) -> None:
        loss, correct, count = self._forward_stage(batch, stage)
        self.stats[stage]["loss"].update(loss.detach(), count)
        self.stats[stage]["acc"].update(correct / max(count, 1), count)

    def _eval_epoch_end(self, stage: str) -> None:
        loss = self.stats[stage]["loss"].compute()  # token-weighted over all batches (and DDP ranks)
        acc = self.stats[stage]["acc"].compute()
        self.log_dict(
            {
                f"{stage}/loss": loss,
                f"{stage}/ppl": torch.exp(loss),
                f"{stage}/bpt": loss / math.log(2),
                f"{stage}/acc": acc,
            },
            prog_bar=True,
        )
        for metric in self.stats[stage].values():
            metric.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")
        self._log_sample()

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # ---- vocabulary travels with the model
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

    def _log_sample(self) -> None:
        """A generated sample as TensorBoard text each validation, to see what the numbers mean."""
        prompt = self.hparams.sample_prompt
        if not prompt or self.codec is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        text = self.generate_text(prompt, self.hparams.sample_length, self.hparams.sample_temperature, seed=0)
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_text"):
                experiment.add_text("samples", f"**{prompt}**{text}", global_step=self.global_step)
