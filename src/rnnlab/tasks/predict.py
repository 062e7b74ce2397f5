"""``predict(cfg)``: the label and probability a classifier (or an ensemble of them) gives new text.

    python scripts/predict.py ckpt_path=<classifier ckpt> text="A wonderful film."
    python scripts/predict.py ckpt_path=<ckpt> input=reviews.txt output=predictions.csv   # one text a line
    python scripts/predict.py 'ckpt_paths=[<forward>,<backward>]' input=reviews.csv column=review

A checkpoint reads text the way its training data was read: its own vocabulary, tokeniser,
reading direction and length cap travel in it (a checkpoint written before they did takes
them from its DataModule, which needs the data on this machine). Several checkpoints average
their probabilities, as ``ensemble.py`` does.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from rnnlab.data.codec import TextCodec
from rnnlab.errors import ConfigError
from rnnlab.io import atomic_write_text
from rnnlab.models.classifier import SequenceClassifier
from rnnlab.runs.checkpoints import Checkpoint

log = logging.getLogger(__name__)


@dataclass
class Reader:
    """One classifier and how it reads text."""

    path: str
    model: SequenceClassifier
    codec: TextCodec
    class_names: list[str]
    max_length: int | None

    @classmethod
    def open(cls, path: str, cfg: DictConfig) -> Reader:
        checkpoint = Checkpoint.open(path, trust=cfg.trust_checkpoint)
        if not issubclass(checkpoint.module_class, SequenceClassifier):
            kind = checkpoint.module_class.__name__
            raise ConfigError(
                f"{path} is a {kind} checkpoint; predict.py needs a classifier (generate.py: a language model)"
            )
        model = checkpoint.model()
        codec, names = model.codec, model.class_names
        if codec is None:  # written before checkpoints carried their vocabulary: its DataModule knows it
            log.info("%s carries no vocabulary; reading it from its data (%s)", path, cfg.paths.data_dir)
            datamodule = checkpoint.datamodule(cfg.paths.data_dir, cfg.paths.cache_dir)
            codec, names = datamodule.codec, names or getattr(datamodule, "class_names", None)
        names = names or [str(k) for k in range(model.hparams.num_classes)]
        return cls(path, model, codec, names, checkpoint.run["data"].get("max_length"))

    def ids(self, text: str, where: str) -> Tensor:
        ids = self.codec.encode(text, quiet=True)[: self.max_length or None]
        if not ids:
            raise ConfigError(f"{where} has no word this classifier can read; give it some text")
        return torch.tensor(ids)

    @torch.inference_mode()
    def probabilities(self, texts: list[str], where: list[str], batch_size: int) -> Tensor:
        """``[N, C]`` class probabilities, in the order of ``texts`` (batches of similar length)."""
        encoded = [self.ids(text, at) for text, at in zip(texts, where, strict=True)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        pad = self.model.hparams.padding_idx or 0
        out = torch.empty(len(encoded), len(self.class_names))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            tokens = pad_sequence([encoded[i] for i in rows], batch_first=True, padding_value=pad)
            lengths = torch.tensor([len(encoded[i]) for i in rows])
            scores = self.model.scores(self.model(tokens, lengths)).float()
            out[rows] = torch.stack([1 - scores, scores], dim=1) if scores.dim() == 1 else scores
        return out


def read_inputs(cfg: DictConfig) -> tuple[pd.DataFrame, str]:
    """The texts to classify as a table, and the column that holds them."""
    if (cfg.get("text") is None) == (cfg.get("input") is None):
        raise ConfigError('give the text to classify: text="..." or input=<file.txt | file.csv> (one of them)')
    if cfg.get("text") is not None:
        return pd.DataFrame({"text": [str(cfg.text)]}), "text"
    path = Path(cfg.input).expanduser()
    if not path.is_file():
        raise ConfigError(f"input={path}: no such file")
    if path.suffix.lower() == ".csv":
        with warnings.catch_warnings():  # pandas would quietly make an index of a row's extra fields
            warnings.simplefilter("error", pd.errors.ParserWarning)
            try:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
            except (pd.errors.ParserWarning, pd.errors.ParserError) as exc:
                raise ConfigError(
                    f"input={path}: a row has more fields than the header; a text that holds commas goes in "
                    f'double quotes ("like, this")'
                ) from exc
        column = cfg.get("column") or ("text" if "text" in frame.columns else None)
        if column not in frame.columns:
            raise ConfigError(
                f"input={path} has columns {', '.join(frame.columns)}; say which holds the text: column=<name>"
            )
        return frame, column
    lines = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return pd.DataFrame({"text": lines}), "text"


def predict(cfg: DictConfig) -> pd.DataFrame:
    paths = [cfg.ckpt_path] if cfg.get("ckpt_path") else list(cfg.get("ckpt_paths") or [])
    if not paths:
        raise ConfigError("give a classifier: ckpt_path=<checkpoint>, or ckpt_paths=[a.ckpt,b.ckpt] for an ensemble")
    frame, column = read_inputs(cfg)
    readers = [Reader.open(str(path), cfg) for path in paths]
    names = readers[0].class_names
    for other in readers[1:]:
        if other.class_names != names:
            raise ConfigError(f"{other.path} names its classes {other.class_names}, {readers[0].path} {names}")
    where = [f"{cfg.get('input') or 'text'} row {i + 1}" for i in range(len(frame))]
    texts = frame[column].tolist()
    probabilities = torch.stack([r.probabilities(texts, where, cfg.batch_size) for r in readers]).mean(0)
    best = probabilities.argmax(1)
    result = frame.copy()
    result["label"] = [names[k] for k in best.tolist()]
    result["probability"] = probabilities.gather(1, best[:, None]).squeeze(1).tolist()
    for k, name in enumerate(names):
        result[f"p_{name}"] = probabilities[:, k].tolist()
    return result


def write(result: pd.DataFrame, cfg: DictConfig) -> None:
    """One line a text on the terminal for ``text=``; a CSV (to ``output=`` or stdout) for a file."""
    if cfg.get("text") is not None and not cfg.get("output"):
        row = result.iloc[0]
        print(f"{row['label']}\t{row['probability']:.4f}")
        return
    buffer = io.StringIO()
    result.to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL, float_format="%.6f")
    if cfg.get("output"):
        atomic_write_text(Path(cfg.output).expanduser(), buffer.getvalue())
        print(f"wrote {len(result)} predictions to {cfg.output}", file=sys.stderr)
    else:
        sys.stdout.write(buffer.getvalue())


def run(cfg: DictConfig) -> Any:
    write(predict(cfg), cfg)
