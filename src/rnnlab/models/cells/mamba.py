"""Mamba's selective state space (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective
State Spaces"), in pure PyTorch: the mixer of one Mamba block.

    [u, z] = W_in x;   u = SiLU(causal depthwise conv(u));   [δ, B, C] = W_x u;   Δ = softplus(W_δ δ + b_δ)
    h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t u_t) ⊗ B_t          (per channel d and state n: [D, N])
    y_t = (h_t C_t + D ⊙ u_t) ⊙ SiLU(z_t);   out = W_out y

A is diagonal and negative (``−exp(A_log)``, S4D-real's ``1..N`` at initialisation), so the recurrence
is the same first-order one as minGRU's (``scan.py``), over ``D × N`` channels: the gates depend on the
input (that is Mamba's "selection"), which is what lets it run as a scan. ``b`` has either sign, so
there is no log-space form. On a CPU (``scan=linear``) it runs chunk by chunk (``selective_scan.py``),
never holding the ``[B, T, D, N]`` gates and states, as the fused CUDA kernel of ``mamba-ssm`` keeps the
state in SRAM; ``scan=associative`` (an accelerator's default) writes them out, as the paper's reference
``selective_scan_ref`` does, and its memory grows with T times ``D N``.

The causal convolution reads the ``conv_width − 1`` inputs before each step, so the carried state is
two things, flattened into one ``[B, D N + (conv_width − 1) D]`` tensor (the stack's state is one
tensor a layer): the SSM state, then the last inputs of the convolution. Padding at the end of a row is
never read by a real step (the convolution looks back only), as for the other parallel cells.

Initialisation as the reference ``Mamba`` module: Δ's bias so that ``softplus`` gives a log-uniform
step in [dt_min, dt_max], ``A = 1..N`` in every channel, ``D = 1``, no biases in the projections.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.models.cells import scan as scans
from rnnlab.models.cells.causal_conv import project_and_convolve
from rnnlab.models.cells.selective_scan import gates, selective_scan

DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4


class Mamba(nn.Module):
    """The selective SSM mixer: ``[B, T, H]`` → ``[B, T, H]``, state ``[B, state_size]``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        scan: str = "auto",
        state_size: int = 16,
        expansion: int = 2,
        conv_width: int = 4,
    ):
        super().__init__()
        if scan not in scans.SCANS or scan == "log":
            allowed = ", ".join(s for s in scans.SCANS if s != "log")
            raise ValueError(f"scan={scan!r} for mamba (its b has either sign: no log form); allowed: {allowed}")
        if min(state_size, expansion, conv_width) < 1:
            sizes = f"state {state_size}, expansion {expansion}, conv {conv_width}"
            raise ValueError(f"mamba needs positive sizes, got {sizes}")
        self.input_size, self.hidden_size, self.scan = input_size, hidden_size, scan
        inner, self.state_n, self.conv_width = expansion * hidden_size, state_size, conv_width
        self.inner, self.dt_rank = inner, math.ceil(hidden_size / 16)
        self.linear = nn.Linear(input_size, 2 * inner, bias=False)  # W_in: [u, z]
        self.conv = nn.Conv1d(inner, inner, conv_width, groups=inner)  # depthwise, padded by hand (causal)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * state_size, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner)
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        step = torch.exp(torch.rand(inner) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
        step = step.clamp(min=DT_FLOOR)
        with torch.no_grad():
            self.dt_proj.bias.copy_(step + torch.log(-torch.expm1(-step)))  # softplus⁻¹(step)
        self.a_log = nn.Parameter(torch.arange(1, state_size + 1, dtype=torch.float32).log().repeat(inner, 1))
        self.d = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, hidden_size, bias=False)

    @property
    def state_size(self) -> int:
        return self.inner * self.state_n + (self.conv_width - 1) * self.inner

    # ---- the two paths
    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Outputs ``[B, T, H]`` and the state after the last step."""
        batch, steps = x.shape[:2]
        ssm, history = self._unpack(h0, batch, x.device)
        _, z, u, history = project_and_convolve(self.linear, self.conv, x, history)
        with torch.autocast(x.device.type, enabled=False):
            dt, b_in, c = self._selection(u)
            how = scans.resolve_scan(self.scan, x.device, log_form=False)
            if how in ("associative", "accelerated"):  # both write out [B, T, D, N]
                a, b = gates(dt, self.rate, dt * u, b_in)
                run = scans.associative_scan if how == "associative" else scans.accelerated_scan
                h = run(a.flatten(2), b.flatten(2), ssm.flatten(1))
                h = h.view(batch, steps, self.inner, self.state_n)
                y, last = torch.einsum("btdn,btn->btd", h, c), h[:, -1]
            else:  # chunk by chunk, never the whole [B, T, D, N]
                y, last = selective_scan(dt, self.rate, dt * u, b_in, c, ssm)
            y = (y + self.d * u) * F.silu(z)
            state = self._pack(last, history)
        return self.out_proj(y), state

    def step(self, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One step: ``x`` ``[B, H]`` and the state before it → output ``[B, H]`` and the state after."""
        projected = self.linear(x)
        with torch.autocast(x.device.type, enabled=False):
            u, z = projected.float().chunk(2, dim=-1)
            ssm, history = self._unpack(h, x.size(0), x.device)
            seen = torch.cat([history, u.unsqueeze(1)], dim=1)  # [B, conv_width, D], oldest first
            u = F.silu(torch.einsum("bkd,dk->bd", seen, self.conv.weight[:, 0]) + self.conv.bias)
            dt, b_in, c = self._selection(u)
            ssm = scans.step(*gates(dt, self.rate, dt * u, b_in), ssm)
            y = torch.einsum("bdn,bn->bd", ssm, c) + self.d * u
            y = y * F.silu(z)
            state = self._pack(ssm, seen[:, 1:])
        return self.out_proj(y), state

    # ---- shared
    @property
    def rate(self) -> Tensor:
        """``A`` ``[D, N]``, negative: the state decays at ``exp(Δ A)`` a step."""
        return -self.a_log.exp()

    def _selection(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The input-dependent parts: the step ``Δ`` ``[..., D]``, ``B`` and ``C`` ``[..., N]``."""
        low, b_in, c = self.x_proj(u).split([self.dt_rank, self.state_n, self.state_n], dim=-1)
        return F.softplus(self.dt_proj(low)), b_in, c

    def _unpack(self, state: Tensor | None, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """The SSM state ``[B, D, N]`` and the convolution's last inputs ``[B, conv_width − 1, D]``."""
        if state is None:
            return (
                torch.zeros(batch, self.inner, self.state_n, device=device),
                torch.zeros(batch, self.conv_width - 1, self.inner, device=device),
            )
        state = state.float()
        ssm, history = state.split([self.inner * self.state_n, (self.conv_width - 1) * self.inner], dim=-1)
        return ssm.view(batch, self.inner, self.state_n), history.view(batch, self.conv_width - 1, self.inner)

    @staticmethod
    def _pack(ssm: Tensor, history: Tensor) -> Tensor:
        return torch.cat([ssm.flatten(1), history.flatten(1)], dim=-1)
