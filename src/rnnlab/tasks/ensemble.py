"""``ensemble(cfg)``: held-out metrics of several classifiers whose probabilities are averaged.

ULMFiT's last points come from averaging a forward and a backward model: they read a
review from opposite ends, so their mistakes differ. Members may differ in anything
(direction, vocabulary, cell, size): each reads the split through the DataModule it was
trained with, and its scores are put back in the split's own order before averaging.
Members must score the same reviews, which the split settings and labels check.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader

from rnnlab.builders import resolved
from rnnlab.errors import ConfigError
from rnnlab.models.classifier import SequenceClassifier, held_out_metrics
from rnnlab.runs.checkpoints import Checkpoint
from rnnlab.runs.folder import check_output_dir
from rnnlab.runs.record import RunRecord

log = logging.getLogger(__name__)

SPLITS = ("val", "test")
SPLIT_KEYS = ("_target_", "val_size", "split_seed")  # the data settings that decide which reviews a split holds


@dataclass
class MemberScores:
    path: str
    split_settings: dict[str, Any]
    probabilities: Tensor  # [N] (binary) or [N, C], in the split's order
    labels: Tensor  # [N]
    data: dict[str, Any] | None = None  # the data file the member read (provenance)


@torch.inference_mode()
def _scores_in_loader_order(model: SequenceClassifier, loader: DataLoader) -> tuple[Tensor, Tensor]:
    """Probabilities batch by batch and the review index of each.

    A plain loop rather than ``Trainer.predict``: predict rebuilds a custom batch sampler
    around a generic sampler, which the length-bucketed sampler (and its order) does not survive.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.eval().to(device)
    scores = [model.scores(model(b.tokens.to(device), b.lengths)).float().cpu() for b in loader]
    order = torch.tensor([i for batch in loader.batch_sampler for i in batch])
    return torch.cat(scores), order


def member_scores(path: str | Path, cfg: DictConfig, split: str) -> MemberScores:
    """One classifier's probabilities on ``split``, in the order of the split's reviews."""
    checkpoint = Checkpoint.open(path, trust=cfg.trust_checkpoint)
    if not issubclass(checkpoint.module_class, SequenceClassifier):
        kind = checkpoint.module_class.__name__
        raise ConfigError(f"{path} is a {kind} checkpoint; an ensemble averages classifiers")
    model = checkpoint.model()
    datamodule = checkpoint.datamodule(cfg.paths.data_dir, cfg.paths.cache_dir)
    datamodule.setup("test" if split == "test" else "validate")
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    scores, order = _scores_in_loader_order(model, loader)
    probabilities = torch.empty_like(scores)
    probabilities[order] = scores
    dataset = loader.dataset
    return MemberScores(
        path=str(path),
        split_settings={k: checkpoint.run["data"].get(k) for k in SPLIT_KEYS},
        probabilities=probabilities,
        labels=dataset.labels.long(),
        data=datamodule.provenance,
    )


def _check_same_reviews(members: list[MemberScores], split: str) -> None:
    first = members[0]
    for other in members[1:]:
        if split == "val" and other.split_settings != first.split_settings:
            raise ConfigError(
                f"{other.path} holds out another validation split ({other.split_settings}) than {first.path} "
                f"({first.split_settings}); ensemble on split=test, or use members trained with the same data.val_size "
                f"and data.split_seed"
            )
        if other.labels.shape != first.labels.shape or not torch.equal(other.labels, first.labels):
            raise ConfigError(
                f"{other.path} and {first.path} do not score the same {split} reviews ({other.labels.numel()} vs "
                f"{first.labels.numel()} labels, or in another order); ensemble members of one dataset"
            )
        if other.probabilities.shape != first.probabilities.shape:
            raise ConfigError(
                f"{other.path} predicts {tuple(other.probabilities.shape[1:]) or 'one'} classes, {first.path} "
                f"{tuple(first.probabilities.shape[1:]) or 'one'}; ensemble classifiers of the same task"
            )


def classification_metrics(probabilities: Tensor, labels: Tensor, prefix: str) -> dict[str, float]:
    """Accuracy, F1 and AUROC from probabilities, with the classifiers' own metric definitions."""
    num_classes = 2 if probabilities.dim() == 1 else probabilities.size(1)
    metrics = held_out_metrics(num_classes).clone(prefix=prefix)
    metrics.update(probabilities, labels)
    return {name: float(value) for name, value in metrics.compute().items()}


def ensemble(cfg: DictConfig) -> dict[str, Any]:
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r} is not allowed; choose one of {', '.join(SPLITS)}")
    paths = list(cfg.ckpt_paths)
    if len(paths) < 2:
        raise ConfigError(f"ckpt_paths lists {len(paths)} checkpoint(s); an ensemble needs at least two")
    output_dir = check_output_dir(cfg.paths.output_dir)
    with RunRecord(output_dir, seed=cfg.get("seed")) as record:
        record.start(resolved(cfg))
        members = [member_scores(path, cfg, cfg.split) for path in paths]
        _check_same_reviews(members, cfg.split)
        for i, member in enumerate(members):
            record.add_data(member.data)
            record.update({f"member{i}/ckpt_path": member.path})
            record.update(classification_metrics(member.probabilities, member.labels, f"member{i}/{cfg.split}/"))
        mean = torch.stack([m.probabilities for m in members]).mean(0)
        record.update(classification_metrics(mean, members[0].labels, f"{cfg.split}/"))
        log.info("ensemble of %d: %s/acc %.4f", len(members), cfg.split, record.data[f"{cfg.split}/acc"])
    return record.data
