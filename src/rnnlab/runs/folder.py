"""A run folder: the names of what it holds, and reading them back as data.

Run folders are handed around (a colleague's sweep, a downloaded result), so what is read back
from one is checked like any input from outside: ``metrics.json`` must be one flat JSON object,
``overrides.yaml`` a list of strings; anything else is an error that names the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from rnnlab.errors import ConfigError, RnnlabError

METRICS = "metrics.json"
OVERRIDES = Path(".hydra") / "overrides.yaml"
CONFIG = Path(".hydra") / "config.yaml"
RESOLVED_CONFIG = "config_resolved.yaml"
COMMAND = "command.txt"
PROVENANCE = "provenance.json"
PATCH = "provenance.patch"  # the uncommitted changes of the code that ran
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = Path(CHECKPOINTS) / "last.ckpt"

# overrides that say how to run a job, not what it is: resuming, continuing, bookkeeping
NOT_DEFINING = ("hydra", "resume", "ckpt_path", "trust_checkpoint", "tune")
MAX_RECORD_BYTES = 1 << 20  # a metrics.json or overrides.yaml is a few KB


def short_value(text: str) -> str:
    """An override's value as a reader wants it in a folder name or a legend: a path by its file
    name, a float a search drew (``0.006185222264775259``) to four significant digits."""
    text = str(text)
    if "/" in text:
        return text.rstrip("/").rsplit("/", 1)[-1]
    try:
        number = float(text)
    except ValueError:
        return text
    return f"{number:.4g}" if "." in text and len(text) > 8 else text


def check_output_dir(path: str | Path) -> Path:
    """Fail before training when results could not be written (read-only disk, a file in the way)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"  # one per process: DDP ranks check the same folder
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot write to the output folder {path} ({exc}); set hydra.run.dir=... (or paths.output_dir=...)"
        ) from exc
    return path


def _read_text(path: Path) -> str:
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise RnnlabError(f"{path} is {path.stat().st_size:,} bytes: not a file rnnlab wrote (they are a few KB)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RnnlabError(f"{path}: not UTF-8 text ({exc}); not a file rnnlab wrote") from exc


def _read_object(path: Path) -> dict[str, Any] | None:
    """A JSON object file rnnlab wrote, ``None`` when absent; anything else is an error naming it."""
    if not path.is_file():
        return None
    try:
        data = json.loads(_read_text(path))
    except (ValueError, RecursionError) as exc:
        raise RnnlabError(f"{path}: not valid JSON ({exc}); delete it to rerun the job") from exc
    if not isinstance(data, dict):
        raise RnnlabError(f"{path} holds a JSON {type(data).__name__}, not the object rnnlab writes")
    return data


def read_provenance(run_dir: str | Path) -> dict[str, Any]:
    """``provenance.json`` (empty when the run predates it)."""
    return _read_object(Path(run_dir) / PROVENANCE) or {}


def read_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """``metrics.json`` as one flat dict of plain values, ``None`` when the folder has none."""
    path = Path(run_dir) / METRICS
    data = _read_object(path)
    if data is None:
        return None
    nested = sorted(k for k, v in data.items() if not isinstance(v, (str, int, float, bool, type(None))))
    if nested:
        raise RnnlabError(f"{path}: {nested[0]!r} is not a plain value; metrics.json is one flat object")
    return data


def _read_yaml(path: Path) -> Any:
    """A YAML file rnnlab or Hydra wrote, read safely (no tags build anything); an error names it."""
    try:
        return yaml.safe_load(_read_text(path))
    except yaml.YAMLError as exc:
        raise RnnlabError(f"{path}: not valid YAML ({exc})") from exc


def read_resolved_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The resolved config the run recorded (``config_resolved.yaml``), ``None`` when there is none."""
    path = Path(run_dir) / RESOLVED_CONFIG
    if not path.is_file():
        return None
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise RnnlabError(f"{path} holds a YAML {type(data).__name__}, not the mapping rnnlab writes")
    return data


def read_overrides(run_dir: str | Path) -> list[str] | None:
    """The command-line overrides the run was made with (Hydra's record), ``None`` when there is none."""
    path = Path(run_dir) / OVERRIDES
    if not path.is_file():
        return None
    data = _read_yaml(path)
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(o, str) for o in data):
        raise RnnlabError(f"{path} is not a list of key=value strings, as Hydra writes it")
    return data


def flat_settings(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A resolved config as ``{"model.encoder.hidden_size": 512, ...}``: plain values, others as text,
    ``None`` as ``"null"`` (what TensorBoard's hyper-parameters take, and what resume compares)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flat_settings(value, f"{prefix}{key}."))
        return out
    value = tree if isinstance(tree, (int, float, str, bool)) or tree is None else str(tree)
    return {prefix[:-1]: "null" if value is None else value}


def job_number(job_dir: Path) -> int | None:
    """The job's number in its multirun (folders are ``<num>`` or ``<num>_<overrides>``)."""
    head = job_dir.name.partition("_")[0]
    return int(head) if head.isdigit() else None


def job_id(job_dir: Path) -> str:
    """How a report names a job: its number (its overrides have columns of their own), else the folder."""
    number = job_number(job_dir)
    return job_dir.name if number is None else str(number)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """A multirun's job folders (those Hydra wrote a ``.hydra/`` into), in job order."""
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    return sorted(jobs, key=lambda p: (job_number(p) is None, job_number(p) or 0, p.name))


def override_key(override: str) -> str:
    """``+model.x=1`` → ``model.x``; ``model/cell=gru`` → ``model/cell``."""
    return override.lstrip("+~").partition("=")[0]


def defining_overrides(overrides: list[str]) -> list[str]:
    """The overrides that decide what a run is, in their order (not how it was launched or resumed)."""
    return [o for o in overrides if override_key(o).split(".")[0].split("/")[0] not in NOT_DEFINING]
