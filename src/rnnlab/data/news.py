"""Word-level language modelling on HuffPost News Category ``short_description`` (JSON lines).

The news word-LM tutorial's normalisation and vocabulary, without its waste: sequences are stored
ragged and padded per batch (length-bucketed), never to a fixed 256.
Takes the full Kaggle file (209,527 records) or any subset in the same format.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from rnnlab.data.base import CachedTextDataModule, check_fractions
from rnnlab.data.batching import RaggedSequences, collate_language_model, ragged_from_ids
from rnnlab.data.codec import TextCodec
from rnnlab.data.sources import data_dir_hint
from rnnlab.data.text import END, PAD, START, UNK, Vocabulary, WordIds, normalize_description
from rnnlab.errors import ConfigError, DataFormatError, DataNotFoundError

log = logging.getLogger(__name__)

KAGGLE = "https://www.kaggle.com/datasets/rmisra/news-category-dataset"
FIELD = "short_description"
# a News Category record is a few hundred bytes; a longer line is not a record of this dataset
MAX_RECORD_BYTES = 1 << 20


def read_descriptions(path: Path, field: str = FIELD, max_record_bytes: int = MAX_RECORD_BYTES) -> Iterator[str]:
    """The ``field`` of every record of a JSON-lines file, one line in memory at a time.

    Errors name the line: one that is not JSON, one longer than ``max_record_bytes`` (read no
    further than that, so a hostile file cannot exhaust memory), or a file whose records lack
    the field. A record without the field (or with null) reads as empty, as a missing column would.
    """
    found = seen = 0
    first_fields: list[str] = []
    with open(path, "rb") as handle:
        for number, line in enumerate(iter(lambda: handle.readline(max_record_bytes + 1), b""), start=1):
            if len(line) > max_record_bytes:
                raise DataFormatError(
                    f"{path}: line {number} is longer than {max_record_bytes:,} bytes; news records are a few hundred. "
                    f"The file is not JSON lines of news records (or set data.max_record_bytes=<bytes>)"
                )
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
                raise DataFormatError(f"{path}: line {number} is not valid JSON ({exc}); fix or remove it") from exc
            if not isinstance(record, dict):
                raise DataFormatError(f"{path}: line {number} is a JSON {type(record).__name__}, not a record object")
            seen += 1
            first_fields = first_fields or list(record)
            value = record.get(field)
            found += field in record
            yield "" if value is None else str(value)
    if seen and not found:
        raise DataFormatError(
            f"{path}: records have no {field!r} field (fields: {', '.join(first_fields)}); "
            f"set data.field=<name> or use the News Category Dataset file"
        )


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
        max_record_bytes: int = MAX_RECORD_BYTES,
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
        self.max_record_bytes = max_record_bytes
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
        """Records read one line at a time and kept as word-id arrays (not strings), then split and encoded."""
        words, records, empty = WordIds(), [], 0
        for text in read_descriptions(source, self.field, self.max_record_bytes):
            normalized = normalize_description(text)
            if normalized:
                records.append(words.encode([START, *normalized.split(), END]))
            else:
                empty += 1
        log.info("%s: %d records kept, %d dropped (empty after normalisation)", source, len(records), empty)
        if len(records) < 3:
            raise DataFormatError(f"{source}: only {len(records)} non-empty {self.field!r} values; need at least 3")
        generator = torch.Generator().manual_seed(self.split_seed)
        perm = torch.randperm(len(records), generator=generator).tolist()
        n_val, n_test = max(int(len(records) * self.val_fraction), 1), max(int(len(records) * self.test_fraction), 1)
        n_train = len(records) - n_val - n_test
        split_ids = {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}
        # as the news tutorial: <unk> + the (max_words - 1) most frequent words, then <pad> appended
        vocab, lookup = Vocabulary.from_ids(
            [records[i] for i in split_ids["train"]],
            words,
            specials=(UNK,),
            max_size=self.max_words + 1,
            trailing=(PAD,),
        )
        payload: dict[str, Any] = {"itos": vocab.itos, "dropped_empty": empty, "splits": {}}
        for name, ids in split_ids.items():
            flat, offsets = ragged_from_ids([records[i] for i in ids], lookup)
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
