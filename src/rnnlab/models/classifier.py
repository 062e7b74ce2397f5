"""Many-to-one sequence classifier: encoder → pooled features → MLP → logits."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import AUROC, Accuracy, F1Score, MetricCollection

from rnnlab.data.batching import Batch, labelled_and_unlabelled
from rnnlab.errors import ConfigError
from rnnlab.models.adversarial import (
    AdversarialSettings,
    adversarial_loss,
    embedding_statistics,
    normalized_embeddings,
    virtual_adversarial_loss,
)
from rnnlab.models.base import OptimizerFactory, RecurrentModule, SchedulerFactory
from rnnlab.models.encoder import EncoderSettings, SequenceEncoder, check_positive
from rnnlab.models.padding import step_mask
from rnnlab.models.pictures import HeldOutPictures

CLASSES_KEY = "rnnlab_classes"

# what each pooling reads: the last step, the mean and/or the max over time;
# "concat" is ULMFiT's concat pooling, all three side by side
POOLINGS: dict[str, tuple[str, ...]] = {
    "last": ("last",),
    "mean": ("mean",),
    "max": ("max",),
    "meanmax": ("mean", "max"),
    "concat": ("last", "mean", "max"),
}


def pool(outputs: Tensor, lengths: Tensor, how: str) -> Tensor:
    """Masked mean and/or max over time; padding never enters either."""
    mask = step_mask(lengths, outputs.size(1), outputs.device).unsqueeze(-1)
    parts = []
    if "mean" in POOLINGS[how]:
        parts.append((outputs * mask).sum(1) / mask.sum(1).clamp(min=1))
    if "max" in POOLINGS[how]:
        parts.append(outputs.masked_fill(~mask, float("-inf")).amax(1))
    return torch.cat(parts, dim=-1)


def metric_task(num_classes: int) -> dict[str, Any]:
    """torchmetrics' task arguments: one positive-class probability for two classes, else one per class."""
    return {"task": "binary"} if num_classes == 2 else {"task": "multiclass", "num_classes": num_classes}


def held_out_metrics(num_classes: int) -> MetricCollection:
    """What validation and test report (and what an ensemble of classifiers reports): acc, F1, AUROC."""
    task = metric_task(num_classes)
    return MetricCollection({"acc": Accuracy(**task), "f1": F1Score(**task), "auroc": AUROC(**task)})


