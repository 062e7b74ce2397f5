"""``evaluate(cfg)``: test metrics of a checkpoint, written to ``metrics.json`` of the eval run folder.

The checkpoint carries the config it was trained with, so evaluation rebuilds the
same DataModule (with this machine's data and cache folders) and the same model class.
``+data.<key>=`` and ``+model.<key>=`` measure it under another protocol (e.g. a stateful
char model scored on independent windows, as the tutorial scores them).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from rnnlab.builders import build_trainer, check_output_dir, resolved
from rnnlab.checkpoints import Checkpoint
from rnnlab.run_record import RunRecord, save_command, scalar_metrics


def overrides_of(cfg: DictConfig, key: str) -> dict[str, Any]:
    """``+data.*`` / ``+model.*`` settings given on the command line, as plain values."""
    node = cfg.get(key)
    return resolved(node) if node is not None else {}


def open_checkpoint(cfg: DictConfig, path: str) -> Checkpoint:
    """A checkpoint named on the command line, opened as data unless the command says ``trust_checkpoint=true``."""
    return Checkpoint.open(path, trust=bool(cfg.get("trust_checkpoint", False)))


def datamodule_of(checkpoint: Checkpoint, cfg: DictConfig, data_overrides: dict[str, Any] | None = None):
    """The checkpoint's DataModule, reading from this machine's data and cache folders."""
    return checkpoint.datamodule(cfg.paths.data_dir, cfg.paths.cache_dir, data_overrides)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    output_dir = check_output_dir(cfg.paths.output_dir)
    with RunRecord(output_dir, seed=cfg.get("seed")) as record:
        save_command(output_dir)
        checkpoint = open_checkpoint(cfg, cfg.ckpt_path)
        record.update({"ckpt_path": str(cfg.ckpt_path)})
        model = checkpoint.model(overrides_of(cfg, "model"))
        datamodule = datamodule_of(checkpoint, cfg, overrides_of(cfg, "data"))
        trainer = build_trainer(cfg, callbacks=[], logger=False)
        trainer.test(model, datamodule=datamodule)
        record.update(scalar_metrics(trainer.callback_metrics))
    return record.data
