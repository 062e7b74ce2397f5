"""Many-to-many language model: encoder → dropout → output layer over the vocabulary.

The output layer runs only where a target exists (real positions are gathered
before it), so padding never costs a vocabulary-sized softmax. With ``stateful``
the hidden state is carried across consecutive batches of contiguous streams
(truncated BPTT, which Lightning 2.x no longer does for us) and detached each time.

With ``bidirectional`` it is a forward + backward language model (Peters et al. 2018):
the forward direction predicts the next token, the reverse one the previous token,
through one shared output layer. Neither direction sees the token it predicts, and
the trained encoder has the shape a bidirectional classifier can start from.

Held-out text is scored under a named protocol (DESIGN.md, "Evaluating language models"): the
first val/test loader is the configured one (``stage/loss``; a stateful model carries its state
through the text, so it is also logged as ``stage/loss_full_context``); any further loader holds
independent windows from a zero state (``data.eval_windows``), logged as ``stage/loss_window<T>``
with ``T`` the window's length: nanoGPT's figure at 256.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from rnnlab.data.batching import IGNORE_INDEX, Batch
from rnnlab.errors import ConfigError
from rnnlab.models.base import OptimizerFactory, RecurrentModule, SchedulerFactory
from rnnlab.models.encoder import EncoderSettings, SequenceEncoder, State
from rnnlab.models.generation import generate
from rnnlab.models.padding import step_mask

log = logging.getLogger(__name__)


@dataclass
class TargetLoss:
    """Mean cross-entropy over every prediction, its argmax hits (``None`` when skipped) and count.

    ``forward_loss`` is the next-token part alone (``None`` for a one-way model): the figure
    comparable with a forward-only language model's loss.
    """

    loss: Tensor
    correct: Tensor | None
    count: int
    state: State | None
    forward_loss: Tensor | None = None
    forward_count: int = 0


def previous_token_targets(batch: Batch) -> Tensor:
    """What the reverse direction predicts at each step: the token before it (none at step 0 or padding)."""
    targets = torch.full_like(batch.targets, IGNORE_INDEX)
    targets[:, 1:] = batch.tokens[:, :-1]
    return targets.masked_fill(~step_mask(batch.lengths, batch.tokens.size(1), targets.device), IGNORE_INDEX)


@contextmanager
def outside_autocast(hidden: Tensor) -> Iterator[Tensor]:
    """``hidden`` in float32 with autocast off: ``nn.AdaptiveLogSoftmaxWithLoss`` is not autocast-safe.

    Under CUDA mixed precision its half-precision rows meet float32 log-probabilities in one
    ``index_copy_`` and training stops (16-mixed and bf16-mixed alike). The head is a small part
    of the cost, so it runs in full precision rather than being patched.
    """
    with torch.autocast(hidden.device.type, enabled=False):
        yield hidden.float()


def detach_state(state: State | None) -> State | None:
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class LanguageModel(RecurrentModule):
    """Next-token model; metrics ``loss`` (nats/token), ``ppl``, ``bpt`` (bits/token), ``acc``."""

    def __init__(
        self,
        vocab_size: int,
        encoder: Mapping[str, Any] | EncoderSettings | None = None,
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
        settings = self.save_settings(encoder)
        if settings.bidirectional and (settings.num_layers != 1 or stateful):
            raise ConfigError(
                f"model.encoder.bidirectional=true needs model.encoder.num_layers=1 and model.stateful=false for a "
                f"language model (got num_layers={settings.num_layers}, stateful={stateful}): a second layer, or a "
                f"state carried in from the next batch, would let the reverse direction see the token it predicts"
            )
        if head not in ("full", "adaptive"):
            raise ConfigError(f"model.head={head!r} is not allowed; choose full or adaptive")
        hidden_size = settings.hidden_size
        if tie_weights and settings.embed_dim != hidden_size:
            raise ConfigError(
                f"model.tie_weights=true needs model.encoder.embed_dim == hidden_size "
                f"(got {settings.embed_dim} and {hidden_size})"
            )
        self.encoder = SequenceEncoder(vocab_size, settings, padding_idx)
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
        tracked = ("loss", "acc", "loss_forward") if settings.bidirectional else ("loss", "acc")
        self.stats = nn.ModuleDict(
            {stage: nn.ModuleDict({k: MeanMetric() for k in tracked}) for stage in ("val", "test")}
        )
        self._carried: dict[str, State | None] = {}
        # ``<stage>_window<T>`` -> its metrics, made when a window length is first seen (not saved: MeanMetric
        # states are not persistent, so a checkpoint is the same with or without them)
        self.window_stats = nn.ModuleDict()

    # ---- inference API
    def step(self, tokens: Tensor, state: State | None) -> tuple[Tensor, State]:
        """Next-token logits ``[B, T, V]`` of every step and the state after the last one (generation)."""
        outputs, state = self.encoder.causal(tokens, state)
        return self._log_probs_or_logits(outputs), state

    def _log_probs_or_logits(self, hidden: Tensor) -> Tensor:
        if self.adaptive is not None:
            with outside_autocast(hidden) as full:
                return self.adaptive.log_prob(full.reshape(-1, full.size(-1))).view(*full.shape[:-1], -1)
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
    def loss_on_targets(self, batch: Batch, state: State | None = None, accuracy: bool = True) -> TargetLoss:
        """Cross-entropy over the real targets of every direction, in one pass through the output layer.

        With an adaptive head the argmax is a second pass over the head and, for rows whose
        best guess is a tail cluster, over that cluster (most of a step's cost early in training,
        when many guesses fall in a tail cluster); ``accuracy=False`` skips it.
        """
        outputs, state = self.encoder(batch.tokens, batch.lengths, state)
        if self.encoder.bidirectional:
            size = self.encoder.hidden_size
            pairs = [(outputs[..., :size], batch.targets), (outputs[..., size:], previous_token_targets(batch))]
        else:
            pairs = [(outputs, batch.targets)]
        masks = [targets != IGNORE_INDEX for _, targets in pairs]
        hidden = self.output_dropout(torch.cat([h[m] for (h, _), m in zip(pairs, masks, strict=True)]))
        targets = torch.cat([t[m] for (_, t), m in zip(pairs, masks, strict=True)])
        nll, correct = self._nll(hidden, targets, accuracy)
        if len(pairs) == 1:
            return TargetLoss(nll.mean(), correct, targets.numel(), state)
        forward_count = int(masks[0].sum())
        forward_loss = nll[:forward_count].mean().detach()
        return TargetLoss(nll.mean(), correct, targets.numel(), state, forward_loss, forward_count)

    def _nll(self, hidden: Tensor, targets: Tensor, accuracy: bool) -> tuple[Tensor, Tensor | None]:
        """Per-target negative log-likelihood and the number of argmax hits."""
        if self.adaptive is not None:
            with outside_autocast(hidden) as full:
                nll = -self.adaptive(full, targets).output
                correct = None
                if accuracy:
                    with torch.no_grad():
                        correct = (self.adaptive.predict(full) == targets).sum()
            return nll, correct
        logits = self.decoder(hidden)
        nll = F.cross_entropy(logits, targets, reduction="none")
        return nll, (logits.detach().argmax(-1) == targets).sum()

    def _carried_state(self, stage: str, batch: Batch) -> State | None:
        if not self.hparams.stateful:
            return None
        state = self._carried.get(stage)
        if state is None:
            return None
        h = state[0] if isinstance(state, tuple) else state
        return state if h.size(1) == batch.tokens.size(0) else None

    def _forward_stage(self, batch: Batch, stage: str, accuracy: bool = True) -> TargetLoss:
        result = self.loss_on_targets(batch, self._carried_state(stage, batch), accuracy)
        if self.hparams.stateful:
            self._carried[stage] = detach_state(result.state)  # truncated BPTT: no graph across batches
        return result

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
        result = self._forward_stage(batch, "train", accuracy=self._logging_this_step())
        loss, correct, count = result.loss, result.correct, result.count
        logged = {"train/ppl": torch.exp(loss.detach()), "train/bpt": loss.detach() / math.log(2)}
        if correct is not None:
            logged["train/acc"] = correct / max(count, 1)
        self.log_dict(logged, on_step=True, on_epoch=False, batch_size=count)
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=count)
        return loss

    def _eval_step(self, batch: Batch, stage: str, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:
            result, stats = self._forward_stage(batch, stage), self.stats[stage]
        else:  # independent windows: every one from a zero state, whatever the model carries elsewhere
            result, stats = self.loss_on_targets(batch, None), self._window_stats(stage, batch.tokens.size(1))
        stats["loss"].update(result.loss.detach(), result.count)
        stats["acc"].update(result.correct / max(result.count, 1), result.count)
        if result.forward_loss is not None and "loss_forward" in stats:
            stats["loss_forward"].update(result.forward_loss, result.forward_count)

    def _window_stats(self, stage: str, length: int) -> nn.ModuleDict:
        key = f"{stage}_window{length}"  # a module name may not hold '/'
        if key not in self.window_stats:
            self.window_stats[key] = nn.ModuleDict({k: MeanMetric() for k in ("loss", "acc")}).to(self.device)
        return self.window_stats[key]

    def _eval_epoch_end(self, stage: str) -> None:
        logged = self._summarised(stage, self.stats[stage], "")
        if self.hparams.stateful:  # the configured loader carried the state: the full-context protocol
            logged[f"{stage}/loss_full_context"] = logged[f"{stage}/loss"]
        for key, stats in self.window_stats.items():
            if key.startswith(f"{stage}_") and stats["loss"].update_count:
                logged.update(self._summarised(stage, stats, key[len(stage) :]))
        self.log_dict(logged, prog_bar=True)

    @staticmethod
    def _summarised(stage: str, stats: nn.ModuleDict, suffix: str) -> dict[str, Tensor]:
        """loss (nats/token, token-weighted over all batches and DDP ranks), ppl, bpt, acc; metrics reset."""
        loss = stats["loss"].compute()
        logged = {
            f"{stage}/loss{suffix}": loss,
            f"{stage}/ppl{suffix}": torch.exp(loss),
            f"{stage}/bpt{suffix}": loss / math.log(2),
            f"{stage}/acc{suffix}": stats["acc"].compute(),
        }
        if "loss_forward" in stats:
            forward = stats["loss_forward"].compute()
            logged.update({f"{stage}/loss_forward": forward, f"{stage}/ppl_forward": torch.exp(forward)})
        for metric in stats.values():
            metric.reset()
        return logged

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")
        self._log_sample()

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _log_sample(self) -> None:
        """A generated sample as TensorBoard text each validation, to see what the numbers mean."""
        prompt = self.hparams.sample_prompt
        if not prompt or self.codec is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        text = self.generate_text(prompt, self.hparams.sample_length, self.hparams.sample_temperature, seed=0)
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_text"):
                experiment.add_text("samples", self.codec.join(f"**{prompt}**", text), global_step=self.global_step)
