"""A run folder's saved config read as data: the task settings a replay may take from it.

``rerun.py`` replays a folder that may come from anyone. Hydra obeys much more of a config than
its ``_target_``s: a ``hydra:`` node sets where files go, the log handlers (a ``FileHandler``
or a ``()`` factory), callbacks, launcher and sweeper, environment variables of the job and
search paths; a ``defaults`` list pulls in other configs; resolvers such as ``${oc.decode:...}``
turn a string into a node (a ``_target_`` among them) after any check of the file; and the
task's own settings name where checkpoints, logs and the Optuna journal are written. So a replay
takes from the folder only what a run's task settings are, checked here, and everything else
from rnnlab:

- ``defaults`` or a ``hydra`` key: refused always (Hydra writes its settings to ``hydra.yaml``,
  never into ``config.yaml``, and a replay runs with rnnlab's own);
- a ``_target_`` outside ``runs.targets``, a resolver other than those rnnlab's task configs use,
  a place to write outside the run's own folder: refused unless the caller trusts the file;
- ``paths`` (where this machine keeps data, caches and runs), ``tune`` (the Optuna trial a job
  reported to) and ``trust_checkpoint``: never taken from the folder (``replay_settings``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlab.runs.targets import foreign_targets

HYDRA_KEYS = ("defaults", "hydra")  # what Hydra itself reads from a primary config
MAX_NODES = 100_000  # a saved config has a few hundred; YAML aliases can make a small file a huge tree
# resolvers the packaged task configs use (the rnnlab.* ones and ${now:} appear in Hydra's settings only)
RESOLVERS = frozenset({"oc.select", "hydra", "oc.env"})
ENV_PREFIX = "RNNLAB_"  # ${oc.env:...} may read rnnlab's own variables only, never a secret of the machine
RESOLVER = re.compile(r"\$\{\s*([^${}:\s]+)\s*:\s*([^,}\s]*)")
# settings whose value is a folder the run writes into, and what it must be
WRITE_FOLDERS = ("default_root_dir", "dirpath", "save_dir", "job_dir", "root_dir", "log_dir", "output_dir")
INSIDE_RUN = re.compile(r"\$\{paths\.output_dir\}(/(?!\.\.(/|$))[\w.+-]+)*")
CACHE = "${paths.cache_dir}"
# settings of a Lightning callback or logger that name a file or folder below its folder
FILE_NAMES = ("filename", "name", "version", "sub_dir", "prefix")
MACHINE_LOCAL = ("paths", "tune")  # replaced by the replay, never obeyed (paths.data_dir is read)
TRUST_HINT = "read the file; if you trust it, pass --trust-config"
TARGET_WHY = (
    "is not one of rnnlab's classes, torch optimizers/schedules, Lightning callbacks or its TensorBoard/CSV "
    "loggers, and replaying would call it"
)
HYDRA_WHY = "is a Hydra setting, which a replay takes from rnnlab, not from the folder"


@dataclass(frozen=True)
class Refusal:
    """One setting a replay will not take from a folder, and why."""

    key: str
    value: Any
    why: str
    trust_lifts: bool  # whether --trust-config accepts it

    def line(self, path: Path) -> str:
        hint = TRUST_HINT if self.trust_lifts else "rnnlab never writes one there: delete the key or the folder"
        shown = repr(self.value) if len(repr(self.value)) <= 120 else repr(self.value)[:117] + "..."
        return f"{path}: refused: {self.key}={shown} {self.why}; {hint}"


def _leaves(node: Any, path: str, budget: list[int]) -> Iterator[tuple[str, str, Any]]:
    """``(key path, key, value)`` of every value in the tree, containers and list items too (key ``""``)."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"more than {MAX_NODES:,} settings")
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            yield where, str(key), value
            yield from _leaves(value, where, budget)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield f"{path}[{i}]", "", value
            yield from _leaves(value, f"{path}[{i}]", budget)


