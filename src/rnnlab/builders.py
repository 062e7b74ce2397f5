"""Turn a composed run config into the objects of a run (DataModule, model, trainer, callbacks).

This is the one place that calls ``hydra.utils.instantiate``; the models and
DataModules know nothing about Hydra and take plain arguments.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.models.language_model import LanguageModel
from rnnlab.models.transfer import PretrainedLanguageModel, init_encoder_from_language_model
from rnnlab.runs.checkpoints import Checkpoint
from rnnlab.training.ddp import fork_safe

log = logging.getLogger(__name__)


def build(node: Any, **kwargs: Any) -> Any:
    """``instantiate`` that surfaces an ``RnnlabError`` raised inside a constructor as itself."""
    try:
        # plain lists/dicts, so hyper-parameters (and checkpoints) hold no OmegaConf objects
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, RnnlabError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from exc
        raise


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    datamodule = build(cfg.data)
    datamodule.prepare_data()  # vocabulary size is needed to build the model
    return datamodule


def build_model(cfg: DictConfig, datamodule: pl.LightningDataModule) -> pl.LightningModule:
    """The model of ``cfg.model``; ``model.pretrained=<lm checkpoint>`` starts its encoder from a language model."""
    node = cfg.model
    pretrained = node.get("pretrained")
    if "pretrained" in node:  # a setting of the run, not of the module (a checkpoint must not need the file)
        node = OmegaConf.create({k: v for k, v in resolved(node).items() if k != "pretrained"})
    model = build(node, vocab_size=datamodule.vocab_size, padding_idx=datamodule.pad_index)
    if pretrained:
        reverse = bool(getattr(datamodule, "reverse", False))
        language_model = read_language_model(pretrained, bool(cfg.get("trust_checkpoint", False)))
        init_encoder_from_language_model(model.encoder, language_model, datamodule.vocab.itos, reverse)
        if getattr(model, "normalized", False):  # language models read raw embeddings
            frequencies = getattr(datamodule, "token_frequencies", None)  # a property that counts every token
            if frequencies is not None:
                model.adopt_raw_embedding_encoder(frequencies)
    return model


def read_language_model(path: str, trust: bool = False) -> PretrainedLanguageModel:
    """``model.pretrained``'s checkpoint, read as data; one whose config names classes that are not
    rnnlab's own is refused all the same, and so is any checkpoint but a language model's."""
    opened = Checkpoint.open(path, trust)
    if not issubclass(opened.module_class, LanguageModel):
        raise ConfigError(
            f"model.pretrained={path} is a {opened.module_class.__name__} checkpoint; it needs a language model "
            f"(scripts/train.py experiment=imdb_lm_pretrain)"
        )
    return PretrainedLanguageModel(opened.path, opened.content, opened.run)


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None and "_target_" in node:
            callbacks.append(build(node))
        elif node is not None:
            raise ConfigError(f"callbacks.{name} has no _target_; set it to null to disable it")
    return callbacks


def build_logger(cfg: DictConfig) -> Any:
    node = cfg.get("logger")
    if not node:
        return False
    return [build(v) for v in node.values() if v is not None] or False


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], logger: Any) -> pl.Trainer:
    strategy = cfg.trainer.get("strategy")
    safe = fork_safe(strategy)
    if safe is strategy:
        return build(cfg.trainer, callbacks=callbacks, logger=logger)
    log.info("trainer.strategy=%s runs as rnnlab.training.ddp.ForkDDPStrategy (the same, safe to fork)", strategy)
    return build(cfg.trainer, callbacks=callbacks, logger=logger, strategy=safe)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)
