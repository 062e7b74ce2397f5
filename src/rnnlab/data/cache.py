"""Tokenise once: cache the integer tensors, keyed by the source's fingerprint and the settings.

A cache file is written atomically and carries its own key, so a half-written or
stale file is never loaded as good: it is rebuilt instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from rnnlab.io import atomic_write, file_digest

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_ENV = "RNNLAB_CACHE_DIR"


def default_cache_dir() -> Path:
    """Where tokenised data is kept when no folder is given: ``$RNNLAB_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/rnnlab``, else ``~/.cache/rnnlab``.

    A user-level folder, as the XDG base-directory convention has it, and never one relative to
    the current folder: a command run from anywhere writes nothing where it stands and finds the
    data it tokenised before. ``XDG_CACHE_HOME`` counts only when it is an absolute path (the
    specification says to ignore a relative one).
    """
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "rnnlab"


def fingerprint(path: str | os.PathLike) -> str:
    """Content hash of a file; for a folder, a hash of every file's relative path, size and mtime."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_key(**parts: Any) -> str:
    """Stable key of the preprocessing inputs; any change of a setting gives a new cache file."""
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class TensorCache:
    """One folder of ``<name>-<key>.pt`` files holding dicts of tensors, strings and numbers."""

    def __init__(self, cache_dir: str | os.PathLike | None, name: str):
        self.cache_dir = Path(default_cache_dir() if cache_dir is None else cache_dir).expanduser().resolve()
        self.name = name

    def path(self, key: str) -> Path:
        return self.cache_dir / f"{self.name}-{key[:20]}.pt"

    def load(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            # memory-mapped: a reload reads nothing but what a batch touches, and DataLoader workers
            # and DDP ranks share the file's pages instead of holding copies
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # truncated, corrupt, or written by an incompatible version
            log.warning("Ignoring unreadable cache %s (%s); rebuilding it.", path, exc)
            return None
        if not isinstance(payload, dict) or payload.get("__key__") != key:
            log.warning("Ignoring cache %s: its key does not match; rebuilding it.", path)
            return None
        return payload

    def lock(self, key: str) -> FileLock:
        """Held while one entry is built: parallel jobs and DDP ranks on a cold cache build it once."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path(key)) + ".lock")

    def save(self, key: str, payload: dict[str, Any]) -> Path:
        payload = {**payload, "__key__": key}
        return atomic_write(self.path(key), lambda tmp: torch.save(payload, tmp))
