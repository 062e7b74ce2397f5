"""Learning-rate schedules sized in optimizer steps, and how a run's step count reaches them.

A config cannot know how many optimizer steps a run will take (it depends on the data,
the batch size, the devices and gradient accumulation), so a schedule that needs it
declares a ``total_steps`` parameter and the module fills it in from the trainer.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from rnnlab.errors import ConfigError


def slanted_triangular(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.1, ratio: float = 32.0
) -> LambdaLR:
    """ULMFiT's slanted triangular rates (Howard & Ruder 2018): a short linear rise, then a long linear fall.

    Each group's rate climbs from ``lr / ratio`` to its configured ``lr`` over the first
    ``warmup_fraction`` of the steps and returns to ``lr / ratio`` by the last one: the short
    rise lets a pretrained encoder and a fresh head settle before large steps, the long decay
    refines. Multiplying each group's own rate keeps per-group scales (``encoder_lr_scale``).
    """
    if total_steps < 1 or not 0.0 < warmup_fraction < 1.0 or ratio < 1.0:
        raise ConfigError(
            f"slanted_triangular needs total_steps >= 1, 0 < warmup_fraction < 1 and ratio >= 1; "
            f"got total_steps={total_steps}, warmup_fraction={warmup_fraction}, ratio={ratio}"
        )
    cut = max(math.floor(total_steps * warmup_fraction), 1)
    decay = max(total_steps - cut, 1)

    def factor(step: int) -> float:
        progress = step / cut if step < cut else max(1.0 - (step - cut) / decay, 0.0)
        return (1.0 + progress * (ratio - 1.0)) / ratio

    return LambdaLR(optimizer, factor)


def wants_total_steps(factory: Callable[..., Any]) -> bool:
    """True when the scheduler factory takes ``total_steps`` and the config left it open."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "total_steps" in parameters and "total_steps" not in getattr(factory, "keywords", {})
