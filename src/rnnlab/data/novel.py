"""Char-level language modelling on a novel (default: Verne, *The Mysterious Island*, Gutenberg #1268).

Two ways to batch the same text:
- windows (the book): every ``seq_length + 1`` characters at ``stride``, shuffled;
- streams (stateful truncated BPTT): the text cut into ``batch_size`` contiguous
  streams, consecutive batches continuing each stream, so a model can carry its state.
Validation and test are a contiguous tail of the text: no training window overlaps it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from rnnlab.data.base import CachedTextDataModule, check_fractions
from rnnlab.data.batching import Batch
from rnnlab.data.codec import TextCodec
from rnnlab.data.sources import RemoteFile, find_or_download
from rnnlab.data.text import Vocabulary
from rnnlab.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

MYSTERIOUS_ISLAND = RemoteFile(url="https://www.gutenberg.org/cache/epub/1268/pg1268.txt", filename="1268-0.txt")


def read_text(path: Path, encoding: str = "utf-8") -> str:
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            f"{path}: not valid {encoding} at byte offset {exc.start} ({raw[exc.start : exc.start + 4]!r}); "
            f"convert the file to UTF-8 or set data.encoding=<its encoding>"
        ) from exc
    if "\x00" in text:  # valid UTF-8, yet NUL bytes: an executable, an image, a zip, not a novel
        raise DataFormatError(f"{path}: holds NUL bytes at offset {text.index(chr(0))}: a binary file, not text")
    # universal newlines, as Python's text mode (and so the book) reads the file
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def strip_gutenberg(text: str, start_marker: str | None = None, end_marker: str | None = None) -> str:
    """The book's slice when its markers are found, else the body between Gutenberg's
    ``*** START OF … ***`` / ``*** END OF … ***`` lines, else the text as it is."""
    if start_marker and end_marker and start_marker in text and end_marker in text:
        return text[text.find(start_marker) : text.find(end_marker)]
    start = text.find("*** START OF")
    if start != -1:
        line_end = text.find("\n", start)
        text = text[line_end + 1 :] if line_end != -1 else ""
    end = text.find("*** END OF")
    if end != -1:
        text = text[:end]
    return text.strip("\n")


def shard(text: Tensor, world: int, rank: int) -> Tensor:
    """Rank ``rank``'s contiguous ``1/world`` of the text; every rank's part has the same length."""
    size = text.numel() // world
    return text[rank * size : (rank + 1) * size]


class CharWindows(Dataset):
    """Window ``i`` = ``encoded[i*stride : i*stride + window]``; input is all but the last, target all but the first."""

    def __init__(self, encoded: Tensor, window: int, stride: int):
        self.encoded, self.window, self.stride = encoded, window, stride
        self.count = max((encoded.numel() - window) // stride + 1, 0)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> Tensor:
        start = i * self.stride
        return self.encoded[start : start + self.window].long()


def collate_windows(items: list[Tensor], pad_index: int | None = None) -> Batch:
    chunk = torch.stack(items)
    return Batch(chunk[:, :-1], torch.full((chunk.size(0),), chunk.size(1) - 1), chunk[:, 1:])


class ContiguousStreams(Dataset):
    """Batch ``j`` holds step ``j`` of each of ``batch_size`` contiguous streams (for carried state)."""

    def __init__(self, encoded: Tensor, batch_size: int, seq_length: int):
        usable = (encoded.numel() - 1) // batch_size * batch_size
        if usable < batch_size * 2:
            raise ConfigError(f"text of {encoded.numel()} characters is too short for {batch_size} streams")
        self.inputs = encoded[:usable].long().view(batch_size, -1)
        self.targets = encoded[1 : usable + 1].long().view(batch_size, -1)
        self.seq_length = seq_length
        self.count = (self.inputs.size(1) + seq_length - 1) // seq_length

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, j: int) -> Batch:
        cols = slice(j * self.seq_length, (j + 1) * self.seq_length)
        x, y = self.inputs[:, cols], self.targets[:, cols]
        return Batch(x, torch.full((x.size(0),), x.size(1)), y)


class NovelDataModule(CachedTextDataModule):
    """A novel as characters: sorted char vocabulary, contiguous val/test tail, windows or streams."""

    cache_name = "novel"

    def __init__(
        self,
        filename: str = "1268-0.txt",
        encoding: str = "utf-8",
        start_marker: str | None = "THE MYSTERIOUS ISLAND",
        end_marker: str | None = "End of the Project Gutenberg",
        seq_length: int = 40,
        stride: int = 1,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        streams: bool = False,
        **common: Any,
    ):
        common.setdefault("bucket", False)
        super().__init__(**common)
        if seq_length <= 0 or stride <= 0:
            raise ConfigError(f"data.seq_length and data.stride must be positive, got {seq_length}, {stride}")
        check_fractions(val_fraction, test_fraction, "text")
        self.filename, self.encoding = filename, encoding
        self.start_marker, self.end_marker = start_marker, end_marker
        self.seq_length, self.stride = seq_length, stride
        self.val_fraction, self.test_fraction, self.streams = val_fraction, test_fraction, streams
        self.parts: dict[str, Tensor] = {}

    def find_source(self) -> Path:
        remote = MYSTERIOUS_ISLAND if self.filename == MYSTERIOUS_ISLAND.filename else None
        return find_or_download(
            [self.data_dir / "novel" / self.filename],
            remote,
            f"novel text {self.filename!r}",
            allow_download=self.download,
        )

    def settings(self) -> dict[str, Any]:
        return {
            "reader": "universal-newlines/v2",
            "encoding": self.encoding,
            "start": self.start_marker,
            "end": self.end_marker,
            "val": self.val_fraction,
            "test": self.test_fraction,
        }

    def make_vocab(self, itos: list[str]) -> Vocabulary:
        return Vocabulary(itos, unk=None, pad=None)

    @property
    def pad_index(self) -> None:
        return None

    @property
    def codec(self) -> TextCodec:
        self.load_payload()
        return TextCodec(self.vocab.itos, level="char")

    def build(self, source: Path) -> dict[str, Any]:
        text = strip_gutenberg(read_text(source, self.encoding), self.start_marker, self.end_marker)
        if not text.strip():
            raise DataFormatError(f"{source}: no text left (empty or whitespace only after stripping headers)")
        itos = sorted(set(text))
        stoi = {c: i for i, c in enumerate(itos)}
        encoded = torch.tensor([stoi[c] for c in text], dtype=torch.int16 if len(itos) < 32768 else torch.int32)
        n = encoded.numel()
        n_test, n_val = int(n * self.test_fraction), int(n * self.val_fraction)
        n_train = n - n_val - n_test
        log.info(
            "%s: %d characters, %d distinct; train/val/test %d/%d/%d", source, n, len(itos), n_train, n_val, n_test
        )
        return {
            "itos": itos,
            "train": encoded[:n_train].clone(),
            "val": encoded[n_train : n_train + n_val].clone(),
            "test": encoded[n_train + n_val :].clone(),
        }

    def setup(self, stage: str | None = None) -> None:
        payload = self.load_payload()
        self.parts = {name: payload[name] for name in ("train", "val", "test")}
        window = self.seq_length + 1
        for name, part in self.parts.items():
            if part.numel() < window + 1:
                raise ConfigError(
                    f"data.seq_length={self.seq_length} is longer than the {name} text "
                    f"({part.numel()} characters); lower it or the val/test fractions"
                )

    def _loader(self, split: str, train: bool) -> DataLoader:
        part = self.parts[split]
        world, rank = self._replicas()
        if self.streams:  # each rank its own contiguous part of the text, so its carried state stays true
            streams = ContiguousStreams(
                shard(part, world, rank), self.batch_size if train else self.eval_batch_size, self.seq_length
            )
            return DataLoader(streams, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory)
        stride = self.stride if train else self.seq_length  # held-out text: each character scored once
        windows = CharWindows(part, self.seq_length + 1, stride)
        return self.sequence_loader(windows, torch.full((len(windows),), self.seq_length), collate_windows, train)
