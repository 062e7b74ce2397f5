"""Variable-length sequences in, padded batches out: padding per batch, never to a global maximum.

Sequences are stored as one flat tensor plus offsets (cheap to cache and to slice);
a length-bucketed batch sampler groups similar lengths so little padding is computed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Sampler

IGNORE_INDEX = -100


@dataclass
class Batch:
    """Token ids ``[B, T]``, true lengths ``[B]`` (kept on CPU for packing) and targets."""

    tokens: Tensor
    lengths: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return self.tokens.size(0)

    def pin_memory(self) -> Batch:
        return Batch(self.tokens.pin_memory(), self.lengths, self.targets.pin_memory())


def labelled_and_unlabelled(batch: Batch | dict[str, Batch]) -> tuple[Batch, Batch | None]:
    """A training batch's labelled reviews and the unlabelled ones riding along (``data.unlabelled_batches``:
    the IMDb DataModule combines the two loaders into ``{"labelled", "unlabelled"}``), or ``None``."""
    return (batch["labelled"], batch.get("unlabelled")) if isinstance(batch, dict) else (batch, None)


def ragged_from_ids(sequences: Sequence[Sequence[int]], lookup: np.ndarray | None = None) -> tuple[Tensor, Tensor]:
    """``(flat, offsets)`` with ``offsets[i]:offsets[i+1]`` the i-th sequence, each id mapped through
    ``lookup`` when given: one array operation, never a Python list of every token."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    offsets = torch.zeros(len(sequences) + 1, dtype=torch.long)
    torch.cumsum(lengths, 0, out=offsets[1:])
    flat = np.concatenate([np.asarray(s, dtype=np.int32) for s in sequences]) if len(sequences) else np.zeros(0, int)
    return torch.from_numpy((lookup[flat] if lookup is not None else flat).astype(np.int32)), offsets


