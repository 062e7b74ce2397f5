"""Prompt text ↔ token ids for generation, saved inside every language-model checkpoint.

A checkpoint must generate text without its DataModule, so the codec (vocabulary,
character or word level, normaliser, start/end tokens, reading direction) travels with
the weights. A backward model (IMDb ``data.reverse=true``) reads the prompt last word
first and writes what comes before it, so its text is turned back the right way round.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from rnnlab.data.text import imdb_tokenize
from rnnlab.errors import RnnlabError

log = logging.getLogger(__name__)


@dataclass
class TextCodec:
    itos: list[str]
    level: str  # "char" | "word"
    normalizer: str = "none"  # "none" | "news" | "imdb"
    start_token: str | None = None
    end_token: str | None = None
    unk_token: str | None = None
    reverse: bool = False  # the model reads text last token first
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @property
    def end_id(self) -> int | None:
        return self.stoi.get(self.end_token) if self.end_token else None

    def tokens(self, text: str) -> list[str]:
        """The prompt as the model reads it: normalised, split, in the model's direction."""
        words = self._split(text)
        if self.reverse:
            words = words[::-1]
        return [self.start_token, *words] if self.start_token else words

    def _split(self, text: str) -> list[str]:
        if self.level == "char":
            return list(text)
        if self.normalizer == "news":
            from rnnlab.data.news import normalize_description

            return normalize_description(text).split()
        if self.normalizer == "imdb":
            return imdb_tokenize(text)
        return text.split()

    def encode(self, text: str) -> list[int]:
        tokens = self.tokens(text)
        unknown = sorted({t for t in tokens if t not in self.stoi})
        if unknown and (self.level == "char" or self.unk_token is None):
            raise RnnlabError(
                f"prompt has {len(unknown)} character(s) outside the model's vocabulary: "
                f"{', '.join(repr(u) for u in unknown)}; remove or replace them"
            )
        if unknown:
            log.warning("prompt words not in the vocabulary, read as %s: %s", self.unk_token, ", ".join(unknown))
        unk = self.stoi.get(self.unk_token) if self.unk_token else None
        return [self.stoi.get(t, unk) for t in tokens]

    def decode(self, ids: list[int]) -> str:
        tokens = [self.itos[i] for i in (reversed(ids) if self.reverse else ids)]
        if self.level == "char":
            return "".join(tokens)
        return " ".join(t for t in tokens if t not in (self.start_token, self.end_token))

    def join(self, prompt: str, continuation: str) -> str:
        """The prompt and what the model wrote, in reading order (a backward model writes what precedes)."""
        first, second = (continuation, prompt) if self.reverse else (prompt, continuation)
        if self.level == "char" or not first or not second:
            return first + second
        return f"{first} {second}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("stoi")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextCodec:
        return cls(**data)
