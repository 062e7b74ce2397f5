"""Padded batches without packing: which steps are real, and each row reversed within its own length.

Every model reads ``[B, T]`` rows padded at the end with true ``lengths``; these two helpers are
what keep the padding out of the results (masked outputs, pooling, targets, reverse directions).
"""

from __future__ import annotations

import torch
from torch import Tensor


def step_mask(lengths: Tensor, steps: int, device: torch.device | None = None) -> Tensor:
    """``[B, T]`` True at real steps."""
    device = device if device is not None else lengths.device
    return torch.arange(steps, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each ``[B, T, ...]`` row within its own length; padding stays where it is."""
    if lengths is None:
        return x.flip(1)
    steps = torch.arange(x.size(1), device=x.device).unsqueeze(0)
    lengths = lengths.to(x.device).unsqueeze(1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))
