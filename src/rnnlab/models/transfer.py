"""Start a classifier from a language model's embedding and encoder (Dai & Le 2015; ULMFiT).

Pretraining on unlabelled reviews teaches the encoder the language; the classifier
then learns sentiment from far fewer labelled examples. Only what both models share
is copied, and only when it means the same thing: the same vocabulary in the same
order, the same reading direction, and an encoder of the same shape. Anything else
is refused with the setting to change, because a silently partial copy trains as if
from scratch.

The checkpoint is read (as data, its classes checked) where the model is built
(``rnnlab.builders``) and handed here as a ``PretrainedLanguageModel``: a model never opens files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from rnnlab.errors import ConfigError
from rnnlab.models.base import CODEC_KEY
from rnnlab.models.encoder import EncoderSettings, SequenceEncoder

log = logging.getLogger(__name__)

ENCODER_PREFIX = "encoder."


@dataclass(frozen=True)
class PretrainedLanguageModel:
    """A language model's checkpoint as its reader found it: the file (named in every message), its
    content (tensors, vocabulary, hyper-parameters) and the run config it was trained with."""

    path: Path
    content: dict[str, Any]
    run: dict[str, Any]


def encoder_state(checkpoint: dict[str, Any]) -> dict[str, Tensor]:
    """The ``encoder.*`` tensors of a checkpoint's state dict, keys relative to the encoder."""
    state = checkpoint.get("state_dict", {})
    return {k[len(ENCODER_PREFIX) :]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}


def _check_vocabulary(path: Path, checkpoint: dict[str, Any], itos: list[str]) -> None:
    codec = checkpoint.get(CODEC_KEY)
    if not isinstance(codec, dict) or "itos" not in codec:
        raise ConfigError(
            f"model.pretrained={path} carries no vocabulary: use a checkpoint of an rnnlab language model "
            f"(scripts/train.py experiment=imdb_lm_pretrain)"
        )
    theirs = list(codec["itos"])
    if theirs != list(itos):
        first = next(
            (i for i, (a, b) in enumerate(zip(theirs, itos, strict=False)) if a != b), min(len(theirs), len(itos))
        )
        raise ConfigError(
            f"model.pretrained={path}: its vocabulary ({len(theirs)} tokens) differs from this run's ({len(itos)} "
            f"tokens) from position {first}; build the data with the pretraining run's settings "
            f"(data.min_freq, data.max_size, data.unlabelled, data.val_size, data.split_seed)"
        )


def _check_direction(path: Path, run: dict[str, Any], reverse: bool) -> None:
    """A backward language model reads reviews end first: its encoder is no start for a forward classifier."""
    data = run.get("data") or {}
    theirs = bool(data.get("reverse", False))
    if theirs != reverse:
        raise ConfigError(
            f"model.pretrained={path} was trained with data.reverse={_as_override(theirs)} but this run reads "
            f"data.reverse={_as_override(reverse)}; set data.reverse={_as_override(theirs)} "
            f"(or pretrain a language model in this direction)"
        )


def _as_override(value: Any) -> str:
    """A value as it is typed on the command line (``true``, not ``True``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check_shape(path: Path, checkpoint: dict[str, Any], settings: EncoderSettings) -> None:
    """Both encoders' settings compared as one object: the weights' shapes follow from them."""
    theirs = EncoderSettings.of(EncoderSettings.nest(checkpoint.get("hyper_parameters") or {}).get("encoder"))
    differ = {k: v for k, v in theirs.shape().items() if v != settings.shape()[k]}
    if differ:
        mine = ", ".join(f"{k}={_as_override(settings.shape()[k])}" for k in differ)
        fix = " ".join(f"model.encoder.{k}={_as_override(v)}" for k, v in differ.items())
        raise ConfigError(f"model.pretrained={path}: its encoder differs from this run's ({mine}); set {fix}")


def init_encoder_from_language_model(
    encoder: SequenceEncoder, pretrained: PretrainedLanguageModel, itos: list[str], reverse: bool = False
) -> None:
    """Copy embedding + recurrent weights from a language model's checkpoint into ``encoder``."""
    path, checkpoint = pretrained.path, pretrained.content
    _check_vocabulary(path, checkpoint, itos)
    _check_direction(path, pretrained.run, reverse)
    _check_shape(path, checkpoint, encoder.settings)
    state = encoder_state(checkpoint)
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:  # same settings, other tensors: a damaged or altered file
        raise ConfigError(f"model.pretrained={path}: its encoder weights do not load ({exc})") from exc
    log.info("embedding and encoder initialised from %s (%d tensors)", path, len(state))
