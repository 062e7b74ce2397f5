"""Replay a finished run (or every job of a sweep) from what its folder recorded, and compare.

A rerun composes from the run's own saved config (``.hydra/config.yaml``), not from today's
``conf/``; when today's code is not the code that made the run (another commit, or other
uncommitted changes), it runs the recorded commit with the recorded patch in a temporary
``git worktree`` (``current_code=True`` runs today's code instead). Beside the metric
comparison it lists what differs between the two runs' provenance (code, packages, processor,
threads, data checksums) and names the likely cause when the metrics differ.

A run folder is a stranger's file like any other, and a replay runs nothing it says unasked:
- its config is read as data (``runs.saved_config``): Hydra's own keys are refused, and the
  replay composes the task settings with rnnlab's own Hydra settings (``conf/hydra``), this
  machine's paths and a folder of its own; a foreign ``_target_``, resolver or place to write
  is refused unless the caller trusts the config (``--trust-config``);
- its ``provenance.patch`` is code: the files it changes are listed, and it is applied only
  when the caller trusts it (``--trust-code``).
Every job of a sweep is checked before any of them runs.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from rnnlab import numerics
from rnnlab.data.cache import default_cache_dir
from rnnlab.errors import RnnlabError
from rnnlab.runs import provenance
from rnnlab.runs.folder import (
    CONFIG,
    OVERRIDES,
    PATCH,
    PROVENANCE,
    job_dirs,
    job_number,
    read_metrics,
    read_overrides,
    read_provenance,
)
from rnnlab.runs.record import METRIC_PREFIXES
from rnnlab.runs.saved_config import overrides_refusal, refusals, replay_settings

TRAIN_MODULE = "rnnlab.cli.train"  # found through the package, installed or not
REPLAY_CONFIG = Path(".rerun") / "config.yaml"  # the composed task settings, inside the replay's folder
# the replay's Hydra settings are rnnlab's own: its conf/hydra/default.yaml, found in the package
HYDRA_DEFAULTS = [{"hydra": "default"}, "_self_"]
RNNLAB_CONF = "pkg://rnnlab.conf"
COMMIT = re.compile(
    r"[0-9a-f]{40}([0-9a-f]{24})?"
)  # a SHA-1 or SHA-256 object name, nothing git could parse as an option
FOLDER_NAME = re.compile(r"[\w.+-]+")  # how rnnlab names a sweep's job folders (cli.dir_suffix)


@dataclass
class Replay:
    """How one run is replayed: the command, and where the code it runs comes from."""

    run_dir: Path
    new_dir: Path
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    code: str = "current"  # "current" | "recorded <commit>"


@dataclass
class Outcome:
    run_dir: Path
    new_dir: Path
    old: dict[str, Any]
    new: dict[str, Any]
    differ: list[str]  # metric keys that differ
    causes: list[tuple[str, Any, Any]]  # provenance entries that differ: (what, original, rerun)

    @property
    def matches(self) -> bool:
        return not self.differ


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The run's composed config as data (YAML, read safely): a mapping of settings."""
    path = run_dir / CONFIG
    if not path.is_file():
        raise RnnlabError(f"{run_dir} has no {CONFIG}: is it a run folder made by scripts/train.py?")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise RnnlabError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(config, dict):
        raise RnnlabError(f"{path} is not a config (a mapping of settings)")
    return config


def folder_refusal(run_dir: Path, config: dict[str, Any], trust_config: bool) -> str | None:
    """One line naming the file and the key a replay will not obey, ``None`` when there is none."""
    try:
        found = [r for r in refusals(config) if not (trust_config and r.trust_lifts)]
    except (ValueError, RecursionError) as exc:
        return f"{run_dir / CONFIG}: refused: {exc}, not a config rnnlab wrote"
    if found:
        return found[0].line(run_dir / CONFIG)
    hydra_override = overrides_refusal(read_overrides(run_dir) or [])
    return hydra_override.line(run_dir / OVERRIDES) if hydra_override else None


def metric_differences(old: dict[str, Any], new: dict[str, Any], tolerance: float = 0.0) -> list[str]:
    """The metric keys whose values differ by more than ``tolerance`` (or exist on one side only)."""
    keys = sorted(k for k in set(old) | set(new) if k.startswith(METRIC_PREFIXES))
    differ = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if not isinstance(a, float) or not isinstance(b, float):
            if a != b:
                differ.append(key)
        elif not math.isclose(a, b, rel_tol=0.0, abs_tol=tolerance):
            differ.append(key)
    return differ


