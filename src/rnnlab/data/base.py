"""What every rnnlab DataModule shares: the prepare/cache/load cycle, rank sharding and loaders.

A subclass says where its file is, which settings change its preprocessing and how
to build the payload (vocabulary + integer tensors); this class makes sure the
build happens once per (source, settings) and that every process loads the same result.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from rnnlab.data.batching import BucketBatchSampler
from rnnlab.data.cache import TensorCache, cache_key, fingerprint
from rnnlab.data.sources import resolve_data_dir
from rnnlab.data.text import Vocabulary
from rnnlab.errors import ConfigError

log = logging.getLogger(__name__)


def check_fractions(val_fraction: float, test_fraction: float, what: str) -> None:
    """Held-out fractions must each be in (0, 1) and leave something to train on."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be in (0, 1) "
            f"and leave {what} to train on"
        )


class CachedTextDataModule(pl.LightningDataModule):
    """Base for the text DataModules: subclasses implement ``find_source``, ``settings``, ``build``."""

    cache_name: str = "text"
    has_test_split: bool = True  # False where a mode must never read the test data

    def __init__(
        self,
        data_dir: str | None = None,
        cache_dir: str | None = None,  # None: the user-level cache (cache.default_cache_dir)
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        bucket: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        download: bool = True,
        seed: int = 1,
    ):
        super().__init__()
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be a positive integer, got {batch_size}")
        self.data_dir = resolve_data_dir(data_dir)
        self.cache = TensorCache(cache_dir, self.cache_name)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.bucket, self.num_workers, self.pin_memory = bucket, num_workers, pin_memory
        self.download, self.seed = download, seed
        self._payload: dict[str, Any] | None = None
        self.vocab: Vocabulary | None = None
        self.prepare_seconds: float | None = None
        self.provenance: dict[str, Any] | None = None  # the file read and the cache entry built from it

    # ---- what a dataset says about itself
    @abstractmethod
    def find_source(self) -> Path:
        """The raw file or folder; downloads it or raises ``DataNotFoundError`` naming what to put where."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Every option that changes the cached tensors (part of the cache key)."""

    @abstractmethod
    def build(self, source: Path) -> dict[str, Any]:
        """Read, tokenise and encode; returns a payload with ``itos`` and the split tensors."""

    @abstractmethod
    def make_vocab(self, itos: list[str]) -> Vocabulary:
        """Rebuild the vocabulary object from the cached token list."""

    # ---- the shared cycle
    def load_payload(self) -> dict[str, Any]:
        if self._payload is None:
            start = time.perf_counter()
            source = self.find_source()
            content = fingerprint(source)
            key = cache_key(dataset=self.cache_name, source=content, **self.settings())
            self.provenance = {
                "dataset": self.cache_name,
                "source": str(source),
                # a file's sha256; an extracted folder's fingerprint covers paths, sizes and times
                ("sha256" if source.is_file() else "fingerprint"): content,
                "cache_key": key,
                "settings": self.settings(),
            }
            payload = self.cache.load(key)
            if payload is None:
                with self.cache.lock(key):
                    payload = self.cache.load(key)  # built by another process while this one waited
                    if payload is None:
                        log.info("Preprocessing %s (once; cached under %s)", source, self.cache.cache_dir)
                        payload = self.build(source)
                        self.cache.save(key, payload)
            self._payload = payload
            self.vocab = self.make_vocab(list(payload["itos"]))
            self.prepare_seconds = time.perf_counter() - start
        return self._payload

    def prepare_data(self) -> None:
        self.load_payload()

    @property
    def vocab_size(self) -> int:
        self.load_payload()
        return len(self.vocab)

    @property
    def pad_index(self) -> int:
        self.load_payload()
        return self.vocab.pad_index

    # ---- loaders
    @abstractmethod
    def _loader(self, split: str, train: bool) -> DataLoader:
        """The loader of one split: ``train`` shuffles (and shards equally across ranks)."""

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def sequence_loader(self, dataset: Dataset, lengths: Tensor | int, collate: Callable, train: bool) -> DataLoader:
        world, rank = self._replicas()
        sampler = BucketBatchSampler(
            lengths,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            bucket=self.bucket or not train,
            drop_last=False,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=partial(collate, pad_index=self.pad_index),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
