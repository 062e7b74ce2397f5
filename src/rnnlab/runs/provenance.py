"""What made a run: the code, the packages, the machine and the data, recorded beside its results.

A figure can only be trusted, or rerun, if the folder that holds it says which code
(commit, branch and the uncommitted diff), which packages, which processor and thread
count (oneDNN and MKL pick other kernels on another instruction set, and results move with
them) and which data files (by sha256) produced it. ``provenance.json`` is written when a
run starts, completed when its data is known and when it ends, always atomically; the
same record travels in every checkpoint.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import rnnlab
from rnnlab import numerics

PACKAGES = ("rnnlab", "torch", "lightning", "hydra-core", "omegaconf", "torchmetrics", "numpy", "pandas", "optuna")
# the instruction-set extensions that decide which CPU kernels oneDNN / MKL / ATen run
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")
MAX_PATCH_BYTES = 8 << 20  # a diff larger than this is not a code change but data in the tree
SOURCE = Path(rnnlab.__file__).resolve().parent


def _git(*args: str, cwd: Path = SOURCE) -> str | None:
    """A git command's output in the source checkout, ``None`` when git or the checkout is absent."""
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


# what the results pipeline writes into the checkout while it trains (scripts/results.py run records each
# seed as it ends): outputs of runs, not code, so the next seed of a row is not made "dirty" by the last
NOT_CODE = (":(exclude)docs/results/runs",)


def uncommitted_patch(top: Path) -> str:
    """Every uncommitted change as one patch ``git apply`` takes: tracked edits, then new untracked files
    (the published results' records left out: ``NOT_CODE``)."""
    patch = _git("diff", "--binary", "HEAD", "--", ".", *NOT_CODE, cwd=top) or ""
    untracked = _git("ls-files", "--others", "--exclude-standard", "-z", "--", ".", *NOT_CODE, cwd=top) or ""
    for name in untracked.split("\0"):
        if name:  # --no-index exits 1 when the files differ, which they always do: read its output anyway
            proc = subprocess.run(
                ["git", "diff", "--binary", "--no-index", "--", "/dev/null", name],
                cwd=top,
                capture_output=True,
                text=True,
            )
            patch += proc.stdout
    return patch


def code_state() -> dict[str, Any]:
    """The commit, branch and dirtiness of the checkout rnnlab runs from; its version when installed."""
    top = _git("rev-parse", "--show-toplevel")
    state: dict[str, Any] = {"version": rnnlab.__version__, "source": str(SOURCE)}
    if top is None:
        return {**state, "commit": None, "note": "not a git checkout: the package version stands for the code"}
    top_path = Path(top.strip())
    patch = uncommitted_patch(top_path)
    return {
        **state,
        "repository": str(top_path),
        "commit": (_git("rev-parse", "HEAD", cwd=top_path) or "").strip() or None,
        "branch": (_git("rev-parse", "--abbrev-ref", "HEAD", cwd=top_path) or "").strip() or None,
        "dirty": bool(patch),
        "patch": patch if len(patch.encode()) <= MAX_PATCH_BYTES else None,
        "patch_bytes": len(patch.encode()),
    }


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_description() -> dict[str, Any]:
    """Processor model (with vendor, family and model number: virtual machines often hide the name)
    and the instruction-set flags that change which kernels run."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())  # the first processor's entries
    except OSError:  # not Linux: what platform says is what there is
        pass
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return {
        "model": info.get("model name") or info.get("Model") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id"),
        "family": info.get("cpu family"),
        "model_number": info.get("model"),
        "flags": sorted(f for f in CPU_FLAGS if f in flags),
        "cores": os.cpu_count(),
    }


# Settings taken from the environment, not the config, that change a run's numbers or its speed: the
# thread counts, the caps on the CPU kernels (``rnnlab.numerics``), cuBLAS's workspace (deterministic
# GPU runs) and a preloaded library such as another memory allocator.
NUMERICS_ENVIRONMENT = (*numerics.VARIABLES, "CUBLAS_WORKSPACE_CONFIG", "LD_PRELOAD")


def numerics_environment() -> dict[str, str]:
    """The variables of ``NUMERICS_ENVIRONMENT`` this process was started with."""
    return {name: os.environ[name] for name in NUMERICS_ENVIRONMENT if name in os.environ}


def platform_state(
    precision: str | None = None, deterministic: bool | None = None, requested: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The machine and how it computes; ``requested`` is the config's ``numerics`` node."""
    state: dict[str, Any] = {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "cpu": cpu_description(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "environment": numerics_environment(),
        "numerics": numerics.in_effect(numerics.NumericsSettings.from_config(requested)),
        "precision": precision,
        "deterministic": deterministic,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
    if torch.cuda.is_available():
        state["cudnn"] = torch.backends.cudnn.version()
        state["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return state


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def collect(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record a run writes when it starts (data and end time are added later)."""
    trainer = (config or {}).get("trainer") or {}
    return {
        "started": now(),
        "command": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "code": code_state(),
        "packages": package_versions(),
        "platform": platform_state(
            trainer.get("precision"), trainer.get("deterministic"), (config or {}).get("numerics")
        ),
        "data": [],
    }
