"""Find a dataset file in the data folder, download it when a network allows, else say what to do.

The project never depends on a particular machine's layout: data lives in
``$RNNLAB_DATA_DIR`` or ``paths.data_dir`` as ``<data_dir>/<dataset>/<file>``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pooch

from rnnlab.errors import DataFormatError, DataNotFoundError

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


def download(remote: RemoteFile, folder: Path) -> Path:
    """Download with a progress bar, verified by its digest, moved into place only once whole.

    pooch downloads into a temporary file beside the target and renames it; a digest that does
    not match deletes the download, and a partial file is never left under the final name, so a
    second try starts clean.
    """
    log.info("Downloading %s to %s", remote.url, folder / remote.filename)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return Path(
            pooch.retrieve(
                remote.url,
                known_hash=f"md5:{remote.md5}" if remote.md5 else None,
                fname=remote.filename,
                path=folder,
                progressbar=sys.stderr.isatty(),
            )
        )
    except ValueError as exc:  # pooch's digest mismatch (the download is already deleted)
        raise DataFormatError(
            f"{remote.url}: {exc} The download is truncated or corrupt: try again, or fetch the file by hand."
        ) from exc
    finally:
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a failed download leaves no empty folder behind


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
        except (OSError, DataFormatError) as exc:  # requests' errors are OSErrors
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