def _data_by_source(record: dict[str, Any]) -> dict[str, Any]:
    return {
        f"data {d.get('dataset')} {Path(str(d.get('source'))).name}": d.get("sha256") or d.get("fingerprint")
        for d in record.get("data") or []
        if isinstance(d, dict)
    }


def _environment(platform: dict[str, Any]) -> dict[str, Any]:
    """The recorded environment variables; a record from before they were kept names only OMP_NUM_THREADS."""
    if "environment" in platform:
        return platform["environment"] or {}
    threads = platform.get("omp_num_threads")
    return {"OMP_NUM_THREADS": threads} if threads is not None else {}


def provenance_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """What differs between two runs' provenance that can move a result (not times or folders)."""

    def pick(record: dict[str, Any]) -> dict[str, Any]:
        code = record.get("code") or {}
        plat = record.get("platform") or {}
        cpu = plat.get("cpu") or {}
        out = {
            "code commit": code.get("commit") or code.get("version"),
            "code uncommitted patch bytes": code.get("patch_bytes", 0) if code.get("dirty") else 0,
            **{f"package {k}": v for k, v in (record.get("packages") or {}).items()},
            "cpu": " ".join(str(cpu.get(k)) for k in ("model", "vendor", "family", "model_number") if cpu.get(k)),
            "cpu flags": ",".join(cpu.get("flags") or []),
            "torch cpu capability": plat.get("torch_cpu_capability"),
            "torch threads": plat.get("torch_threads"),
            "precision": plat.get("precision"),
            "deterministic": plat.get("deterministic"),
            "cuda": plat.get("cuda"),
            "gpus": ", ".join(plat.get("gpus") or []) or None,
            **{f"environment {k}": v for k, v in _environment(plat).items()},
        }
        return {**out, **_data_by_source(record)}

    a, b = pick(old), pick(new)
    found = [(key, a.get(key), b.get(key)) for key in dict.fromkeys([*a, *b]) if a.get(key) != b.get(key)]
    return found + numerics.differences(old, new)


def likely_cause(causes: list[tuple[str, Any, Any]]) -> str | None:
    """The difference that most plausibly moved the metrics, in the order data, code, machine, packages."""
    groups = [
        ("the data file", lambda k: k.startswith("data ")),
        ("the code", lambda k: k.startswith("code ")),
        ("the numeric code paths (numerics=...)", lambda k: k.startswith("numerics ")),
        ("the processor / instruction set (other CPU kernels)", lambda k: k.startswith(("cpu", "torch cpu"))),
        ("the thread count", lambda k: k == "torch threads"),
        ("the environment (threads, library settings, a preloaded library)", lambda k: k.startswith("environment ")),
        ("the GPU", lambda k: k in ("cuda", "gpus")),
        ("the packages", lambda k: k.startswith("package ")),
    ]
    for name, matches in groups:
        found = [c for c in causes if matches(c[0])]
        if found:
            return f"{name} ({found[0][0]}: {found[0][1]} → {found[0][2]})"
    return None


@dataclass
class Code:
    """The code a replay runs: today's (``commit`` None), or a recorded commit with its patch on top."""

    commit: str | None = None
    patch: str = ""
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (file, lines added, lines removed)

    def describe(self, run_dir: Path) -> list[str]:
        """The files the recorded patch changes, as a reader checks them before trusting it."""
        if not self.patch:
            return []
        head = f"{run_dir / PATCH} changes {len(self.changes)} file(s) of commit {self.commit}:"
        return [head, *(f"  {name}  +{added} -{removed}" for name, added, removed in self.changes)]


def patch_changes(patch: str, repo: Path, path: Path) -> list[tuple[str, str, str]]:
    """``(file, added, removed)`` for every file a patch touches, as git reads it (``-`` for binary)."""
    proc = subprocess.run(["git", "apply", "--numstat", "-"], input=patch, text=True, capture_output=True, cwd=repo)
    if proc.returncode != 0:
        raise RnnlabError(f"{path}: not a patch git can read ({proc.stderr.strip()[:300]})")
    rows = [line.split("\t", 2) for line in proc.stdout.splitlines() if line.count("\t") >= 2]
    return [(name, added, removed) for added, removed, name in rows]


