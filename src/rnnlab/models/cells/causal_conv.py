"""The input branch Mamba and the mLSTM open with: one projection to two branches, then a causal depthwise
convolution over a window and the inputs carried from the window before it."""

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


def project_and_convolve(
    linear: nn.Linear, conv: nn.Conv1d, x: Tensor, history: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``x`` ``[B, T, H]`` projected by ``linear`` (under whatever autocast runs outside) into the branches
    ``u`` and ``z``, then ``SiLU(conv(u))`` in float32: ``(u, z, conv_u, next history)``."""
    projected = linear(x)
    with torch.autocast(x.device.type, enabled=False):
        u, z = projected.float().chunk(2, dim=-1)
        convolved, history = causal_conv_silu(conv, history, u)
    return u, z, convolved, history
