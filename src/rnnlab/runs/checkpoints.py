"""Open a checkpoint that came from anywhere, and rebuild only rnnlab's own classes from it.

Checkpoints are handed around (``model.pretrained=``, ``eval.py``, ``generate.py``,
``ensemble.py``) and downloaded from strangers, so nothing in one is trusted:
- it is read with ``torch.load(weights_only=True)``: tensors and plain containers only,
  never a pickled object whose loading would run code;
- the run config inside it names the classes to build (``model._target_``, ``data._target_``);
  those names are looked up in an allow-list of rnnlab's LightningModules and DataModules
  and refused before anything is imported or called;
- everything else it carries is data, handed to those constructors as keyword arguments.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from rnnlab.data.imdb import IMDBDataModule
from rnnlab.data.news import NewsDataModule
from rnnlab.data.novel import NovelDataModule
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.models.classifier import SequenceClassifier
from rnnlab.models.language_model import LanguageModel

log = logging.getLogger(__name__)

CONFIG_KEY = "rnnlab_config"
PROVENANCE_KEY = "rnnlab_provenance"
TRUST_HINT = "if you made this file yourself and trust it, add trust_checkpoint=true to the command"


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# what a checkpoint may ask to be built: looked up by name, never imported by name
MODULES: dict[str, type[pl.LightningModule]] = {_qualified(c): c for c in (SequenceClassifier, LanguageModel)}
DATAMODULES: dict[str, type[pl.LightningDataModule]] = {
    _qualified(c): c for c in (IMDBDataModule, NovelDataModule, NewsDataModule)
}


class UntrustedCheckpointError(RnnlabError):
    """A checkpoint asks for more than plain data, or for a class that is not rnnlab's own."""


def _refused_global(message: str) -> str:
    """The pickled global that ``weights_only`` loading refused, as torch's message names it."""
    found = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"Unsupported global: ([\w.]+)", message)
    return found.group(1) if found else "a pickled Python object"


def refusal(path: str | Path, exc: pickle.UnpicklingError) -> UntrustedCheckpointError:
    """The one line that says why a file was not loaded and what a user can do."""
    return UntrustedCheckpointError(
        f"{path}: refused: it holds {_refused_global(str(exc))}, which only full unpickling can build, and full "
        f"unpickling runs whatever code the file names. rnnlab checkpoints hold tensors and plain values only; "
        f"{TRUST_HINT}"
    )


