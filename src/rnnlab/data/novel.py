"""Char-level language modelling on a text file: a novel (default: Verne, *The Mysterious Island*,
Gutenberg #1268), tiny Shakespeare (``dataset=shakespeare``, read whole as nanoGPT reads it) or any text.

Two ways to batch the same text:
- windows (Raschka et al., ch. 15): every ``seq_length + 1`` characters at ``stride``, shuffled;
- streams (stateful truncated BPTT): the text cut into ``batch_size`` contiguous
  streams, consecutive batches continuing each stream, so a model can carry its state.
Validation and test are a contiguous tail of the text: no training window overlaps it; validation is
the ``floor(n * val_fraction)`` characters just before the test tail. ``split_rounding`` says which
part is rounded down: ``test_floor`` (the novel's: the tail holds ``floor(n * test_fraction)``
characters) or ``train_floor`` (nanoGPT's: the tail starts at ``floor(n * (1 - test_fraction))``,
its ``int(n * 0.9)``); the two differ by at most one character.

``eval_windows`` also scores the held-out text as independent windows from a zero state (nanoGPT's
protocol at 256): a second val/test loader, which the language model reports under its own names.
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
from rnnlab.data.textfile import Span, body_chunks, encode, find_body, read_chunks, scan
from rnnlab.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

MYSTERIOUS_ISLAND = RemoteFile(url="https://www.gutenberg.org/cache/epub/1268/pg1268.txt", filename="1268-0.txt")
# char-rnn's file, the one nanoGPT's shakespeare_char downloads (sha256 86c4e6aa…c565ed, 1,115,394 characters)
TINY_SHAKESPEARE = RemoteFile(
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    filename="input.txt",
    md5="6fb458f1232090904fb40fe944165e91",
)
KNOWN_FILES = {("novel", MYSTERIOUS_ISLAND.filename): MYSTERIOUS_ISLAND, ("shakespeare", "input.txt"): TINY_SHAKESPEARE}


SPLIT_ROUNDINGS = ("test_floor", "train_floor")
# where validation is carved from the text before the test tail: just before it, or from the start (so that
# what precedes the held-out text, e.g. the opening of the play it continues, is trained on)
VAL_POSITIONS = ("before_test", "start")


def split_sizes(
    n: int, val_fraction: float, test_fraction: float, rounding: str = "test_floor"
) -> tuple[int, int, int]:
    """Train/val/test lengths. ``test_floor``: the test tail is ``floor(n * test)`` characters;
    ``train_floor``: it starts at ``floor(n * (1 - test))``, as nanoGPT cuts its ``int(n * 0.9)``.
    Validation is the ``floor(n * val)`` characters just before the tail."""
    held_out_start = n - int(n * test_fraction) if rounding == "test_floor" else int(n * (1 - test_fraction))
    n_val = int(n * val_fraction)
    return held_out_start - n_val, n_val, n - held_out_start


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
        # views of the (memory-mapped) text in its own narrow type: a batch is widened when it is read
        self.inputs = encoded[:usable].view(batch_size, -1)
        self.targets = encoded[1 : usable + 1].view(batch_size, -1)
        self.seq_length = seq_length
        self.count = (self.inputs.size(1) + seq_length - 1) // seq_length

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, j: int) -> Batch:
        cols = slice(j * self.seq_length, (j + 1) * self.seq_length)
        x, y = self.inputs[:, cols].long(), self.targets[:, cols].long()
        return Batch(x, torch.full((x.size(0),), x.size(1)), y)


class NovelDataModule(CachedTextDataModule):
    """A text as characters: sorted char vocabulary, contiguous test tail and validation slice, windows or streams.

    ``dataset`` names the folder under the data folder (and the cache); ``whole_file`` reads the
    file exactly as it is (no markers looked for, no newline stripped), as nanoGPT does.
    """

    def __init__(
        self,
        dataset: str = "novel",
        filename: str = "1268-0.txt",
        encoding: str = "utf-8",
        start_marker: str | None = "THE MYSTERIOUS ISLAND",
        end_marker: str | None = "End of the Project Gutenberg",
        seq_length: int = 40,
        stride: int = 1,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        streams: bool = False,
        whole_file: bool = False,
        split_rounding: str = "test_floor",
        val_position: str = "before_test",
        eval_windows: int | None = None,
        **common: Any,
    ):
        common.setdefault("bucket", False)
        self.cache_name = dataset  # before the base class opens the cache
        super().__init__(**common)
        if seq_length <= 0 or stride <= 0:
            raise ConfigError(f"data.seq_length and data.stride must be positive, got {seq_length}, {stride}")
        if eval_windows is not None and eval_windows <= 0:
            raise ConfigError(f"data.eval_windows must be a positive window length or null, got {eval_windows}")
        if whole_file and (start_marker or end_marker):
            raise ConfigError(
                f"data.whole_file=true reads the file as it is, but data.start_marker={start_marker!r} / "
                f"data.end_marker={end_marker!r} are set; set them to null or data.whole_file=false"
            )
        check_fractions(val_fraction, test_fraction, "text")
        if split_rounding not in SPLIT_ROUNDINGS:
            raise ConfigError(f"data.split_rounding={split_rounding!r} is not one of {', '.join(SPLIT_ROUNDINGS)}")
        if val_position not in VAL_POSITIONS:
            raise ConfigError(f"data.val_position={val_position!r} is not one of {', '.join(VAL_POSITIONS)}")
        self.split_rounding, self.val_position = split_rounding, val_position
        self.dataset, self.whole_file, self.eval_windows = dataset, whole_file, eval_windows
        self.filename, self.encoding = filename, encoding
        self.start_marker, self.end_marker = start_marker, end_marker
        self.seq_length, self.stride = seq_length, stride
        self.val_fraction, self.test_fraction, self.streams = val_fraction, test_fraction, streams
        self.parts: dict[str, Tensor] = {}

    def find_source(self) -> Path:
        return find_or_download(
            [self.data_dir / self.dataset / self.filename],
            KNOWN_FILES.get((self.dataset, self.filename)),
            f"{self.dataset} text {self.filename!r}",
            allow_download=self.download,
        )

    def settings(self) -> dict[str, Any]:
        return {
            "reader": "streamed/v3",  # ids as the narrowest integer type (uint8 for a book)
            "encoding": self.encoding,
            "whole_file": self.whole_file,
            "split_rounding": self.split_rounding,
            "val_position": self.val_position,
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
        """The body as one array of character ids, read in pieces (three linear passes over the file)."""
        if self.whole_file:
            span = Span(0, None, strip=False)
        else:
            span = find_body(read_chunks(source, self.encoding), self.start_marker, self.end_marker)
        charset = scan(body_chunks(source, self.encoding, span), span.strip)
        if all(c.isspace() for c in charset.chars):
            raise DataFormatError(f"{source}: no text left (empty or whitespace only after stripping headers)")
        itos = charset.chars
        encoded = torch.from_numpy(encode(body_chunks(source, self.encoding, span), charset))
        n = encoded.numel()
        n_train, n_val, n_test = split_sizes(n, self.val_fraction, self.test_fraction, self.split_rounding)
        log.info(
            "%s: %d characters, %d distinct; train/val/test %d/%d/%d", source, n, len(itos), n_train, n_val, n_test
        )
        # views of one array: saved (and memory-mapped back) as one storage, never copied
        held_out = n_train + n_val
        if self.val_position == "start":
            train, val = encoded[n_val:held_out], encoded[:n_val]
        else:
            train, val = encoded[:n_train], encoded[n_train:held_out]
        return {"itos": itos, "train": train, "val": val, "test": encoded[held_out:]}

    def setup(self, stage: str | None = None) -> None:
        payload = self.load_payload()
        self.parts = {name: payload[name] for name in ("train", "val", "test")}
        lengths = {
            "seq_length": (self.seq_length, ("train", "val", "test")),
            "eval_windows": (self.eval_windows, ("val", "test")),
        }
        for key, (length, splits) in lengths.items():
            for name in splits:
                if length is not None and self.parts[name].numel() < length + 2:
                    raise ConfigError(
                        f"data.{key}={length} is longer than the {name} text "
                        f"({self.parts[name].numel()} characters); lower it or the val/test fractions"
                    )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._held_out_loaders("val")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._held_out_loaders("test")

    def _held_out_loaders(self, split: str) -> DataLoader | list[DataLoader]:
        """The configured protocol's loader, then (with ``eval_windows``) the independent windows'."""
        main = self._loader(split, train=False)
        if self.eval_windows is None:
            return main
        windows = CharWindows(self.parts[split], self.eval_windows + 1, self.eval_windows)
        return [main, self.sequence_loader(windows, len(windows), collate_windows, train=False)]

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
        # every window has one length: a count, not a tensor of a length per window
        return self.sequence_loader(windows, len(windows), collate_windows, train)
