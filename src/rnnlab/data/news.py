"""Word-level language modelling on HuffPost News Category ``short_description`` (JSON lines).

The tutorial's normalisation and vocabulary, without its waste: sequences are stored
ragged and padded per batch (length-bucketed), never to a fixed 256.
Takes the full Kaggle file (209,527 records) or any subset in the same format.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader

from rnnlab.data.base import CachedTextDataModule, check_fractions
from rnnlab.data.batching import RaggedSequences, collate_language_model, ragged_from_lists
from rnnlab.data.codec import TextCodec
from rnnlab.data.sources import data_dir_hint
from rnnlab.data.text import END, PAD, START, UNK, Vocabulary
from rnnlab.errors import ConfigError, DataFormatError, DataNotFoundError

log = logging.getLogger(__name__)

KAGGLE = "https://www.kaggle.com/datasets/rmisra/news-category-dataset"
FIELD = "short_description"
_DROP = r"[^'\&\w\s]"


def normalize_description(text: str) -> str:
    """Lower-case, ``-`` to space, drop all but word characters, whitespace, ``'`` and ``&``, strip."""
    return re.sub(_DROP, "", text.lower().replace("-", " ")).strip()


def normalize_series(texts: pd.Series) -> pd.Series:
    """``normalize_description`` over a whole column at once (pandas string ops, as the tutorial)."""
    texts = texts.fillna("").astype(str).str.lower().str.replace("-", " ", regex=False)
    return texts.str.replace(_DROP, "", regex=True).str.strip()


def _first_bad_line(path: Path) -> tuple[int, str] | None:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as exc:
                    return number, str(exc)
    return None


def read_descriptions(path: Path, field: str = FIELD) -> pd.Series:
    """The ``field`` column of a JSON-lines file, with errors that name the line or the field."""
    try:
        frame = pd.read_json(path, lines=True, dtype=False)
    except ValueError as exc:
        bad = _first_bad_line(path)
        where = f"line {bad[0]} is not valid JSON ({bad[1]})" if bad else f"cannot be read as JSON lines ({exc})"
        raise DataFormatError(f"{path}: {where}; fix or remove that line") from exc
    if field not in frame.columns:
        raise DataFormatError(
            f"{path}: records have no {field!r} field (fields: {', '.join(map(str, frame.columns))}); "
            f"set data.field=<name> or use the News Category Dataset file"
        )
    return frame[field]


class NewsDataModule(CachedTextDataModule):
    """Next-word prediction over news descriptions wrapped in ``<start> … <end>``."""

    cache_name = "news"

    def __init__(
        self,
        path: str | None = None,
        field: str = FIELD,
        max_words: int = 50000,
        max_length: int = 256,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        split_seed: int = 1,
        **common: Any,
    ):
        super().__init__(**common)
        if max_words <= 1:
            raise ConfigError(f"data.max_words must be at least 2 (it counts <unk>), got {max_words}")
        if max_length <= 0:
            raise ConfigError(f"data.max_length must be positive, got {max_length}")
        check_fractions(val_fraction, test_fraction, "records")
        self.path, self.field = path, field
        self.max_words, self.max_length = max_words, max_length
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.datasets: dict[str, RaggedSequences] = {}

    def find_source(self) -> Path:
        if self.path:
            path = Path(self.path).expanduser()
            if not path.is_file():
                raise DataNotFoundError(f"news file not found: {path} (data.path=...). Download it from {KAGGLE}.")
            return path
        folder = self.data_dir / "news"
        found = sorted(folder.glob("News_Category_Dataset*.json")) if folder.is_dir() else []
        if not found:
            raise DataNotFoundError(
                f"news data not found: no News_Category_Dataset*.json in {folder}. Download "
                f"News_Category_Dataset_v3.json from {KAGGLE} (needs a Kaggle account) and put it in {folder}, "
                f"or pass data.path=<file> ({data_dir_hint()})."
            )
        return found[0]

    def settings(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "max_words": self.max_words,
            "val": self.val_fraction,
            "test": self.test_fraction,
            "split_seed": self.split_seed,
            "normalizer": "news/v1",
        }

    def make_vocab(self, itos: list[str]) -> Vocabulary:
        return Vocabulary(itos, unk=UNK, pad=PAD)

    @property
    def codec(self) -> TextCodec:
        self.load_payload()
        return TextCodec(
            self.vocab.itos, level="word", normalizer="news", start_token=START, end_token=END, unk_token=UNK
        )

    def build(self, source: Path) -> dict[str, Any]:
        texts = normalize_series(read_descriptions(source, self.field))
        empty = int((texts == "").sum())
        texts = texts[texts != ""]
        log.info("%s: %d records kept, %d dropped (empty after normalisation)", source, len(texts), empty)
        if len(texts) < 3:
            raise DataFormatError(f"{source}: only {len(texts)} non-empty {self.field!r} values; need at least 3")
        tokens = [[START, *t.split(), END] for t in texts]
        generator = torch.Generator().manual_seed(self.split_seed)
        perm = torch.randperm(len(tokens), generator=generator).tolist()
        n_val, n_test = max(int(len(tokens) * self.val_fraction), 1), max(int(len(tokens) * self.test_fraction), 1)
        n_train = len(tokens) - n_val - n_test
        split_ids = {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}
        # the tutorial: <unk> + the (max_words - 1) most frequent words, then <pad> appended
        vocab = Vocabulary.build(
            (tokens[i] for i in split_ids["train"]), specials=(UNK,), max_size=self.max_words + 1, trailing=(PAD,)
        )
        payload: dict[str, Any] = {"itos": vocab.itos, "dropped_empty": empty, "splits": {}}
        for name, ids in split_ids.items():
            flat, offsets = ragged_from_lists([vocab.encode(tokens[i]) for i in ids])
            payload["splits"][name] = {"flat": flat, "offsets": offsets}
        return payload

    def setup(self, stage: str | None = None) -> None:
        splits = self.load_payload()["splits"]
        # max_length inputs need max_length + 1 tokens (targets are shifted by one)
        self.datasets = {
            name: RaggedSequences.from_offsets(s["flat"], s["offsets"], max_length=self.max_length + 1)
            for name, s in splits.items()
        }

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        return self.sequence_loader(dataset, dataset.lengths, collate_language_model, train=train)