def load_checkpoint(path: str | Path, trust: bool = False, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint's content, read as data only unless ``trust`` (an explicit per-command opt-in);
    ``mmap`` maps its tensors instead of reading them, for a look at its keys."""
    path = Path(path)
    if not path.is_file():
        raise RnnlabError(f"checkpoint not found: {path} (pass ckpt_path=<run>/checkpoints/last.ckpt or a best-*.ckpt)")
    if trust:
        log.warning("%s: trust_checkpoint=true, so it is fully unpickled: any code it names runs now", path)
        content = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    else:
        try:
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            raise refusal(path, exc) from exc
        except Exception as exc:  # truncated, not a torch file at all, a zip with missing records
            raise RnnlabError(f"{path}: not a readable checkpoint ({exc}); it may be truncated") from exc
    if not isinstance(content, dict):
        raise RnnlabError(f"{path}: not an rnnlab checkpoint (it holds a {type(content).__name__}, not a dict)")
    return content


RESUMABLE_KEYS = ("pytorch-lightning_version", "state_dict")


def check_resumable(path: str, trust: bool = False) -> None:
    """Refuse, before anything is built, a ``ckpt_path`` that Lightning could not continue from.

    Lightning would fail deep in its checkpoint migration with a bare ``KeyError``; a URL is left to
    Lightning, which reads it as data only too."""
    if "://" in path:
        return
    content = load_checkpoint(path, trust, mmap=True)  # Lightning reads the whole file right after: map it here
    missing = [key for key in RESUMABLE_KEYS if key not in content]
    if missing:
        raise RnnlabError(
            f"{path}: not a training checkpoint (it has no {', '.join(map(repr, missing))}); continue from "
            f"<run>/checkpoints/last.ckpt or a best-*.ckpt that train.py wrote"
        )


def allowed_class(registry: Mapping[str, type], target: Any, path: Path, key: str) -> type:
    """The class a checkpoint names, if it is one of rnnlab's own; refused by name otherwise."""
    if isinstance(target, str) and target in registry:
        return registry[target]
    allowed = ", ".join(registry)
    raise UntrustedCheckpointError(
        f"{path}: refused: its run config names {key}._target_={target!r}, which is not one of rnnlab's own "
        f"({allowed}); the file was not written by rnnlab's train.py or has been altered"
    )


def _construct(cls: type, kwargs: Mapping[str, Any], path: Path, what: str) -> Any:
    """``cls(**kwargs)`` with a message naming the file when the saved arguments do not fit the class."""
    if not all(isinstance(k, str) for k in kwargs):
        raise RnnlabError(f"{path}: the saved {what} settings have non-text keys; the file is damaged or not rnnlab's")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise RnnlabError(
            f"{path}: its saved {what} settings do not fit {cls.__name__} ({exc}); it was written by another "
            f"version of rnnlab or altered"
        ) from exc


@dataclass
class Checkpoint:
    """An opened checkpoint: its content (plain data) and what may be rebuilt from it."""

    path: Path
    content: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, trust: bool = False) -> Checkpoint:
        """Read as data, and refused at once if its config names a class that is not rnnlab's own."""
        checkpoint = cls(Path(path), load_checkpoint(path, trust))
        checkpoint.module_class  # noqa: B018 (the checks are the point)
        checkpoint.datamodule_class  # noqa: B018
        return checkpoint

    @property
    def run(self) -> dict[str, Any]:
        """The resolved run config the training run stored in the checkpoint."""
        config = self.content.get(CONFIG_KEY)
        if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
            raise RnnlabError(f"{self.path} holds no rnnlab run config: was it written by scripts/train.py?")
        return config

    @property
    def module_class(self) -> type[pl.LightningModule]:
        return allowed_class(MODULES, self.run["model"].get("_target_"), self.path, "model")

    @property
    def datamodule_class(self) -> type[pl.LightningDataModule]:
        data = self.run.get("data")
        target = data.get("_target_") if isinstance(data, dict) else None
        return allowed_class(DATAMODULES, target, self.path, "data")

    def model(self, overrides: Mapping[str, Any] | None = None) -> pl.LightningModule:
        """The trained module from its saved hyper-parameters, weights and extra state (vocabulary), in eval mode.

        ``overrides`` change hyper-parameters that leave the weights as they are (e.g. ``stateful``),
        so a checkpoint can be measured under another protocol than it was trained with.
        """
        cls = self.module_class
        hparams = self.content.get("hyper_parameters")
        if not isinstance(hparams, dict):
            raise RnnlabError(f"{self.path} holds no hyper-parameters: was it written by scripts/train.py?")
        hparams = cls.saved_hparams(hparams)
        unknown = sorted(set(overrides or {}) - set(hparams))
        if unknown:
            raise ConfigError(
                f"model.{unknown[0]} is not a hyper-parameter of this checkpoint (it has: {', '.join(sorted(hparams))})"
            )
        model = _construct(cls, {**hparams, **(overrides or {})}, self.path, "model")
        try:
            model.load_state_dict(self.content.get("state_dict") or {})
        except RuntimeError as exc:
            raise RnnlabError(f"{self.path}: its weights do not fit the model its config describes ({exc})") from exc
        model.on_load_checkpoint(self.content)
        return model.eval()

    def datamodule(
        self, data_dir: str | None, cache_dir: str | None, overrides: Mapping[str, Any] | None = None
    ) -> pl.LightningDataModule:
        """The run's DataModule, reading data from this machine's folders rather than the trainer's; prepared."""
        cls = self.datamodule_class
        settings = {k: v for k, v in {**self.run["data"], **(overrides or {})}.items() if k != "_target_"}
        settings.update(data_dir=data_dir, cache_dir=cache_dir)
        datamodule = _construct(cls, settings, self.path, "data")
        datamodule.prepare_data()
        return datamodule


class StoreRunRecord(Callback):
    """Writes the run's resolved config and provenance into every checkpoint, so a checkpoint alone
    says how it was made (and ``eval.py`` / ``generate.py`` need nothing else)."""

    def __init__(self, record: Any):
        self.record = record

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.record.config
        checkpoint[PROVENANCE_KEY] = self.record.provenance
