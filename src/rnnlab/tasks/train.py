"""``train(cfg)``: open the run → build → fit → test. Called by ``scripts/train.py``.

The run folder's bookkeeping (command, config, provenance, metrics.json, resume) lives in
``rnnlab.runs``; the objects come from ``rnnlab.builders``; what is left here is the order.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from rnnlab.builders import build_callbacks, build_datamodule, build_logger, build_model, build_trainer, resolved
from rnnlab.errors import ConfigError
from rnnlab.runs.checkpoints import StoreRunRecord, check_resumable, refusal
from rnnlab.runs.folder import check_output_dir, flat_settings
from rnnlab.runs.record import RunRecord, scalar_metrics
from rnnlab.runs.resume import previous_outcome
from rnnlab.training.requeue import requeued
from rnnlab.training.tune import reporter_from_config

log = logging.getLogger(__name__)


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run one training job; returns the metrics also written to ``<output_dir>/metrics.json``.

    With ``resume=true`` a completed job (its ``metrics.json`` says so) is skipped and an
    unfinished one continues from ``checkpoints/last.ckpt``; so does a Slurm job that was requeued.
    """
    output_dir = check_output_dir(cfg.paths.output_dir)
    ckpt_path = cfg.get("ckpt_path")
    if cfg.get("resume") or requeued():
        outcome, found = previous_outcome(output_dir, overrides, resolved(cfg))
        if outcome == "completed":
            log.info("resume: %s already completed; skipped", output_dir)
            return found
        if outcome == "continue":
            log.info("resume: continuing %s from %s", output_dir, found)
            ckpt_path = str(found)
    if ckpt_path:
        check_resumable(ckpt_path, trust=cfg.trust_checkpoint)

    with RunRecord(output_dir, seed=cfg.get("seed"), ckpt_path=ckpt_path) as run:
        run.start(checked(cfg))
        pl.seed_everything(cfg.seed, workers=True)

        datamodule = build_datamodule(cfg)
        run.add_data(datamodule.provenance)
        model = build_model(cfg, datamodule)
        # what a comparison of cells or sizes reads beside the figures (the record's metrics keep it)
        run.update({"model/params": sum(p.numel() for p in model.parameters() if p.requires_grad)})
        reporter = reporter_from_config(run.config.get("tune"), cfg.monitor)  # a trial of an Optuna search
        callbacks = [*build_callbacks(cfg), StoreRunRecord(run), *([reporter] if reporter else [])]
        trainer = build_trainer(cfg, callbacks, build_logger(cfg))

        run.update(fit(trainer, model, datamodule, ckpt_path, trust=cfg.trust_checkpoint))
        if reporter is not None and reporter.pruned:
            run.update({"status": "pruned"})  # the study stopped it: no test, and the sweep goes on
        elif cfg.test_after_fit:
            run.update(test_best(trainer, model, datamodule))
        log_hparams(trainer, run.config, run.data)
    return run.data


def checked(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config, after naming any value a preset left to the user (``???``)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} must be set for this run; pass it on the command line, e.g. {missing[0]}=<value>"
        )
    return resolved(cfg)


def fit(trainer: pl.Trainer, model, datamodule, ckpt_path: str | None, trust: bool) -> dict[str, Any]:
    """Train (from ``ckpt_path`` when continuing); the final metrics and the best checkpoint."""
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=not trust)
    except pickle.UnpicklingError as exc:  # Lightning read ckpt_path as data only and met a pickled object
        raise refusal(ckpt_path, exc) from exc
    if trainer.interrupted:
        raise KeyboardInterrupt("training interrupted; resume with ckpt_path=<run>/checkpoints/last.ckpt")
    outcome: dict[str, Any] = scalar_metrics(trainer.callback_metrics)
    if ckpt_path is None and not any(key.startswith("train/") for key in outcome):
        # every step logs train/*, and forked DDP ranks hand their metrics back: none means no step,
        # and a run reported completed would test an untrained model
        raise ConfigError(
            "no training step ran: the training set gave no batch (fewer examples per process than "
            f"data.batch_size={getattr(datamodule, 'batch_size', '?')}); use a smaller batch, fewer "
            "devices or more data"
        )
    checkpoint = best_checkpoint(trainer)
    if checkpoint is not None:
        outcome["best_checkpoint"] = checkpoint.best_model_path
        outcome["best_score"] = best_score(checkpoint)
    return outcome


def best_score(checkpoint: ModelCheckpoint) -> float | None:
    """The monitored value the best checkpoint holds: what a search optimises and the report ranks by.

    Forked DDP workers carry the best path back to this process but not the score; the
    checkpoint file itself records it, in the state of the callback that saved it.
    """
    if checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    saved = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True).get("callbacks", {})
    scores = [s.get("best_model_score") for key, s in saved.items() if key.startswith("ModelCheckpoint")]
    found = [float(s) for s in scores if s is not None]
    return found[0] if found else None


def test_best(trainer: pl.Trainer, model, datamodule) -> dict[str, Any]:
    """Test metrics of the best checkpoint (of the final weights when none was kept)."""
    if not getattr(datamodule, "has_test_split", True):
        log.info("test_after_fit skipped: %s has no test split in this mode", type(datamodule).__name__)
        return {}
    best = "best" if best_checkpoint(trainer) is not None else None
    trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
    return scalar_metrics(trainer.callback_metrics)


def best_checkpoint(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that kept a best model, if any."""
    found = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    return found if found is not None and found.best_model_path else None


def log_hparams(trainer: pl.Trainer, config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Hyper-parameters with the final metrics, so TensorBoard's HPARAMS tab compares runs side by side."""
    skipped = ("paths.", "hydra.", "callbacks.", "logger.")
    params = {k: v for k, v in flat_settings(config).items() if not k.startswith(skipped)}
    # own tags: the logger writes these at step 0, which must not land on the learning curves
    finals = {f"hp/{k}": v for k, v in metrics.items() if isinstance(v, float)}
    for logger in trainer.loggers:
        logger.log_hyperparams(params, metrics=finals)
        # the trainer closed its writers after testing; this reopened one: close it, or the events
        # stay in a buffer until the process exits (a reader may find them missing)
        logger.finalize("success")
