"""Mamba's selective scan, chunk by chunk, without a ``[B, T, D, N]`` tensor.

    h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t u_t) ⊗ B_t,    y_t = h_t C_t        (h_t: [D, N] a row)

Written out (``exp(Δ A)``, ``(Δ u) ⊗ B``, then the scan and ``h C``) every step's gates and state are
``[B, T, D, N]`` tensors, ``N`` times the size of the layer's input and output, and their products and
broadcasts, forward and backward, stream them through memory a dozen times: on a CPU that, not the
recurrence, is what a Mamba layer spends its time on. Here time is cut into chunks of ``CHUNK`` steps;
a chunk's gates and states are made, used and dropped while they are still in cache, and only the state
at the start of each chunk is kept for the backward pass, which makes the chunk's gates and states again
(one forward more) and runs the recurrence's adjoint back through it:

    G_t = ∂L/∂h_t = (∂L/∂y_t) ⊗ C_t + exp(Δ_{t+1} A) ⊙ G_{t+1}

from which every input's gradient is a reduction over ``D`` or ``N`` of the chunk. The figures equal the
written-out form's to float32 rounding (tests/test_cells.py); memory is ``[B, T / CHUNK, D, N]`` for the
saved states beside the ``[B, T, D]`` and ``[B, T, N]`` inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.models.cells.scan import adjoint, recurrence

CHUNK = 8  # steps a chunk: its [B, CHUNK, D, N] gates and states stay in cache at the sizes a CPU trains


def gates(dt: Tensor, rate: Tensor, bu: Tensor, b_in: Tensor) -> tuple[Tensor, Tensor]:
    """``a = exp(Δ A)`` and ``b = (Δ u) ⊗ B`` ``[..., D, N]``: a step's, a chunk's, or every step's."""
    return torch.exp(dt.unsqueeze(-1) * rate), bu.unsqueeze(-1) * b_in.unsqueeze(-2)


def _chunks(steps: int) -> list[tuple[int, int]]:
    return [(s, min(s + CHUNK, steps)) for s in range(0, steps, CHUNK)]


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dt: Tensor, rate: Tensor, bu: Tensor, b_in: Tensor, c: Tensor, h0: Tensor):
        y = torch.empty_like(bu)
        starts, h = [], h0
        for s, e in _chunks(dt.size(1)):
            starts.append(h)
            states = recurrence(*gates(dt[:, s:e], rate, bu[:, s:e], b_in[:, s:e]), h)
            torch.sum(states * c[:, s:e].unsqueeze(-2), dim=-1, out=y[:, s:e])
            h = states[:, -1].clone()
        ctx.save_for_backward(dt, rate, bu, b_in, c, torch.stack(starts, dim=1))
        return y, h

    @staticmethod
    def backward(ctx, grad_y: Tensor, grad_last: Tensor | None):
        dt, rate, bu, b_in, c, starts = ctx.saved_tensors
        grad_dt, grad_bu = torch.empty_like(dt), torch.empty_like(bu)
        grad_b_in, grad_c = torch.empty_like(b_in), torch.empty_like(c)
        grad_rate = torch.zeros_like(rate)
        # ∂L/∂h at the last step of the chunk, from the steps after it (and from the returned state)
        carried = torch.zeros_like(starts[:, 0]) if grad_last is None else grad_last.clone()
        chunks = _chunks(dt.size(1))
        for i in range(len(chunks) - 1, -1, -1):
            s, e = chunks[i]
            a, b = gates(dt[:, s:e], rate, bu[:, s:e], b_in[:, s:e])
            start = starts[:, i]
            states = recurrence(a, b, start)
            gy = grad_y[:, s:e]
            torch.sum(states * gy.unsqueeze(-1), dim=2, out=grad_c[:, s:e])
            direct = gy.unsqueeze(-1) * c[:, s:e].unsqueeze(-2)  # what reaches h_t through y_t
            direct[:, -1] += carried
            grad_h = adjoint(a, direct, out=direct)  # G_t, back to front in place
            carried = a[:, 0] * grad_h[:, 0]
            grad_log_a = grad_h * (states - b)  # ∂L/∂(Δ A) = G_t ⊙ a_t ⊙ h_{t−1}, and a_t h_{t−1} = h_t − b_t
            torch.sum(grad_log_a * rate, dim=-1, out=grad_dt[:, s:e])
            grad_rate += (grad_log_a * dt[:, s:e].unsqueeze(-1)).sum((0, 1))
            torch.sum(grad_h * b_in[:, s:e].unsqueeze(-2), dim=-1, out=grad_bu[:, s:e])
            torch.sum(grad_h * bu[:, s:e].unsqueeze(-1), dim=2, out=grad_b_in[:, s:e])
        return grad_dt, grad_rate, grad_bu, grad_b_in, grad_c, carried


def selective_scan(dt: Tensor, rate: Tensor, bu: Tensor, b_in: Tensor, c: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """``y = h C`` ``[B, T, D]`` and the last state ``[B, D, N]`` of ``h_t = exp(Δ_t A) h_{t−1} + (Δ_t u_t) B_t``.

    ``dt`` (Δ) and ``bu`` (Δ u) are ``[B, T, D]``, ``rate`` (A) ``[D, N]``, ``b_in`` (B) and ``c`` (C)
    ``[B, T, N]``, ``h0`` ``[B, D, N]``.
    """
    return _SelectiveScan.apply(dt, rate, bu, b_in, c, h0)
