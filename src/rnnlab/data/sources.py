"""Find a dataset file in the data folder, download it when a network allows, else say what to do.

The project never depends on a particular machine's layout: data lives in
``$RNNLAB_DATA_DIR`` or ``paths.data_dir`` as ``<data_dir>/<dataset>/<file>``.
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rnnlab.errors import DataFormatError, DataNotFoundError
from rnnlab.io import atomic_write, file_digest

log = logging.getLogger(__name__)

DATA_DIR_ENV = "RNNLAB_DATA_DIR"


@dataclass(frozen=True)
class RemoteFile:
    """A canonical download and the digest that proves it arrived whole."""

    url: str
    filename: str
    md5: str | None = None  # None where the source changes over time (Gutenberg re-releases)


def data_dir_hint() -> str:
    return f"set ${DATA_DIR_ENV} or paths.data_dir=... to the folder that holds it"


def verify(path: Path, remote: RemoteFile) -> None:
    """Raise if ``path`` does not match the remote's published digest."""
    if remote.md5 and (actual := file_digest(path, "md5")) != remote.md5:
        raise DataFormatError(
            f"{path}: md5 is {actual}, expected {remote.md5} for {remote.url}. "
            f"The file is truncated or corrupt: delete it and download it again."
        )


def download(remote: RemoteFile, folder: Path, timeout: float = 30.0) -> Path:
    """Download into ``folder`` atomically and verify; nothing is left under the final name on failure."""
    target = folder / remote.filename
    log.info("Downloading %s to %s", remote.url, target)

    def fetch(tmp: Path) -> None:
        with urllib.request.urlopen(remote.url, timeout=timeout) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
        verify(tmp, remote)

    return atomic_write(target, fetch)


def find_or_download(
    candidates: Iterable[Path],
    remote: RemoteFile | None,
    what: str,
    allow_download: bool = True,
) -> Path:
    """Return the first existing candidate, else download ``remote`` next to the first candidate.

    The error when neither works names every path looked at, the URL and the env var,
    because that is all a user needs to fix it.
    """
    candidates = [Path(c) for c in candidates]
    for path in candidates:
        if path.exists():
            return path
    reason = ""
    if remote is not None and allow_download:
        try:
            return download(remote, candidates[0].parent)
        except (OSError, DataFormatError) as exc:  # URLError is an OSError
            reason = f" Download of {remote.url} failed: {exc}."
    looked = ", ".join(str(p) for p in candidates)
    source = f" Get it from {remote.url} and put it at {candidates[0]}" if remote else ""
    raise DataNotFoundError(
        f"{what} not found. Looked for: {looked}.{reason}{source} "
        f"({data_dir_hint()}; data folder now: {candidates[0].parent.parent})."
    )


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``$RNNLAB_DATA_DIR`` when the config leaves the folder unset, else the configured folder."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(DATA_DIR_ENV, "data")
    return Path(data_dir).expanduser().resolve()
