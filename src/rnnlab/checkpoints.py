"""Read rnnlab checkpoints: self-describing (the resolved run config travels inside them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from rnnlab.errors import RnnlabError

log = logging.getLogger(__name__)

CONFIG_KEY = "rnnlab_config"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` first; older/foreign pickles fall back with a warning."""
    path = Path(path)
    if not path.is_file():
        raise RnnlabError(f"checkpoint not found: {path} (pass ckpt_path=<run>/checkpoints/last.ckpt or a best-*.ckpt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled objects that weights_only refuses
        if "weights_only" not in str(exc) and "Weights only" not in str(exc):
            raise RnnlabError(f"{path}: not a readable checkpoint ({exc}); it may be truncated.") from exc
        log.warning("%s needs full unpickling (weights_only=False); load only checkpoints you trust.", path)
        return torch.load(path, map_location="cpu", weights_only=False)


def run_config(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    config = checkpoint.get(CONFIG_KEY)
    if not isinstance(config, dict):
        raise RnnlabError(f"{path} holds no rnnlab run config: was it written by scripts/train.py?")
    return config


class StoreRunConfig(Callback):
    """Lightning callback hook that writes the resolved run config into every checkpoint."""

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.config
