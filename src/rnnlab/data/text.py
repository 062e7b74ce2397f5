"""Tokenisers of the source tutorials and a vocabulary that maps tokens to ids and back."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"

_HTML_TAG = re.compile(r"<[^>]*>")
_EMOTICON = re.compile(r"(?::|;|=)(?:-)?(?:\)|\(|D|P)")
_NON_WORD = re.compile(r"[\W]+")
_NEWS_DROP = re.compile(r"[^'\&\w\s]")


def imdb_tokenize(text: str) -> list[str]:
    """Raschka's review tokeniser: drop HTML tags, keep emoticons, ``[\\W]+`` to space, lower-case.

    Emoticons are found on the original text (so ``:D`` and ``:P`` survive, as in the
    book's chapter 8) and appended as separate tokens without their ``-`` nose.
    """
    text = _HTML_TAG.sub("", text)
    emoticons = [e.replace("-", "") for e in _EMOTICON.findall(text)]
    return _NON_WORD.sub(" ", text.lower()).split() + emoticons


def normalize_description(text: str) -> str:
    """The news tutorial's normalisation: lower-case, ``-`` to space, drop all but word characters,
    whitespace, ``'`` and ``&``, strip."""
    return _NEWS_DROP.sub("", text.lower().replace("-", " ")).strip()


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
    def build(
        cls,
        texts: Iterable[Sequence[str]],
        specials: Sequence[str] = (PAD, UNK),
        min_freq: int = 1,
        max_size: int | None = None,
        trailing: Sequence[str] = (),
        unk: str | None = UNK,
        pad: str | None = PAD,
    ) -> Vocabulary:
        """Most frequent first (ties by first appearance); ``max_size`` counts specials and ``trailing``."""
        counts: Counter[str] = Counter()
        for tokens in texts:
            counts.update(tokens)
        reserved = set(specials) | set(trailing)
        words = [w for w, c in counts.most_common() if c >= min_freq and w not in reserved]
        if max_size is not None:
            words = words[: max(max_size - len(specials) - len(trailing), 0)]
        return cls([*specials, *words, *trailing], unk=unk, pad=pad)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        if self.unk_index is None:
            return [self.stoi[t] for t in tokens]
        get, unk = self.stoi.get, self.unk_index
        return [get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]
