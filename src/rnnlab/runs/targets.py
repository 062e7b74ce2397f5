"""Which ``_target_`` a config from outside may name.

A Hydra config can name any importable callable as a ``_target_``, and building the run calls
it: a run folder handed over by someone else (``rerun.py``) is therefore code, not data, unless
its targets are checked. Allowed are rnnlab's own classes (by exact name: an rnnlab function
with the wrong arguments can load a pickle), and the families a user swaps in on purpose:
torch optimizers and schedules, Lightning callbacks, and the loggers that write local files.

A family member is checked by what the name resolves to, not by how it starts: a dotted path
can walk through a module's imports (``lightning.pytorch.callbacks.model_checkpoint.os.system``
starts like a callback and is ``os.system``), so the name must be a module path followed by one
class, and that class must be a subclass of the family's base defined inside the family.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rnnlab.runs.checkpoints import DATAMODULES, MODULES

TRAINING_TARGETS = (
    "callbacks.NonFiniteLossGuard",
    "callbacks.CheckpointOnInterrupt",
    "throughput.TrainingThroughput",
    "weight_average.WeightAverage",
    "ddp.JobDDPStrategy",
    "ddp.ForkDDPStrategy",
    "requeue.RequeueOnSignal",
)
RNNLAB_TARGETS = frozenset(
    {
        *MODULES,
        *DATAMODULES,
        *(f"rnnlab.training.{name}" for name in TRAINING_TARGETS),
        # the same classes as a run folder made before rnnlab.training names them: rerun.py replays such a
        # folder at its own commit, where they lived in the package root
        *(f"rnnlab.{name}" for name in TRAINING_TARGETS),
        "rnnlab.models.schedules.slanted_triangular",
    }
)
LIGHTNING_TARGETS = frozenset({"lightning.pytorch.Trainer"})
# loggers that write only under their save_dir (the others send the run to a service)
LOGGERS = frozenset({"lightning.pytorch.loggers.TensorBoardLogger", "lightning.pytorch.loggers.CSVLogger"})


@dataclass(frozen=True)
class Family:
    prefix: str  # the package its members are named and defined in, with the trailing dot
    bases: tuple[str, ...]  # "module:Class" of the classes a member must derive from

    def admits(self, cls: type) -> bool:
        bases = tuple(getattr(importlib.import_module(m), c) for m, c in (b.split(":") for b in self.bases))
        return issubclass(cls, bases) and f"{cls.__module__}.".startswith(self.prefix)


FAMILIES = (
    Family("torch.optim.", ("torch.optim:Optimizer", "torch.optim.lr_scheduler:LRScheduler")),
    Family("lightning.pytorch.callbacks.", ("lightning.pytorch.callbacks:Callback",)),
)


def _located_class(target: str) -> type | None:
    """The class ``target`` names when it is ``<module path>.<Class>`` with no step through an import."""
    module_name, _, name = target.rpartition(".")
    try:
        importlib.import_module(module_name)
    except ImportError:
        return None
    module = sys.modules.get(module_name)
    if module is None or module.__name__ != module_name:  # an alias reached through another module
        return None
    found = getattr(module, name, None)
    return found if isinstance(found, type) else None


def is_allowed(target: str) -> bool:
    if target in RNNLAB_TARGETS or target in LIGHTNING_TARGETS or target in LOGGERS:
        return True
    family = next((f for f in FAMILIES if target.startswith(f.prefix)), None)
    parts = target.split(".")
    if family is None or not all(p.isidentifier() and not p.startswith("_") for p in parts):
        return False  # a family's public names only: no private module, no interpolation
    cls = _located_class(target)
    return cls is not None and family.admits(cls)


def targets(config: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``_target_`` in a config tree, with the key path that holds it."""
    if isinstance(config, dict):
        for key, value in config.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield where, value
            else:
                yield from targets(value, where)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            yield from targets(value, f"{path}[{i}]")


def foreign_targets(config: Any) -> list[tuple[str, Any]]:
    """The ``(key path, target)`` pairs a config names that are not allowed."""
    return [(where, t) for where, t in targets(config) if not (isinstance(t, str) and is_allowed(t))]
