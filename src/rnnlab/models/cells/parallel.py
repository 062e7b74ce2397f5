"""What a parallel-scan cell is: gates from the input alone, one linear recurrence, a readout.

A cell computes ``a_t, b_t`` from ``x_t`` only, so ``h_t = a_t h_{t-1} + b_t`` runs as a scan over the
whole sequence (training) or one step from a state (generation, carried state); ``y_t`` is read from
``h_t`` (and ``x_t``). Both paths run in float32 with autocast off: a scan multiplies many gates, which
bfloat16's 8-bit mantissa cannot carry. The input projection before it may run in low precision.

Padding and reversal: every step depends on the steps before it only, so padding at the end of a row
is never read by its real steps and needs no mask (the encoder zeroes padded outputs); a reverse
direction is the same cell on each row reversed within its own length (``reverse_padded``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.models.cells import scan as scans


def g(x: Tensor) -> Tensor:
    """Feng et al.'s positive activation for the candidate state: ``x + 1/2`` above 0, ``sigmoid(x)`` below.

    Written as ``σ(min(x, 0)) + max(x, 0)`` (equal everywhere, ``σ(0) = 1/2``): a ``where`` over a
    boolean mask runs several times slower than these float passes on a CPU.
    """
    return torch.sigmoid(x.clamp(max=0)) + x.clamp(min=0)


def log_g(x: Tensor) -> Tensor:
    """``log g(x)`` without forming ``g``: ``log(x + 1/2)`` above 0, ``-softplus(-x)`` below."""
    return torch.where(x >= 0, (F.relu(x) + 0.5).log(), -F.softplus(-x))


class ParallelCell(nn.Module):
    """Base of minGRU, minLSTM and LRU: subclasses give ``gates``, ``log_gates`` (if ``b > 0``) and ``readout``."""

    complex_valued = False

    def __init__(self, input_size: int, hidden_size: int, scan: str = "auto"):
        super().__init__()
        if scan not in scans.SCANS:
            raise ValueError(f"scan={scan!r}; allowed: {', '.join(scans.SCANS)}")
        self.input_size, self.hidden_size, self.scan = input_size, hidden_size, scan

    # ---- what a cell defines
    def project(self, x: Tensor) -> Tensor:
        """The input's linear map (may run under autocast); ``gates`` reads its float32 result."""
        raise NotImplementedError

    def gates(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def log_gates(self, projected: Tensor) -> tuple[Tensor, Tensor] | None:
        """``log a, log b`` where ``b`` is positive (the log-space scan); ``None`` where it is not."""
        return None

    def readout(self, h: Tensor, x: Tensor) -> Tensor:
        return h

    # ---- shared
    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Outputs ``[B, T, H]`` (float32) and the state after the last step."""
        projected = self.project(x)
        with torch.autocast(x.device.type, enabled=False):
            projected, x = projected.float(), x.float()
            h0 = None if h0 is None else (h0 if h0.is_complex() else h0.float())
            h = self._scan(projected, h0)
            return self.readout(h, x), h[:, -1]

    def step(self, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One step: ``x`` ``[B, E]`` and the state before it → output ``[B, H]`` and the state after."""
        projected = self.project(x)
        with torch.autocast(x.device.type, enabled=False):
            projected, x = projected.float(), x.float()
            a, b = self.gates(projected)
            h = scans.step(a, b, h)
            return self.readout(h, x), h

    def _scan(self, projected: Tensor, h0: Tensor | None) -> Tensor:
        log_form = type(self).log_gates is not ParallelCell.log_gates  # a cell with log gates has one
        how = scans.resolve_scan(self.scan, projected.device, log_form)
        if how == "log":
            logs = self.log_gates(projected)
            if logs is not None and (h0 is None or bool((h0 > 0).all())):
                return scans.log_scan(*logs, None if h0 is None else h0.log())
            how = "linear"  # no positive b (LRU) or a state the log cannot hold: the same numbers step by step
        a, b = self.gates(projected)
        if how == "associative":
            return scans.associative_scan(a, b, h0)
        if how == "accelerated":
            return scans.accelerated_scan(a, b, h0)
        return scans.linear_scan(a, b, h0)
