"""The tokenisers of the sources (Raschka et al.'s review tokeniser, the news word-LM tutorial's
normalisation) and a vocabulary that maps tokens to ids and back."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"

_HTML_TAG = re.compile(r"<[^>]*>")
_EMOTICON = re.compile(r"(?::|;|=)(?:-)?(?:\)|\(|D|P)")
_NON_WORD = re.compile(r"[\W]+")
_NEWS_DROP = re.compile(r"[^'\&\w\s]")


def imdb_tokenize(text: str) -> list[str]:
    """Raschka's review tokeniser: drop HTML tags, keep emoticons, ``[\\W]+`` to space, lower-case.

    Emoticons are found on the original text (so ``:D`` and ``:P`` survive, as in the
    book's chapter 8, Raschka et al.) and appended as separate tokens without their ``-`` nose.
    """
    text = _HTML_TAG.sub("", text)
    emoticons = [e.replace("-", "") for e in _EMOTICON.findall(text)]
    return _NON_WORD.sub(" ", text.lower()).split() + emoticons


def normalize_description(text: str) -> str:
    """The news tutorial's normalisation: lower-case, ``-`` to space, drop all but word characters,
    whitespace, ``'`` and ``&``, strip."""
    return _NEWS_DROP.sub("", text.lower().replace("-", " ")).strip()


class WordIds:
    """Each word an id in the order first seen: a corpus is tokenised once, into compact arrays,
    before its vocabulary exists (a list of strings per document would cost ~50 bytes a token)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        ids = self.ids
        return np.fromiter((ids.setdefault(t, len(ids)) for t in tokens), dtype=np.int32)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def names(self) -> list[str]:
        return list(self.ids)  # dicts keep insertion order: position = id


class Vocabulary:
    """Ordered token list with a reverse index; specials come first, in the order given."""

    def __init__(self, tokens: Sequence[str], unk: str | None = UNK, pad: str | None = PAD):
        self.itos: list[str] = list(tokens)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary tokens must be unique")
        self.unk_index = self.stoi[unk] if unk is not None else None
        self.pad_index = self.stoi[pad] if pad is not None else None

    @classmethod
    def build(cls, texts: Iterable[Sequence[str]], **options: Any) -> Vocabulary:
        """The vocabulary of tokenised texts (see ``from_ids`` for the options and the order)."""
        words = WordIds()
        return cls.from_ids([words.encode(tokens) for tokens in texts], words, **options)[0]

    @classmethod
    def from_ids(
        cls,
        sequences: Sequence[np.ndarray],
        words: WordIds,
        specials: Sequence[str] = (PAD, UNK),
        min_freq: int = 1,
        max_size: int | None = None,
        trailing: Sequence[str] = (),
        unk: str | None = UNK,
        pad: str | None = PAD,
    ) -> tuple[Vocabulary, np.ndarray]:
        """The vocabulary of texts encoded as ``words`` ids, and the lookup from those ids to its own.

        Most frequent first, ties by first appearance in ``sequences`` (as ``Counter.most_common``
        orders them); ``min_freq`` drops rare words; ``max_size`` counts specials and ``trailing``.
        A word left out maps to ``unk`` (-1 when there is none).
        """
        size = len(words)
        stream = np.concatenate(sequences) if len(sequences) else np.zeros(0, dtype=np.int32)
        counts = np.bincount(stream, minlength=size)
        first = np.full(size, stream.size, dtype=np.int64)
        seen, at = np.unique(stream, return_index=True)
        first[seen] = at
        ranked = seen[np.lexsort((first[seen], -counts[seen]))]
        reserved = set(specials) | set(trailing)
        names = words.names
        kept = [i for i in ranked.tolist() if counts[i] >= min_freq and names[i] not in reserved]
        if max_size is not None:
            kept = kept[: max(max_size - len(specials) - len(trailing), 0)]
        vocab = cls([*specials, *(names[i] for i in kept), *trailing], unk=unk, pad=pad)
        lookup = np.full(size, -1 if vocab.unk_index is None else vocab.unk_index, dtype=np.int32)
        lookup[kept] = np.arange(len(specials), len(specials) + len(kept), dtype=np.int32)
        return vocab, lookup

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        if self.unk_index is None:
            return [self.stoi[t] for t in tokens]
        get, unk = self.stoi.get, self.unk_index
        return [get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]