class SequenceClassifier(RecurrentModule):
    """Binary (one logit, ``BCEWithLogitsLoss``) or multi-class (cross-entropy) classifier."""

    def __init__(
        self,
        vocab_size: int,
        encoder: Mapping[str, Any] | EncoderSettings | None = None,
        head_dropout: float = 0.0,
        pooling: str = "last",
        fc_hidden: int = 64,
        num_classes: int = 2,
        padding_idx: int | None = 0,
        encoder_lr_scale: float = 1.0,
        freeze_encoder_epochs: int = 0,
        adversarial: Mapping[str, Any] | AdversarialSettings | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str = "val/loss",
    ):
        super().__init__(optimizer, scheduler, scheduler_interval, scheduler_monitor)
        settings = self.save_settings(encoder)
        self.adversarial = AdversarialSettings.of(adversarial)
        self.hparams["adversarial"] = self.adversarial.as_dict()  # plain data, as the encoder's settings
        if pooling not in POOLINGS:
            raise ConfigError(f"model.pooling={pooling!r} is not allowed; choose one of {', '.join(POOLINGS)}")
        check_positive(fc_hidden=fc_hidden)
        if num_classes < 2:
            raise ConfigError(f"model.num_classes must be at least 2, got {num_classes}")
        if encoder_lr_scale < 0 or freeze_encoder_epochs < 0:
            raise ConfigError(
                f"model.encoder_lr_scale and model.freeze_encoder_epochs must not be negative, "
                f"got {encoder_lr_scale} and {freeze_encoder_epochs}"
            )
        self.encoder = SequenceEncoder(vocab_size, settings, padding_idx)
        # the paper's perturbation size assumes embeddings of a known scale: normalised by word frequency
        self.normalized = self.adversarial.normalizes
        if self.normalized:  # filled from the training data in setup(), then saved with the weights
            self.register_buffer("token_frequencies", torch.zeros(vocab_size))
        features = self.encoder.output_size * len(POOLINGS[pooling])
        self.binary = num_classes == 2
        self.head = nn.Sequential(
            nn.Linear(features, fc_hidden),
            nn.ReLU(),
            nn.Dropout(head_dropout),
            nn.Linear(fc_hidden, 1 if self.binary else num_classes),
        )
        self.train_metrics = MetricCollection({"acc": Accuracy(**metric_task(num_classes))}, prefix="train/")
        evaluation = held_out_metrics(num_classes)
        self.val_metrics = evaluation.clone(prefix="val/")
        self.test_metrics = evaluation.clone(prefix="test/")
        self.test_pictures = HeldOutPictures(metric_task(num_classes))
        self.class_names: list[str] | None = None

    @classmethod
    def saved_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        return AdversarialSettings.nest(super().saved_hparams(hparams))

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Embedding + encoder at ``encoder_lr_scale`` times the learning rate, the head at the full rate.

        A pretrained encoder already knows the language; a smaller step keeps fine-tuning from
        overwriting it while the randomly initialised head catches up (ULMFiT's discriminative rates).
        """
        encoder = list(self.encoder.parameters())
        shared = {id(p) for p in encoder}
        head = [p for p in self.parameters() if id(p) not in shared]
        return [{"params": encoder, "lr_scale": self.hparams.encoder_lr_scale}, {"params": head}]

    def on_train_epoch_start(self) -> None:
        """Keep the encoder fixed for the first ``freeze_encoder_epochs`` epochs: the head learns on its features.

        The parameters stay in the optimizer; without gradients Adam(W) leaves them untouched.
        """
        if self.hparams.freeze_encoder_epochs:
            self.encoder.requires_grad_(self.current_epoch >= self.hparams.freeze_encoder_epochs)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.logits_from(self.embed(tokens), lengths)

    def embed(self, tokens: Tensor) -> Tensor:
        """Token embeddings ``[B, T, E]`` after their dropout, frequency-normalised when the model is
        (adversarial training). A perturbation is added to these: every pass over one batch, clean or
        perturbed, then reads the same dropped embeddings, as in Miyato et al.'s code."""
        weight = self.encoder.embedding.weight
        if self.normalized:
            weight = normalized_embeddings(weight, self.token_frequencies)
        embedded = F.embedding(tokens, weight, padding_idx=self.encoder.embedding.padding_idx)
        return self.encoder.embed_dropout(embedded)

    def adopt_raw_embedding_encoder(self, frequencies: Tensor) -> None:
        """Start a normalising model from an encoder that learned on raw embeddings (a language model):
        fix the word frequencies now and fold the normalisation into the encoder's input weights, so the
        model begins with the pretrained function (only a normalising model has frequencies to fix)."""
        self.token_frequencies.copy_(frequencies)
        mean, std = embedding_statistics(self.encoder.embedding.weight, self.token_frequencies)
        self.encoder.read_normalized_inputs(mean, std)

    def logits_from(self, embedded: Tensor, lengths: Tensor) -> Tensor:
        outputs, _ = self.encoder.encode(embedded, lengths, dropped=True)
        pooling = self.hparams.pooling
        parts = [self.encoder.final_features(outputs, lengths)] if "last" in POOLINGS[pooling] else []
        if pooling != "last":
            parts.append(pool(outputs, lengths, pooling))
        features = torch.cat(parts, dim=-1)
        logits = self.head(features)
        return logits.squeeze(-1) if self.binary else logits

    def scores(self, logits: Tensor) -> Tensor:
        """Probabilities: of the positive class ``[B]`` (binary) or of every class ``[B, C]``."""
        return torch.sigmoid(logits) if self.binary else logits.softmax(-1)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.binary:
            return F.binary_cross_entropy_with_logits(logits, targets.float())
        return F.cross_entropy(logits, targets.long())

    def _step(
        self, batch: Batch, stage: str, metrics: MetricCollection, embedded: Tensor | None = None, name: str = "loss"
    ) -> tuple[Tensor, Tensor, Tensor]:
        embedded = self.embed(batch.tokens) if embedded is None else embedded
        logits = self.logits_from(embedded, batch.lengths)
        loss, scores, targets = self.loss(logits, batch.targets), self.scores(logits), batch.targets.long()
        metrics.update(scores.detach(), targets)
        on_step = stage == "train"
        self.log(
            f"{stage}/{name}",
            loss,
            on_step=on_step,
            on_epoch=not on_step,
            prog_bar=True,
            batch_size=len(batch),
            sync_dist=not on_step,
        )
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=len(batch))
        return loss, scores.detach(), targets

    def training_step(self, batch: Batch | dict[str, Batch], batch_idx: int) -> Tensor:
        """The supervised loss, plus with ``adversarial`` the adversarial (at) and/or virtual adversarial
        (vat) term, each logged on its own. The virtual adversarial term costs three passes of its batch;
        spent on the unlabelled reviews it also reaches the text no label covers."""
        labelled, unlabelled = labelled_and_unlabelled(batch)
        adversarial = self.adversarial
        if adversarial.mode is None:
            return self._step(labelled, "train", self.train_metrics)[0]
        embedded = self.embed(labelled.tokens)
        supervised = self._step(labelled, "train", self.train_metrics, embedded, name="loss_supervised")[0]
        epsilon = adversarial.epsilon
        terms: dict[str, Tensor] = {}
        if "at" in adversarial.terms:
            terms["at"] = adversarial_loss(
                self.logits_from,
                lambda logits: self.loss(logits, labelled.targets),
                embedded,
                labelled.lengths,
                supervised,
                epsilon,
            )
        if "vat" in adversarial.terms:  # on one batch, as Miyato et al.: the unlabelled one when there is one
            if unlabelled is None:
                reviews, vat_embedded = labelled, embedded
            else:  # the unlabelled reviews enter this term only, never the supervised loss
                reviews, vat_embedded = unlabelled, self.embed(unlabelled.tokens)
            terms["vat"] = virtual_adversarial_loss(
                self.logits_from,
                vat_embedded,
                reviews.lengths,
                epsilon,
                adversarial.xi,
                adversarial.iterations,
                adversarial.same_dropout,
            )
        weight = self.adversarial_weight()
        total = supervised + weight * sum(terms.values())
        for name, term in terms.items():
            self.log(f"train/loss_{name}", term.detach(), on_step=True, batch_size=len(labelled))
        if adversarial.warmup_steps:
            self.log("train/adv_weight", weight, on_step=True, batch_size=len(labelled))
        self.log("train/loss", total.detach(), on_step=True, prog_bar=True, batch_size=len(labelled))
        return total

    def adversarial_weight(self) -> float:
        """``model.adversarial.weight``, reached linearly over its first ``warmup_steps`` optimizer steps.

        From a fresh head every prediction is near chance, and the virtual adversarial term, which asks
        for the same prediction around every review, first pulls toward that constant: it slows the
        supervised fit it should only smooth. Adversarial training from scratch can fall there and stay:
        a constant prediction is perfectly robust, and a head whose ReLUs are all shut gets no gradient
        to reopen them. A ramp lets the head learn first (Laine & Aila 2017 ramp their consistency terms
        for the same reason).
        """
        warmup = self.adversarial.warmup_steps
        return self.adversarial.weight * (min(1.0, (self.global_step + 1) / warmup) if warmup else 1.0)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val", self.val_metrics)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        _, scores, targets = self._step(batch, "test", self.test_metrics)
        self.test_pictures.update(scores, targets, batch.tokens, batch.lengths)

    def on_test_epoch_end(self) -> None:
        folder = Path(self.trainer.default_root_dir) / "plots" if self.trainer.is_global_zero else None
        self.test_pictures.publish(folder, self.loggers, self.global_step, self.codec, self.class_names)

    # ---- what the classes are called travels with the model too (predict.py names them)
    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.class_names is None and datamodule is not None:
            self.class_names = getattr(datamodule, "class_names", None)
        if self.normalized and stage == "fit" and not self.token_frequencies.any():
            frequencies = getattr(datamodule, "token_frequencies", None)  # a property that counts every token
            if frequencies is None:
                raise ConfigError(
                    "model.adversarial.normalize_embeddings needs word frequencies: a DataModule that has them (IMDb)"
                )
            self.token_frequencies.copy_(frequencies)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.class_names is not None:
            checkpoint[CLASSES_KEY] = list(self.class_names)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        names = checkpoint.get(CLASSES_KEY)
        if (
            isinstance(names, list)
            and len(names) == self.hparams.num_classes
            and all(isinstance(n, str) for n in names)
        ):
            self.class_names = names
