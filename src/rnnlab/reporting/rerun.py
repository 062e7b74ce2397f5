"""Replay a finished run (or every job of a sweep) from what its folder recorded, and compare.

A rerun composes from the run's own saved config (``.hydra/config.yaml``), not from today's
``conf/``; when today's code is not the code that made the run (another commit, or other
uncommitted changes), it runs the recorded commit with the recorded patch in a temporary
``git worktree`` (``current_code=True`` runs today's code instead). Beside the metric
comparison it lists what differs between the two runs' provenance (code, packages, processor,
threads, data checksums) and names the likely cause when the metrics differ.

The saved config is a stranger's file like any other: it is refused when it names a
``_target_`` outside rnnlab's classes and the optimizer/callback/logger families
(``runs.targets``), unless the caller trusts it.
"""

from __future__ import annotations

import math
import os
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
from rnnlab.errors import RnnlabError
from rnnlab.runs import provenance
from rnnlab.runs.folder import CONFIG, PATCH, job_dirs, job_number, read_metrics, read_provenance
from rnnlab.runs.record import METRIC_PREFIXES
from rnnlab.runs.targets import foreign_targets

TRAIN_MODULE = "rnnlab.cli.train"  # found through the package, installed or not


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


def saved_config(run_dir: Path, trust: bool) -> Path:
    """The run's composed config, checked for targets a rerun must not call."""
    path = run_dir / CONFIG
    if not path.is_file():
        raise RnnlabError(f"{run_dir} has no {CONFIG}: is it a run folder made by scripts/train.py?")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RnnlabError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(config, dict):
        raise RnnlabError(f"{path} is not a config (a mapping of settings)")
    foreign = foreign_targets(config)
    if foreign and not trust:
        where, target = foreign[0]
        raise RnnlabError(
            f"{path}: refused: {where}={target!r} is not one of rnnlab's classes, torch optimizers or Lightning "
            f"callbacks/loggers, and rerunning would call it. Read the file; if you trust it, pass --trust-config"
        )
    return path


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


@contextmanager
def recorded_code(record: dict[str, Any], run_dir: Path) -> Iterator[Path | None]:
    """A temporary worktree at the recorded commit with the recorded patch; ``None`` when today's code is it."""
    code = record.get("code") or {}
    commit = code.get("commit")
    today = provenance.code_state()
    if not commit or not today.get("commit"):
        yield None  # no commit recorded (an installed package), or no checkout to take one from
        return
    recorded_patch = (run_dir / PATCH).read_text() if code.get("dirty") and (run_dir / PATCH).is_file() else ""
    if commit == today["commit"] and recorded_patch == (today.get("patch") or ""):
        yield None
        return
    repo = Path(today["repository"])
    if provenance._git("cat-file", "-e", f"{commit}^{{commit}}", cwd=repo) is None:
        raise RnnlabError(
            f"the run was made at commit {commit}, which this repository ({repo}) does not have: fetch it, "
            f"or rerun today's code with --current-code"
        )
    folder = Path(tempfile.mkdtemp(prefix="rnnlab-replay-"))
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(folder), commit], cwd=repo, check=True)
    try:
        if recorded_patch:
            applied = subprocess.run(
                ["git", "apply", "--whitespace=nowarn", "-"], input=recorded_patch, text=True, cwd=folder
            )
            if applied.returncode != 0:
                raise RnnlabError(f"the recorded patch {run_dir / PATCH} does not apply to commit {commit}")
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=repo, capture_output=True)


def replay(run_dir: Path, new_dir: Path, config: Path, code: Path | None, extra: list[str]) -> Replay:
    """The command that trains the saved config again, into ``new_dir``, with the chosen code."""
    compose = ["--config-path", str(config.parent.resolve()), "--config-name", config.stem]
    tail = [*compose, f"hydra.run.dir={new_dir}", *extra]
    if code is None:
        return Replay(run_dir, new_dir, [sys.executable, "-m", TRAIN_MODULE, *tail])
    # the recorded code's own entry script, importing the recorded code first
    env = {"PYTHONPATH": os.pathsep.join([str(code / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    commit = (provenance._git("rev-parse", "HEAD", cwd=code) or "").strip()
    return Replay(
        run_dir, new_dir, [sys.executable, str(code / "scripts" / "train.py"), *tail], env, f"recorded {commit}"
    )


def execute(plan: Replay, tolerance: float, echo=print) -> Outcome:
    old = read_metrics(plan.run_dir) or {}
    if old.get("status") != "completed":
        raise RnnlabError(
            f"{plan.run_dir}/metrics.json says {old.get('status')!r}: only completed runs can be compared"
        )
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


def rerun(
    run_dir: Path,
    new_dir: Path | None = None,
    tolerance: float = 0.0,
    current_code: bool = False,
    trust_config: bool = False,
    extra: list[str] | None = None,
    jobs: list[int] | None = None,
    echo=print,
) -> list[Outcome]:
    """Replay one run, or the completed jobs of a sweep (``jobs``: only those numbers); one outcome per run."""
    run_dir = Path(run_dir).resolve()
    new_dir = Path(new_dir).resolve() if new_dir else default_new_dir(run_dir)
    if is_sweep(run_dir):
        runs = [j for j in job_dirs(run_dir) if (read_metrics(j) or {}).get("status") == "completed"]
        runs = [j for j in runs if jobs is None or job_number(j) in jobs]
        if not runs:
            raise RnnlabError(f"{run_dir}: no completed job to rerun{f' among jobs {jobs}' if jobs else ''}")
        targets = [(j, new_dir / j.name) for j in runs]
    else:
        targets = [(run_dir, new_dir)]
    configs = [saved_config(job, trust_config) for job, _ in targets]
    outcomes = []
    for (job, target), config in zip(targets, configs, strict=True):
        record = {} if current_code else read_provenance(job)
        with recorded_code(record, job) as code:
            outcomes.append(execute(replay(job, target, config, code, list(extra or [])), tolerance, echo))
    return outcomes