def recorded_code(record: dict[str, Any], run_dir: Path, today: dict[str, Any]) -> Code:
    """What the replay of ``run_dir`` runs: ``Code()`` when today's checkout is what made it (or none is known)."""
    code = record.get("code") or {}
    commit = code.get("commit")
    if not commit or not today.get("commit"):
        return Code()  # no commit recorded (an installed package), or no checkout to take one from
    if not isinstance(commit, str) or not COMMIT.fullmatch(commit):
        raise RnnlabError(f"{run_dir / PROVENANCE}: code.commit={commit!r} is not a git commit name")
    patch_file = run_dir / PATCH
    dirty = bool(code.get("dirty")) and patch_file.is_file()
    if dirty and patch_file.stat().st_size > provenance.MAX_PATCH_BYTES:
        raise RnnlabError(f"{patch_file} is {patch_file.stat().st_size:,} bytes: larger than any patch rnnlab records")
    patch = patch_file.read_text(encoding="utf-8", errors="replace") if dirty else ""
    if commit == today["commit"] and patch == (today.get("patch") or ""):
        return Code()
    repo = Path(today["repository"])
    if provenance._git("cat-file", "-e", f"{commit}^{{commit}}", cwd=repo) is None:
        raise RnnlabError(
            f"the run was made at commit {commit}, which this repository ({repo}) does not have: fetch it, "
            f"or rerun today's code with --current-code"
        )
    return Code(commit, patch, patch_changes(patch, repo, patch_file) if patch else [])


@contextmanager
def checkout(code: Code, run_dir: Path, repo: Path | None) -> Iterator[Path | None]:
    """A temporary worktree at the recorded commit with the recorded patch; ``None`` for today's code."""
    if code.commit is None or repo is None:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="rnnlab-replay-"))
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(folder), code.commit], cwd=repo, check=True)
    try:
        if code.patch:
            applied = subprocess.run(
                ["git", "apply", "--whitespace=nowarn", "-"], input=code.patch, text=True, cwd=folder
            )
            if applied.returncode != 0:
                raise RnnlabError(f"the recorded patch {run_dir / PATCH} does not apply to commit {code.commit}")
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=repo, capture_output=True)