def _resolver_refusal(where: str, text: str) -> Refusal | None:
    for name, first in RESOLVER.findall(text):
        if name not in RESOLVERS:
            return Refusal(where, text, f"uses the resolver {name!r}, which a replay does not run", True)
        if name == "oc.env" and not first.startswith(ENV_PREFIX):
            why = f"reads the environment variable {first!r}: a saved config may read {ENV_PREFIX}* only"
            return Refusal(where, text, why, True)
    return None


def _location_refusal(where: str, key: str, value: Any, in_lightning_node: bool) -> Refusal | None:
    if key == "cache_dir" and value != CACHE:
        return Refusal(where, value, f"is not {CACHE}: a replay keeps its cache where this machine does", True)
    if key in WRITE_FOLDERS and not (isinstance(value, str) and INSIDE_RUN.fullmatch(value)):
        why = "writes outside the run's own folder (a replay writes only under ${paths.output_dir})"
        return Refusal(where, value, why, True)
    escapes = isinstance(value, str) and ("/" in value or "\\" in value or value.strip() == "..")
    if in_lightning_node and key in FILE_NAMES and escapes:
        return Refusal(where, value, "names a file outside its folder", True)
    return None


def refusals(config: dict[str, Any]) -> list[Refusal]:
    """What in a saved config a replay must not obey: Hydra's keys (no trust lifts those) first, then targets."""
    hydra = [Refusal(str(k), v, HYDRA_WHY, False) for k, v in config.items() if str(k).split(".")[0] in HYDRA_KEYS]
    budget = [MAX_NODES]  # walked before the targets: it also bounds a tree of YAML aliases
    found: list[Refusal] = []
    for top, value in config.items():
        if top in MACHINE_LOCAL:
            if top == "paths" and isinstance(value, dict) and isinstance(value.get("data_dir"), str):
                found += filter(None, [_resolver_refusal("paths.data_dir", value["data_dir"])])
            continue
        lightning = {str(top)} if isinstance(value, dict) and _is_lightning(value) else set()
        for where, key, leaf in _leaves(value, str(top), budget):
            if isinstance(leaf, dict) and _is_lightning(leaf):
                lightning.add(where)
            problem = _location_refusal(where, key, leaf, where.rpartition(".")[0] in lightning)
            if problem is None and isinstance(leaf, str):
                problem = _resolver_refusal(where, leaf)
            if problem is not None:
                found.append(problem)
    targets = [Refusal(where, target, TARGET_WHY, True) for where, target in foreign_targets(config)]
    return [*hydra, *targets, *found]


def _is_lightning(node: dict[str, Any]) -> bool:
    return str(node.get("_target_", "")).startswith("lightning.")


def overrides_refusal(overrides: list[str]) -> Refusal | None:
    """A ``hydra.*`` entry in ``overrides.yaml`` (Hydra records those in ``hydra.yaml``): a crafted file."""
    for item in overrides:
        key = item.partition("=")[0].lstrip("+~")
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            return Refusal(key, item, HYDRA_WHY, False)
    return None


def replay_settings(config: dict[str, Any], cache_dir: Path) -> dict[str, Any]:
    """The task settings a replay composes: the saved ones, with this machine's paths and no trial or trust.

    ``paths.data_dir`` is kept (it is read, and ``paths.data_dir=`` on the command line wins); the
    cache is this machine's, and every run file goes under the replay's own folder.
    """
    saved_paths = config.get("paths") if isinstance(config.get("paths"), dict) else {}
    paths = {
        "data_dir": saved_paths.get("data_dir", f"${{oc.env:{ENV_PREFIX}DATA_DIR,data}}"),
        "cache_dir": str(cache_dir),
        "log_dir": "${hydra:runtime.output_dir}",
        "output_dir": "${hydra:runtime.output_dir}",
    }
    settings = {k: v for k, v in config.items() if k not in MACHINE_LOCAL}
    return {**settings, "paths": paths, "trust_checkpoint": False, "resume": False}
