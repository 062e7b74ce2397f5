"""The causal depthwise convolution that Mamba and the mLSTM put before their recurrence, over a window
and the inputs carried from the window before it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def causal_conv_silu(conv: nn.Conv1d, history: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """``SiLU(conv)`` at every step of ``u`` ``[B, T, D]``, each reading the ``conv_width − 1`` inputs before it
    (``history`` ``[B, conv_width − 1, D]`` first), and the last ``conv_width − 1`` inputs: the next history."""
    seen = torch.cat([history, u], dim=1)  # [B, conv_width − 1 + T, D]: what the convolution reads
    out = F.silu(F.conv1d(seen.transpose(1, 2), conv.weight, conv.bias, groups=conv.groups)).transpose(1, 2)
    return out, seen[:, seen.size(1) - (conv.kernel_size[0] - 1) :]
