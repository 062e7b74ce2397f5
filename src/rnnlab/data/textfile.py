"""A text file of any size, read in pieces: decoded, newlines normalised, its body sliced out, encoded.

Memory follows the piece (``chunk_chars``), not the file: a 1 GB corpus is read the way a
1 MB novel is. Three passes over the file, each linear: where the body starts and ends (the
book's own markers, else Project Gutenberg's ``*** START OF`` / ``*** END OF`` lines, else the
whole text), which characters it holds, and the body as character ids written into one array.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlab.errors import DataFormatError

CHUNK_BYTES = 1 << 22  # a piece and its arrays (UTF-32 codepoints, ids) stay near 50 MB
GUTENBERG_START, GUTENBERG_END = "*** START OF", "*** END OF"


def read_chunks(path: Path, encoding: str = "utf-8", chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """The file's text piece by piece, as Python's text mode reads it: BOM dropped, universal newlines.

    A file that does not decode, or that holds NUL bytes (an executable, an image: valid UTF-8 is
    no proof of text), is an error naming the byte offset.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    fed, chars, held_cr, first = 0, 0, "", True
    with open(path, "rb") as handle:
        while True:
            raw = handle.read(chunk_bytes)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                at = fed - pending + exc.start
                raise DataFormatError(
                    f"{path}: not valid {encoding} at byte offset {at} ({exc.object[exc.start : exc.start + 4]!r}); "
                    f"convert the file to UTF-8 or set data.encoding=<its encoding>"
                ) from exc
            fed += len(raw)
            if first and text:
                text, first = text.lstrip("\ufeff"), False
            if "\x00" in text:
                raise DataFormatError(
                    f"{path}: holds NUL bytes at offset {chars + text.index(chr(0))}: a binary file, not text"
                )
            chars += len(text)
            text = held_cr + text
            held_cr = ""
            if raw and text.endswith("\r"):  # "\r\n" may be cut between two pieces
                text, held_cr = text[:-1], "\r"
            if text:
                yield text.replace("\r\n", "\n").replace("\r", "\n")
            if not raw:
                return


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole file as one string (small files; the DataModules stream)."""
    return "".join(read_chunks(path, encoding))


@dataclass(frozen=True)
class Span:
    """Where the body is, in characters of the normalised text; ``strip`` drops newlines at both ends."""

    start: int
    end: int | None  # None: to the end of the text
    strip: bool


def _first(found: dict[str, int], key: str, position: int) -> None:
    if key not in found:
        found[key] = position


def find_body(chunks: Iterator[str], start_marker: str | None, end_marker: str | None) -> Span:
    """The book's slice when both its markers are found, else the body between Gutenberg's
    ``*** START OF … ***`` line and ``*** END OF``, else the whole text."""
    patterns = [p for p in (start_marker, end_marker, GUTENBERG_START, GUTENBERG_END) if p]
    overlap = max(map(len, patterns)) - 1
    found: dict[str, int] = {}
    tail, tail_at, line_end = "", 0, None  # tail: the last characters of the previous piece
    for chunk in chunks:
        window, base = tail + chunk, tail_at
        for name, pattern in (("start", start_marker), ("end", end_marker), ("g_start", GUTENBERG_START)):
            if pattern and name not in found and (i := window.find(pattern)) != -1:
                _first(found, name, base + i)
        if "g_start" in found and line_end is None:
            at = window.find("\n", max(found["g_start"] - base, 0))
            line_end = base + at + 1 if at != -1 else None
        if (i := window.find(GUTENBERG_END)) != -1:
            _first(found, "g_end_any", base + i)
        if line_end is not None and (i := window.find(GUTENBERG_END, max(line_end - base, 0))) != -1:
            _first(found, "g_end", base + i)
        keep = min(overlap, len(window))
        tail, tail_at = window[len(window) - keep :], base + len(window) - keep
    if start_marker and end_marker and "start" in found and "end" in found:
        return Span(found["start"], max(found["end"], found["start"]), strip=False)
    if "g_start" in found:
        if line_end is None:  # the START line is the last line: nothing after it
            return Span(0, 0, strip=True)
        return Span(line_end, found.get("g_end"), strip=True)
    return Span(0, found.get("g_end_any"), strip=True)


def body_chunks(path: Path, encoding: str, span: Span, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """The characters of ``span``, piece by piece (leading newlines dropped when it strips)."""
    at, leading = 0, span.strip
    for chunk in read_chunks(path, encoding, chunk_bytes):
        lo, hi = max(span.start - at, 0), len(chunk) if span.end is None else min(span.end - at, len(chunk))
        at += len(chunk)
        if lo >= hi:
            if span.end is not None and at >= span.end:
                return
            continue
        piece = chunk[lo:hi]
        if leading:
            piece = piece.lstrip("\n")
            leading = not piece
        if piece:
            yield piece


def codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclass
class Charset:
    """The body's characters (sorted, as the vocabulary lists them) and its length, newlines at its end not counted."""

    chars: list[str]
    length: int


def scan(pieces: Iterator[str], strip: bool) -> Charset:
    counts = np.zeros(0x110000, dtype=np.int64)
    length, trailing = 0, 0  # trailing: the newlines at the end so far (dropped when it strips)
    for piece in pieces:
        cps = codepoints(piece)
        counts += np.bincount(cps, minlength=counts.size)
        length += cps.size
        body = piece.rstrip("\n")
        trailing = trailing + len(piece) if not body else len(piece) - len(body)
    if strip and trailing:
        length -= trailing
        counts[ord("\n")] -= trailing
    return Charset([chr(c) for c in np.flatnonzero(counts)], length)


def id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest integer type for the ids: one byte a character for a book's ~80 letters."""
    return np.dtype(np.uint8 if vocab_size <= 256 else np.int16 if vocab_size <= 32767 else np.int32)


def encode(pieces: Iterator[str], charset: Charset) -> np.ndarray:
    """The body as ids into ``charset.chars``, one array of ``charset.length`` written piece by piece."""
    table = np.full(0x110000, -1, dtype=np.int32)
    table[[ord(c) for c in charset.chars]] = np.arange(len(charset.chars))
    out = np.empty(charset.length, dtype=id_dtype(len(charset.chars)))
    at = 0
    for piece in pieces:
        ids = table[codepoints(piece)][: charset.length - at]
        out[at : at + ids.size] = ids
        at += ids.size
    return out