def write_replay_config(settings: dict[str, Any], new_dir: Path) -> Path:
    """The replay's primary config: rnnlab's Hydra settings, its own folder, then the checked task settings."""
    folder = str(new_dir).replace("${", "\\${")  # a folder's name is never an interpolation
    hydra = {"searchpath": [RNNLAB_CONF], "run": {"dir": folder}}
    path = new_dir / REPLAY_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({"defaults": HYDRA_DEFAULTS, "hydra": hydra, **settings}, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def replay(run_dir: Path, new_dir: Path, config: Path, code: Path | None, extra: list[str]) -> Replay:
    """The command that trains the replay config ``config`` again, into ``new_dir``, with the chosen code."""
    tail = ["--config-path", str(config.parent.resolve()), "--config-name", config.stem, *extra]
    if code is None:
        return Replay(run_dir, new_dir, [sys.executable, "-m", TRAIN_MODULE, *tail])
    # the recorded code's own entry script, importing the recorded code first
    env = {"PYTHONPATH": os.pathsep.join([str(code / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    commit = (provenance._git("rev-parse", "HEAD", cwd=code) or "").strip()
    return Replay(
        run_dir, new_dir, [sys.executable, str(code / "scripts" / "train.py"), *tail], env, f"recorded {commit}"
    )


def completed_metrics(run_dir: Path) -> dict[str, Any]:
    """The metrics of a run a replay can be compared with: a completed one."""
    old = read_metrics(run_dir) or {}
    if old.get("status") != "completed":
        raise RnnlabError(f"{run_dir}/metrics.json says {old.get('status')!r}: only completed runs can be compared")
    return old


def execute(plan: Replay, tolerance: float, echo=print) -> Outcome:
    old = completed_metrics(plan.run_dir)
    echo(f"rerun ({plan.code} code): {' '.join(plan.command)}")
    proc = subprocess.run(plan.command, capture_output=True, text=True, env={**os.environ, **plan.env})
    if proc.returncode != 0:
        raise RnnlabError(f"the rerun in {plan.new_dir} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    new = read_metrics(plan.new_dir) or {}
    replayed = read_provenance(plan.new_dir)
    source = (replayed.get("code") or {}).get("source", "")
    if plan.env and not source.startswith(plan.env["PYTHONPATH"].split(os.pathsep)[0]):
        raise RnnlabError(f"the replay imported rnnlab from {source}, not from the recorded code's worktree")
    causes = provenance_differences(read_provenance(plan.run_dir), replayed)
    return Outcome(plan.run_dir, plan.new_dir, old, new, metric_differences(old, new, tolerance), causes)


def default_new_dir(run_dir: Path) -> Path:
    return run_dir.with_name(f"{run_dir.name}-rerun-{datetime.now():%Y-%m-%d_%H-%M-%S}")


def is_sweep(folder: Path) -> bool:
    return not (folder / CONFIG).is_file() and bool(job_dirs(folder))


def check_folders(
    targets: list[tuple[Path, Path]],
    configs: list[dict[str, Any]],
    today: dict[str, Any] | None,
    trust_config: bool,
    trust_code: bool,
    echo=print,
) -> tuple[list[Code], list[str]]:
    """The code each run would replay (``today`` None: today's code), and one line per thing a replay
    must not do without trust."""
    problems = [folder_refusal(job, config, trust_config) for (job, _), config in zip(targets, configs, strict=True)]
    codes = []
    for job, _ in targets:
        try:
            codes.append(Code() if today is None else recorded_code(read_provenance(job), job, today))
        except RnnlabError as exc:
            codes.append(Code())
            problems.append(str(exc))
    patched = [(job, code) for (job, _), code in zip(targets, codes, strict=True) if code.patch]
    for job, code in patched:
        for line in code.describe(job):
            echo(line)
    if patched and not trust_code:
        problems.append(
            f"refused: {len(patched)} run(s) replay a recorded patch ({patched[0][0] / PATCH}), which is code that "
            f"would run here: read it; if you trust it, pass --trust-code (or --current-code to run today's code)"
        )
    return codes, [line for line in problems if line]


def rerun(
    run_dir: Path,
    new_dir: Path | None = None,
    tolerance: float = 0.0,
    current_code: bool = False,
    trust_config: bool = False,
    extra: list[str] | None = None,
    jobs: list[int] | None = None,
    trust_code: bool = False,
    echo=print,
) -> list[Outcome]:
    """Replay one run, or the completed jobs of a sweep (``jobs``: only those numbers); one outcome per run.

    Every folder is checked, its config and the code it would run, before anything runs.
    """
    run_dir = Path(run_dir).resolve()
    new_dir = Path(new_dir).resolve() if new_dir else default_new_dir(run_dir)
    if is_sweep(run_dir):
        runs = [j for j in job_dirs(run_dir) if (read_metrics(j) or {}).get("status") == "completed"]
        runs = [j for j in runs if jobs is None or job_number(j) in jobs]
        if not runs:
            raise RnnlabError(f"{run_dir}: no completed job to rerun{f' among jobs {jobs}' if jobs else ''}")
        odd = [j for j in runs if not FOLDER_NAME.fullmatch(j.name)]
        if odd:  # the name becomes the replay's folder
            raise RnnlabError(f"{odd[0]}: refused: a job folder's name is made of [A-Za-z0-9_.+-] only")
        targets = [(j, new_dir / j.name) for j in runs]
    else:
        targets = [(run_dir, new_dir)]
    for job, _ in targets:
        completed_metrics(job)
    configs = [saved_config(job) for job, _ in targets]
    today = None if current_code else provenance.code_state()
    codes, problems = check_folders(targets, configs, today, trust_config, trust_code, echo)
    if problems:  # every refused folder of a sweep, one line each
        raise RnnlabError("\n".join(problems))
    repo = Path(today["repository"]) if today and today.get("repository") else None
    settings = [replay_settings(config, default_cache_dir()) for config in configs]
    outcomes = []
    for (job, target), setting, code in zip(targets, settings, codes, strict=True):
        with checkout(code, job, repo) as folder:
            config = write_replay_config(setting, target)
            outcomes.append(execute(replay(job, target, config, folder, list(extra or [])), tolerance, echo))
    return outcomes
