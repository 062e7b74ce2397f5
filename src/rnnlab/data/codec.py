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

from rnnlab.data.text import imdb_tokenize, normalize_description
from rnnlab.errors import RnnlabError

log = logging.getLogger(__name__)


LEVELS = ("char", "word")
SHOWN = 20  # unknown prompt tokens named in a message
NORMALIZERS = ("none", "news", "imdb")


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
            return normalize_description(text).split()
        if self.normalizer == "imdb":
            return imdb_tokenize(text)
        return text.split()

    def encode(self, text: str, quiet: bool = False) -> list[int]:
        """Ids of the text; unknown words become ``<unk>`` (with a warning unless ``quiet``), unknown
        characters of a char model are an error."""
        tokens = self.tokens(text)
        unknown = sorted({t for t in tokens if t not in self.stoi})
        shown = ", ".join(repr(u) for u in unknown[:SHOWN]) + (" …" if len(unknown) > SHOWN else "")
        if unknown and (self.level == "char" or self.unk_token is None):
            raise RnnlabError(
                f"prompt has {len(unknown)} character(s) outside the model's vocabulary: {shown}; "
                f"remove or replace them"
            )
        if unknown and not quiet:
            log.warning("%d prompt word(s) not in the vocabulary, read as %s: %s", len(unknown), self.unk_token, shown)
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
    def from_dict(cls, data: Any) -> TextCodec:
        """The codec a checkpoint carries, checked field by field: a checkpoint is data from outside."""
        fields = {"itos", "level", "normalizer", "start_token", "end_token", "unk_token", "reverse"}
        problem = None
        if not isinstance(data, dict) or not set(data) <= fields or "itos" not in data or "level" not in data:
            problem = f"fields {sorted(data) if isinstance(data, dict) else type(data).__name__}"
        elif not isinstance(data["itos"], list) or not all(isinstance(t, str) for t in data["itos"]):
            problem = "a vocabulary that is not a list of strings"
        elif data["level"] not in LEVELS or data.get("normalizer", "none") not in NORMALIZERS:
            problem = f"level={data['level']!r}, normalizer={data.get('normalizer')!r}"
        elif not all(isinstance(data.get(k), (str, type(None))) for k in ("start_token", "end_token", "unk_token")):
            problem = "special tokens that are not strings"
        if problem:
            raise RnnlabError(f"the checkpoint's text codec is not one rnnlab writes ({problem}); the file is damaged")
        return cls(**data)
