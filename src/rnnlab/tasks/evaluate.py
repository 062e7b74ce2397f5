"""``evaluate(cfg)``: test metrics of a checkpoint, written to ``metrics.json`` of the eval run folder.

The checkpoint carries the config it was trained with, so evaluation rebuilds the
same DataModule (with this machine's data and cache folders) and the same model class.
``+data.<key>=`` and ``+model.<key>=`` measure it under another protocol (e.g. a stateful
char model scored on independent windows, as Raschka et al., ch. 15, scores them).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from rnnlab.builders import build_trainer, resolved
from rnnlab.runs.checkpoints import Checkpoint
from rnnlab.runs.folder import check_output_dir
from rnnlab.runs.record import RunRecord, scalar_metrics


def overrides_of(cfg: DictConfig, key: str) -> dict[str, Any]:
    """``+data.*`` / ``+model.*`` settings given on the command line, as plain values."""
    node = cfg.get(key)
    return resolved(node) if node is not None else {}


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    output_dir = check_output_dir(cfg.paths.output_dir)
    with RunRecord(output_dir, seed=cfg.get("seed")) as record:
        record.start(resolved(cfg))
        checkpoint = Checkpoint.open(cfg.ckpt_path, trust=cfg.trust_checkpoint)
        record.update({"ckpt_path": str(cfg.ckpt_path)})
        model = checkpoint.model(overrides_of(cfg, "model"))
        datamodule = checkpoint.datamodule(cfg.paths.data_dir, cfg.paths.cache_dir, overrides_of(cfg, "data"))
        record.add_data(datamodule.provenance)
        trainer = build_trainer(cfg, callbacks=[], logger=False)
        trainer.test(model, datamodule=datamodule)
        record.update(scalar_metrics(trainer.callback_metrics))
    return record.data
