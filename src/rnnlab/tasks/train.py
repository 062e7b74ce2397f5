"""``train(cfg)``: fit, test the best checkpoint, leave a complete run folder. Called by scripts/train.py."""

from __future__ import annotations

import logging
import pickle
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from rnnlab.builders import (
    build_callbacks,
    build_datamodule,
    build_logger,
    build_model,
    build_trainer,
    resolved,
)
from rnnlab.errors import ConfigError
from rnnlab.io import atomic_write_text
from rnnlab.runs.checkpoints import StoreRunConfig, refusal
from rnnlab.runs.folder import check_output_dir
from rnnlab.runs.record import RunRecord, save_command, scalar_metrics
from rnnlab.runs.resume import previous_outcome

log = logging.getLogger(__name__)


def _checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    return next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)


def _log_hparams(trainer: pl.Trainer, config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Hyper-parameters with the final metrics, so TensorBoard's HPARAMS tab compares runs side by side."""
    params = {
        k: v for k, v in _flatten(config).items() if not k.startswith(("paths.", "hydra.", "callbacks.", "logger."))
    }
    # own tags: the logger writes these at step 0, which must not land on the learning curves
    finals = {f"hp/{k}": v for k, v in metrics.items() if isinstance(v, float)}
    for logger in trainer.loggers:
        logger.log_hyperparams(params, metrics=finals)
        # the trainer closed its writers after testing; this reopened one: close it, or the events
        # stay in a buffer until the process exits (a reader may find them missing)
        logger.finalize("success")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    value = tree if isinstance(tree, (int, float, str, bool)) or tree is None else str(tree)
    return {prefix[:-1]: "null" if value is None else value}


def check_no_missing(cfg: DictConfig) -> None:
    """A preset may leave a value to the user (``???``): say which, before any data is read."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} must be set for this run; pass it on the command line, e.g. {missing[0]}=<value>"
        )


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run one training job; returns the metrics also written to ``<output_dir>/metrics.json``.

    With ``resume=true`` a completed job (its ``metrics.json`` says so) is skipped and an
    unfinished one continues from ``checkpoints/last.ckpt``.
    """
    output_dir = check_output_dir(cfg.paths.output_dir)
    ckpt_path = cfg.get("ckpt_path")
    if cfg.get("resume"):
        outcome, found = previous_outcome(output_dir, overrides)
        if outcome == "completed":
            log.info("resume: %s already completed; skipped", output_dir)
            return found
        if outcome == "continue":
            log.info("resume: continuing %s from %s", output_dir, found)
            ckpt_path = str(found)
    with RunRecord(output_dir, seed=cfg.get("seed")) as record:
        check_no_missing(cfg)
        pl.seed_everything(cfg.seed, workers=True)
        config = resolved(cfg)
        atomic_write_text(output_dir / "config_resolved.yaml", OmegaConf.to_yaml(config))
        save_command(output_dir)

        datamodule = build_datamodule(cfg)
        model = build_model(cfg, datamodule)
        trainer = build_trainer(cfg, build_callbacks(cfg) + [StoreRunConfig(config)], build_logger(cfg))

        trust = bool(cfg.get("trust_checkpoint", False))
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=not trust)
        except pickle.UnpicklingError as exc:  # Lightning read ckpt_path as data only and met a pickled object
            raise refusal(ckpt_path, exc) from exc
        if trainer.interrupted:
            raise KeyboardInterrupt("training interrupted; resume with ckpt_path=<run>/checkpoints/last.ckpt")
        record.update(scalar_metrics(trainer.callback_metrics))
        checkpoint = _checkpoint_callback(trainer)
        if checkpoint is not None and checkpoint.best_model_path:
            record.update({"best_checkpoint": checkpoint.best_model_path})
            if checkpoint.best_model_score is not None:  # not carried back from spawned/forked DDP workers
                record.update({"best_score": float(checkpoint.best_model_score)})

        if cfg.get("test_after_fit", True):
            if getattr(datamodule, "has_test_split", True):
                best = "best" if checkpoint is not None and checkpoint.best_model_path else None
                trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
                record.update(scalar_metrics(trainer.callback_metrics))
            else:
                log.info("test_after_fit skipped: %s has no test split in this mode", type(datamodule).__name__)
        _log_hparams(trainer, config, record.data)
    return record.data