def concat_ragged(parts: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Join several ``(flat, offsets)`` collections into one, in order."""
    flats = [flat for flat, _ in parts]
    shifts = torch.tensor([0] + [flat.numel() for flat in flats[:-1]]).cumsum(0)
    offsets = [parts[0][1][:1]] + [offs[1:] + shift for (_, offs), shift in zip(parts, shifts, strict=True)]
    return torch.cat(flats), torch.cat(offsets)


def reverse_each(flat: Tensor, offsets: Tensor) -> Tensor:
    """Every sequence's tokens in reverse order, each sequence staying in its own place.

    A model reading reviews backwards is the second half of ULMFiT's bidirectional
    ensemble: it sees each review from its end, so its errors differ from the forward one's.
    """
    lengths = offsets[1:] - offsets[:-1]
    sequence = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    position = torch.arange(int(offsets[0]), int(offsets[-1]))
    reversed_flat = flat.clone()
    reversed_flat[position] = flat[offsets[:-1][sequence] + offsets[1:][sequence] - 1 - position]
    return reversed_flat


def chunk_spans(offsets: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """``(starts, lengths)`` cutting each sequence into pieces of at most ``size + 1`` tokens.

    Pieces overlap by one token (the last input of one is the first of the next), so a
    language model predicts every token but each sequence's first exactly once, however
    long the sequence; pieces too short to hold a target are left out.
    """
    if size <= 0:
        raise ValueError(f"chunk size must be positive, got {size}")
    lengths = offsets[1:] - offsets[:-1]
    counts = ((lengths - 1).clamp(min=0) + size - 1) // size
    seq_of_piece = torch.repeat_interleave(torch.arange(lengths.numel()), counts)
    first_piece = torch.cumsum(counts, 0) - counts
    index_in_seq = torch.arange(seq_of_piece.numel()) - first_piece[seq_of_piece]
    starts = offsets[:-1][seq_of_piece] + index_in_seq * size
    ends = torch.minimum(starts + size + 1, offsets[1:][seq_of_piece])
    return starts, ends - starts


class RaggedSequences(Dataset):
    """Sequence ``i`` is ``flat[starts[i] : starts[i] + lengths[i]]``; ``labels`` optional (language models have none).

    Spans may overlap (language-model pieces from ``chunk_spans`` share a token);
    ``from_offsets`` is the common case of back-to-back sequences.
    """

    def __init__(self, flat: Tensor, starts: Tensor, lengths: Tensor, labels: Tensor | None = None):
        self.flat, self.starts, self.lengths, self.labels = flat, starts, lengths, labels

    @classmethod
    def from_offsets(
        cls, flat: Tensor, offsets: Tensor, labels: Tensor | None = None, max_length: int | None = None
    ) -> RaggedSequences:
        """Sequences ``flat[offsets[i]:offsets[i+1]]``, each cut to its first ``max_length`` tokens."""
        lengths = offsets[1:] - offsets[:-1]
        return cls(flat, offsets[:-1], lengths if max_length is None else lengths.clamp(max=max_length), labels)

    def __len__(self) -> int:
        return self.starts.numel()

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor | None]:
        start = int(self.starts[i])
        seq = self.flat[start : start + int(self.lengths[i])].long()
        return seq, (self.labels[i] if self.labels is not None else None)


def collate_classification(items: list[tuple[Tensor, Tensor]], pad_index: int) -> Batch:
    seqs = [s for s, _ in items]
    return Batch(
        tokens=pad_sequence(seqs, batch_first=True, padding_value=pad_index),
        lengths=torch.tensor([s.numel() for s in seqs], dtype=torch.long),
        targets=torch.stack([y for _, y in items]),
    )


def collate_language_model(items: list[tuple[Tensor, object]], pad_index: int) -> Batch:
    """Inputs are a sequence without its last token, targets the same sequence shifted by one."""
    seqs = [s for s, _ in items]
    return Batch(
        tokens=pad_sequence([s[:-1] for s in seqs], batch_first=True, padding_value=pad_index),
        lengths=torch.tensor([s.numel() - 1 for s in seqs], dtype=torch.long),
        targets=pad_sequence([s[1:] for s in seqs], batch_first=True, padding_value=IGNORE_INDEX),
    )


# up to this many samples an epoch's order is torch.randperm (int32); beyond it, a keyed permutation
# computed position by position, so a corpus of a billion windows needs no billion-entry index
EXACT_SHUFFLE_LIMIT = 1 << 24


class KeyedPermutation:
    """A pseudo-random permutation of ``range(n)`` evaluated at any positions in O(1) memory.

    A balanced Feistel network on the next even bit width is a bijection of ``[0, 2^bits)``;
    cycle-walking (applying it again to values ``>= n``) keeps it one on ``[0, n)``.
    """

    def __init__(self, n: int, generator: torch.Generator, rounds: int = 4):
        self.n = n
        self.half = max(((n - 1).bit_length() + 1) // 2, 1)
        self.mask = (1 << self.half) - 1
        self.keys = torch.randint(0, 2**31 - 1, (rounds,), generator=generator).tolist()

    def _round(self, x: Tensor, key: int) -> Tensor:
        h = (x * 0x9E3779B1 + key) & 0xFFFFFFFF  # a multiply-xorshift hash of the half and the round key
        h = ((h ^ (h >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
        return (h ^ (h >> 13)) & self.mask

    def _permute(self, x: Tensor) -> Tensor:
        left, right = x >> self.half, x & self.mask
        for key in self.keys:
            left, right = right, left ^ self._round(right, key)
        return (left << self.half) | right

    def __getitem__(self, positions: Tensor) -> Tensor:
        out = self._permute(positions.long())
        while (outside := out >= self.n).any():
            out[outside] = self._permute(out[outside])
        return out


def shuffled(n: int, generator: torch.Generator) -> Tensor | KeyedPermutation:
    """An epoch's random order of ``n`` samples, indexable by a tensor of positions."""
    if n <= EXACT_SHUFFLE_LIMIT:
        return torch.randperm(n, generator=generator, dtype=torch.int32)  # the same draw as int64, half the memory
    return KeyedPermutation(n, generator)


class BucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar length, sharded across DDP ranks, produced one at a time.

    Indices are shuffled, cut into pools of ``batch_size * pool_factor``, sorted by
    length inside each pool, cut into batches, and the batches shuffled again: the
    order stays random while a batch pads to nearly its own length. Without shuffle
    the whole set is sorted by length (evaluation: order does not change metrics).
    Training shards keep the same batch count on every rank so DDP never waits on
    a missing batch; evaluation shards split the samples, so every rank has work.
    ``lengths`` may be a count: that many samples of one length (windows of a text),
    for which no per-sample tensor is kept and nothing needs sorting.
    """

    def __init__(
        self,
        lengths: Tensor | int,
        batch_size: int,
        shuffle: bool = True,
        bucket: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        pool_factor: int = 50,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.lengths = None if isinstance(lengths, int) else lengths
        self.num_samples = lengths if isinstance(lengths, int) else lengths.numel()
        self.batch_size, self.shuffle, self.bucket = batch_size, shuffle, bucket and self.lengths is not None
        self.drop_last, self.seed, self.pool_factor = drop_last, seed, pool_factor
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        # Lightning sets the epoch on ``dataloader.batch_sampler.sampler``: point that at this
        # sampler, so each epoch (and a resumed run) gets its own shuffle
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _training_batches(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        n, size = self.num_samples, self.batch_size
        order = shuffled(n, generator)
        if self.bucket:
            pool = size * self.pool_factor
            order = torch.cat([p[torch.argsort(self.lengths[p], stable=True)] for p in order.split(pool)])
        count = n // size if self.drop_last else math.ceil(n / size)
        permutation = torch.randperm(count, generator=generator, dtype=torch.int32)
        if self.num_replicas > 1:  # equal batch counts on every rank
            permutation = permutation[: count // self.num_replicas * self.num_replicas][self.rank :: self.num_replicas]
        for b in (b for piece in permutation.split(1 << 16) for b in piece.tolist()):  # never all as Python ints
            positions = torch.arange(b * size, min((b + 1) * size, n))
            yield (
                order[positions] if isinstance(order, KeyedPermutation) else order[b * size : (b + 1) * size]
            ).tolist()

    def _evaluation_batches(self) -> Iterator[list[int]]:
        """Every sample once: this rank's share of the samples, then batched by length."""
        mine = torch.arange(self.rank, self.num_samples, self.num_replicas)
        if self.bucket:
            mine = mine[torch.argsort(self.lengths[mine], stable=True)]
        for batch in mine.split(self.batch_size):
            yield batch.tolist()

    def __iter__(self) -> Iterator[list[int]]:
        yield from (self._training_batches() if self.shuffle else self._evaluation_batches())

    def __len__(self) -> int:
        n = self.num_samples
        if not self.shuffle:
            return math.ceil(len(range(self.rank, n, self.num_replicas)) / self.batch_size)
        count = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return count // self.num_replicas
