"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): gates from the input alone.

minGRU:  z = σ(k),  h = (1 − z) ⊙ h_{t−1} + z ⊙ g(c)            with [k, c] = W x + b
minLSTM: f = σ(k_f), i = σ(k_i), f' = f / (f + i), i' = i / (f + i),
         h = f' ⊙ h_{t−1} + i' ⊙ g(c)                              with [k_f, k_i, c] = W x + b

``g`` keeps the candidate positive, so the log-space scan (Heinsen 2023) applies; its logs are
written from softplus directly (``log σ(k) = −softplus(−k)``), never through ``log`` of a gate.
minLSTM's normalised gates in log space: with ``d = softplus(−k_f) − softplus(−k_i)``,
``log f' = −softplus(d)`` and ``log i' = −softplus(−d)``; in linear space ``f' = σ(−d)``, ``i' = σ(d)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.models.cells.parallel import ParallelCell, g, log_g


class _MinGRUGates(torch.autograd.Function):
    """``a = 1 − σ(k)``, ``b = σ(k) g(c)`` from ``[k, c]``, with the derivatives written out.

    Autograd would keep a graph of a dozen elementwise nodes; here the forward saves ``σ(k)`` and
    ``g(c)`` and the backward reads only them. ``g'(c)``: with ``t = min(g(c), 1/2)`` (``σ(c)`` below 0,
    ``1/2`` above) and ``g(c) − t = max(c, 0)``, ``g'(c) = t(1 − t) + 3/4 sign(max(c, 0))`` — 1 above 0,
    ``σ'(c)`` below — in float passes only (no boolean mask, which is slow on a CPU).
    """

    @staticmethod
    def forward(ctx, k: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        update = torch.sigmoid(k)
        candidate = g(c)
        ctx.save_for_backward(update, candidate)
        return 1 - update, update * candidate

    @staticmethod
    def backward(ctx, grad_a: Tensor, grad_b: Tensor) -> tuple[Tensor, Tensor]:
        update, candidate = ctx.saved_tensors
        # dL/dk = (dL/db g(c) − dL/da) σ(k)(1 − σ(k))
        grad_k = torch.addcmul(grad_a, grad_b, candidate, value=-1)
        grad_k.mul_(update).mul_(update - 1)
        # dL/dc = dL/db σ(k) g'(c)
        below = candidate.clamp(max=0.5)
        slope = (candidate - below).sign_().mul_(0.75).add_(below).sub_(below * below)
        grad_c = torch.mul(grad_b, update).mul_(slope)
        return grad_k, grad_c


class _GatesFromInput(ParallelCell):
    """A cell whose gate pre-activations are one linear map of the input: ``parts`` blocks of ``hidden_size``."""

    parts = 0

    def __init__(self, input_size: int, hidden_size: int, scan: str = "auto"):
        super().__init__(input_size, hidden_size, scan)
        self.linear = nn.Linear(input_size, self.parts * hidden_size)

    def project(self, x: Tensor) -> Tensor:
        return self.linear(x)


class MinGRU(_GatesFromInput):
    parts = 2  # [k, c]

    def gates(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        k, c = projected.chunk(2, dim=-1)
        return _MinGRUGates.apply(k, c)

    def log_gates(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        k, c = projected.chunk(2, dim=-1)
        return -F.softplus(k), -F.softplus(-k) + log_g(c)


class MinLSTM(_GatesFromInput):
    parts = 3  # [k_forget, k_input, c]

    @staticmethod
    def _gap(k_forget: Tensor, k_input: Tensor) -> Tensor:
        """``d = log i − log f``: the normalised gates are ``σ(−d)`` and ``σ(d)``."""
        return F.softplus(-k_forget) - F.softplus(-k_input)

    def gates(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        k_forget, k_input, c = projected.chunk(3, dim=-1)
        gap = self._gap(k_forget, k_input)
        return torch.sigmoid(-gap), torch.sigmoid(gap) * g(c)

    def log_gates(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        k_forget, k_input, c = projected.chunk(3, dim=-1)
        gap = self._gap(k_forget, k_input)
        return -F.softplus(gap), -F.softplus(-gap) + log_g(c)
