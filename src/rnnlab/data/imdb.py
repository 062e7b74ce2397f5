"""IMDb reviews (Large Movie Review Dataset, aclImdb v1) as a LightningDataModule.

Reads the official archive or its extracted folder, tokenises every review once
(Raschka's tokeniser), splits the 25k training reviews 20k/5k by a fixed seed,
builds the vocabulary from the 20k (plus the 50k unlabelled reviews with
``unlabelled=true``), and caches the integer tensors.

Two tasks on one cache: ``classify`` (many-to-one sentiment) and ``lm`` (next word
over the 20k training reviews + the unlabelled ones, validated on the 5k; the test
reviews are never read in this mode, so a classifier later fine-tuned from the
language model is still tested on unseen text). ``reverse=true`` reads every review
from its last word to its first, for either task: the backward half of an ensemble.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader

from rnnlab.data.base import CachedTextDataModule
from rnnlab.data.batching import (
    RaggedSequences,
    chunk_spans,
    collate_classification,
    collate_language_model,
    concat_ragged,
    ragged_from_ids,
    reverse_each,
)
from rnnlab.data.codec import TextCodec
from rnnlab.data.sources import RemoteFile, find_or_download
from rnnlab.data.text import PAD, UNK, Vocabulary, WordIds, imdb_tokenize
from rnnlab.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

IMDB_REMOTE = RemoteFile(
    url="https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
    filename="aclImdb_v1.tar.gz",
    md5="7c2ac02c03563afcf9b574c7e56c153a",
)
LABELS = {"neg": 0, "pos": 1}
# the longest aclImdb review is under 14 KB; a far larger file is not a review, and reading it whole
# (then padding a batch to its length) is how a hostile archive would exhaust memory
MAX_REVIEW_BYTES = 1 << 20
TASKS = ("classify", "lm")

Review = tuple[str, int, Any]  # (path inside aclImdb, label, the text or what ``read_reviews`` made of it)


def _review_key(parts: list[str]) -> tuple[str, str] | None:
    """``[..., split, pos|neg|unsup, <id>_<rating>.txt]`` → (split, folder), else None."""
    if len(parts) < 3 or not parts[-1].endswith(".txt"):
        return None
    split, folder = parts[-3], parts[-2]
    if split in ("train", "test") and folder in ("pos", "neg", "unsup"):
        return split, folder
    return None


def _too_large(where: str, size: int, limit: int) -> DataFormatError:
    return DataFormatError(
        f"{where} is {size:,} bytes; an IMDb review is a few KB. The archive is not aclImdb or is damaged "
        f"(or set data.max_review_bytes=<bytes> above {limit:,})"
    )


def _iter_archive(path: Path, max_bytes: int) -> Iterator[tuple[list[str], bytes]]:
    """Review files read from the archive in memory: nothing is extracted, so a member named
    ``../x`` (or a link) never reaches the disk."""
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if member.isfile() and _review_key(member.name.split("/")):
                    if member.size > max_bytes:
                        raise _too_large(f"{path}: {member.name}", member.size, max_bytes)
                    yield member.name.split("/"), archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataFormatError(
            f"{path}: cannot read the IMDb archive ({exc}). It is truncated or corrupt: delete it and "
            f"download {IMDB_REMOTE.url} again, or put the extracted aclImdb/ folder beside it."
        ) from exc


def _iter_folder(root: Path, max_bytes: int) -> Iterator[tuple[list[str], bytes]]:
    for file in root.rglob("*.txt"):
        parts = list(file.relative_to(root.parent).parts)
        if _review_key(parts):
            if (size := file.stat().st_size) > max_bytes:
                raise _too_large(str(file), size, max_bytes)
            yield parts, file.read_bytes()


def read_reviews(
    source: Path,
    folders: tuple[str, ...] = ("pos", "neg"),
    max_review_bytes: int = MAX_REVIEW_BYTES,
    encode: Callable[[str], Any] = str,
) -> dict[str, list[Review]]:
    """``{"train": [...], "test": [...], "unsup": [...]}`` sorted by path, so every run sees one order.

    Each review is handed to ``encode`` as it is read and only what that returns is kept (token
    ids, not the text): memory follows the encoded corpus, not 100k texts and their tokens.
    """
    out: dict[str, list[Review]] = {"train": [], "test": [], "unsup": []}
    items = _iter_archive(source, max_review_bytes) if source.is_file() else _iter_folder(source, max_review_bytes)
    for parts, raw in items:
        split, folder = _review_key(parts)
        if folder not in folders:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataFormatError(
                f"{source}: {'/'.join(parts)} is not UTF-8 (byte {exc.start}); the archive is corrupt."
            ) from exc
        key = "unsup" if folder == "unsup" else split
        out[key].append(("/".join(parts[-3:]), LABELS.get(folder, -1), encode(text)))
    for reviews in out.values():
        reviews.sort(key=lambda r: r[0])
    for split in ("train", "test"):
        labels = {label for _, label, _ in out[split]}
        if labels != {0, 1}:
            raise DataFormatError(
                f"{source}: expected {split}/pos and {split}/neg reviews (aclImdb layout), "
                f"found labels {sorted(labels)} in {len(out[split])} files."
            )
    return out


class IMDBDataModule(CachedTextDataModule):
    """Sentiment (20k train / 5k val / official 25k test) or, with ``task=lm``, a word-level LM corpus."""

    cache_name = "imdb"

    def __init__(
        self,
        val_size: int = 5000,
        split_seed: int = 1,
        min_freq: int = 1,
        max_size: int | None = None,
        max_length: int | None = None,
        task: str = "classify",
        unlabelled: bool = False,
        lm_chunk_length: int = 256,
        reverse: bool = False,
        max_review_bytes: int = MAX_REVIEW_BYTES,
        unlabelled_batches: bool = False,
        **common: Any,
    ):
        super().__init__(**common)
        if val_size <= 0:
            raise ConfigError(f"data.val_size must be positive, got {val_size}")
        if max_length is not None and max_length <= 0:
            raise ConfigError(f"data.max_length must be positive or null, got {max_length}")
        if task not in TASKS:
            raise ConfigError(f"data.task={task!r} is not allowed; choose one of {', '.join(TASKS)}")
        if lm_chunk_length <= 0:
            raise ConfigError(f"data.lm_chunk_length must be positive, got {lm_chunk_length}")
        if unlabelled_batches and (not unlabelled or task != "classify"):
            raise ConfigError("data.unlabelled_batches=true needs data.unlabelled=true and data.task=classify")
        self.val_size, self.split_seed = val_size, split_seed
        self.min_freq, self.max_size, self.max_length = min_freq, max_size, max_length
        self.task, self.unlabelled, self.lm_chunk_length = task, unlabelled, lm_chunk_length
        self.reverse, self.max_review_bytes = reverse, max_review_bytes
        self.unlabelled_batches = unlabelled_batches
        self.has_test_split = task == "classify"
        self.datasets: dict[str, RaggedSequences] = {}

    def find_source(self) -> Path:
        folder = self.data_dir / "imdb"
        return find_or_download(
            [folder / IMDB_REMOTE.filename, folder / "aclImdb"],
            IMDB_REMOTE,
            "IMDb reviews (aclImdb v1)",
            allow_download=self.download,
        )

    def settings(self) -> dict[str, Any]:
        return {
            "val_size": self.val_size,
            "split_seed": self.split_seed,
            "min_freq": self.min_freq,
            "max_size": self.max_size,
            "unlabelled": self.unlabelled,
            "tokenizer": "imdb_tokenize/v1",
        }

    def make_vocab(self, itos: list[str]) -> Vocabulary:
        return Vocabulary(itos, unk=UNK, pad=PAD)

    class_names = ["negative", "positive"]  # label 0 and 1, as the folders neg/ and pos/ name them

    @property
    def codec(self) -> TextCodec:
        """Prompts are tokenised as the reviews were, so a review LM generates from plain text."""
        self.load_payload()
        return TextCodec(self.vocab.itos, level="word", normalizer="imdb", unk_token=UNK, reverse=self.reverse)

    def build(self, source: Path) -> dict[str, Any]:
        folders = ("pos", "neg", "unsup") if self.unlabelled else ("pos", "neg")
        words = WordIds()
        reviews = read_reviews(source, folders, self.max_review_bytes, lambda text: words.encode(imdb_tokenize(text)))
        train_all = reviews["train"]
        if self.val_size >= len(train_all):
            raise ConfigError(
                f"data.val_size={self.val_size} leaves no training reviews ({len(train_all)} in {source})"
            )
        generator = torch.Generator().manual_seed(self.split_seed)
        perm = torch.randperm(len(train_all), generator=generator).tolist()
        n_train = len(train_all) - self.val_size
        splits = {
            "train": [train_all[i] for i in perm[:n_train]],
            "val": [train_all[i] for i in perm[n_train:]],
            "test": reviews["test"],
        }
        if self.unlabelled:
            splits["unsup"] = reviews["unsup"]
        ids = {name: [review_ids for _, _, review_ids in rows] for name, rows in splits.items()}
        vocab, lookup = Vocabulary.from_ids(
            ids["train"] + ids.get("unsup", []),
            words,
            specials=(PAD, UNK),
            min_freq=self.min_freq,
            max_size=self.max_size,
        )
        payload: dict[str, Any] = {"itos": vocab.itos, "splits": {}}
        for name, rows in splits.items():
            flat, offsets = ragged_from_ids(ids[name], lookup)
            labels = torch.tensor([label for _, label, _ in rows], dtype=torch.float32)
            payload["splits"][name] = {"flat": flat, "offsets": offsets, "labels": labels}
        return payload

    def setup(self, stage: str | None = None) -> None:
        splits = self.load_payload()["splits"]
        if self.reverse:  # a reading direction, not a preprocessing: one cache serves both
            splits = {name: {**s, "flat": reverse_each(s["flat"], s["offsets"])} for name, s in splits.items()}
        if self.task == "lm":
            self.datasets = {
                "train": self._lm_pieces([splits[n] for n in ("train", "unsup") if n in splits]),
                "val": self._lm_pieces([splits["val"]]),
            }
            return
        self.datasets = {
            name: RaggedSequences.from_offsets(s["flat"], s["offsets"], s["labels"], max_length=self.max_length)
            for name, s in splits.items()
            if name != "unsup" or self.unlabelled_batches
        }

    @property
    def token_frequencies(self):
        """How often each word occurs in the text the model learns from (train, and the unlabelled reviews)."""
        splits = self.load_payload()["splits"]
        counts = sum(
            torch.bincount(splits[n]["flat"].long(), minlength=len(self.vocab))
            for n in ("train", "unsup")
            if n in splits
        )
        return counts.float() / counts.sum()

    def train_dataloader(self):
        """With ``unlabelled_batches``, each labelled batch comes with a batch of unlabelled reviews (virtual
        adversarial training reads both); the epoch is the labelled set, the unlabelled ones are drawn
        afresh every epoch."""
        labelled = super().train_dataloader()
        if not self.unlabelled_batches:
            return labelled
        return CombinedLoader({"labelled": labelled, "unlabelled": self._loader("unsup", train=True)}, mode="min_size")

    def _lm_pieces(self, parts: list[dict[str, torch.Tensor]]) -> RaggedSequences:
        flat, offsets = concat_ragged([(p["flat"], p["offsets"]) for p in parts])
        return RaggedSequences(flat, *chunk_spans(offsets, self.lm_chunk_length))

    def test_dataloader(self) -> DataLoader:
        if self.task == "lm":
            raise ConfigError(
                "data.task=lm never reads the IMDb test reviews (they stay unseen for the classifier); "
                "its held-out figures are val/*. Set test_after_fit=false."
            )
        return super().test_dataloader()

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        collate = collate_language_model if self.task == "lm" else collate_classification
        return self.sequence_loader(dataset, dataset.lengths, collate, train=train)
