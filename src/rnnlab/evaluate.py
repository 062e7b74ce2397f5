"""``evaluate(cfg)``: test metrics of a checkpoint, written to ``metrics.json`` of the eval run folder.

The checkpoint carries the config it was trained with, so evaluation rebuilds the
same DataModule (with this machine's data and cache folders) and the same model class.
``+data.<key>=`` and ``+model.<key>=`` measure it under another protocol (e.g. a stateful
char model scored on independent windows, as the tutorial scores them).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.builders import build, build_trainer, check_output_dir, model_from_checkpoint, resolved
from rnnlab.checkpoints import load_checkpoint, run_config
from rnnlab.run_record import RunRecord, save_command, scalar_metrics


def _overrides(cfg: DictConfig, key: str) -> dict[str, Any]:
    node = cfg.get(key)
    return resolved(node) if node is not None else {}


def datamodule_from_run(run: dict[str, Any], cfg: DictConfig):
    """The run's DataModule, reading data from this machine's folders rather than the trainer's."""
    data = {**run["data"], **_overrides(cfg, "data")}
    data["data_dir"] = cfg.paths.data_dir
    data["cache_dir"] = cfg.paths.cache_dir
    datamodule = build(OmegaConf.create(data))
    datamodule.prepare_data()
    return datamodule


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    output_dir = check_output_dir(cfg.paths.output_dir)
    with RunRecord(output_dir, seed=cfg.get("seed")) as record:
        save_command(output_dir)
        checkpoint = load_checkpoint(cfg.ckpt_path)
        run = run_config(checkpoint, cfg.ckpt_path)
        record.update({"ckpt_path": str(cfg.ckpt_path)})
        datamodule = datamodule_from_run(run, cfg)
        model = model_from_checkpoint(run, checkpoint, _overrides(cfg, "model"))
        trainer = build_trainer(cfg, callbacks=[], logger=False)
        trainer.test(model, datamodule=datamodule)
        record.update(scalar_metrics(trainer.callback_metrics))
    return record.data
