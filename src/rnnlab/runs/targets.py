"""Which ``_target_`` a config from outside may name.

A Hydra config can name any importable callable as a ``_target_``, and building the run calls
it: a run folder handed over by someone else (``rerun.py``) is therefore code, not data, unless
its targets are checked. Allowed are rnnlab's own classes (by exact name: an rnnlab function
with the wrong arguments can load a pickle), and the families a user swaps in on purpose:
torch optimizers and schedules, Lightning callbacks and loggers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rnnlab.runs.checkpoints import DATAMODULES, MODULES

TRAINING_TARGETS = (
    "callbacks.NonFiniteLossGuard",
    "callbacks.CheckpointOnInterrupt",
    "throughput.TrainingThroughput",
    "weight_average.WeightAverage",
    "ddp.JobDDPStrategy",
    "ddp.ForkDDPStrategy",
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
FAMILIES = ("torch.optim.", "lightning.pytorch.callbacks.", "lightning.pytorch.loggers.")
LIGHTNING_TARGETS = frozenset({"lightning.pytorch.Trainer"})


def is_allowed(target: str) -> bool:
    if target in RNNLAB_TARGETS or target in LIGHTNING_TARGETS:
        return True
    # a family's public names only: no private module or attribute reached through it
    return target.startswith(FAMILIES) and not any(part.startswith("_") for part in target.split("."))


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
