"""The Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long Sequences").

    h_t = λ ⊙ h_{t−1} + γ ⊙ (B x_t),   y_t = Re(C h_t) + D ⊙ x_t,   λ = exp(−exp(ν) + i exp(θ))

complex and diagonal. λ is initialised uniformly on a ring of the complex plane, radius in
[r_min, r_max] and phase in [0, max_phase]; ``ν`` and ``θ`` are kept in exp form so that |λ| < 1
always; γ = sqrt(1 − |λ|²) (a parameter, in log form, initialised so) keeps the state's scale
independent of how close |λ| comes to 1. B and C are stored as real and imaginary parts (real
parameters: DDP's all-reduce and optimisers see ordinary tensors). Input and output sizes are equal,
as D is diagonal; the stack's input projection sees to that.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rnnlab.models.cells.parallel import ParallelCell


class LRU(ParallelCell):
    complex_valued = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        scan: str = "auto",
        r_min: float = 0.0,
        r_max: float = 0.99,
        max_phase: float = 2 * math.pi,
    ):
        super().__init__(input_size, hidden_size, scan)
        if input_size != hidden_size:
            raise ValueError(f"an LRU maps a size to itself (D is diagonal): got {input_size} → {hidden_size}")
        if not 0.0 <= r_min < r_max < 1.0 or not 0.0 < max_phase <= 2 * math.pi:
            raise ValueError(f"LRU ring: need 0 <= r_min < r_max < 1 and 0 < max_phase <= 2π, got {r_min, r_max}")
        n = hidden_size
        radius_sq = torch.rand(n) * (r_max**2 - r_min**2) + r_min**2
        nu = -0.5 * radius_sq.clamp(min=1e-12).log()  # |λ| = exp(−nu)
        self.nu_log = nn.Parameter(nu.log())
        self.theta_log = nn.Parameter((max_phase * torch.rand(n)).clamp(min=1e-6).log())
        self.gamma_log = nn.Parameter(0.5 * (1 - radius_sq).log())  # log sqrt(1 − |λ|²)
        self.b_real = nn.Parameter(torch.randn(n, input_size) / math.sqrt(2 * input_size))
        self.b_imag = nn.Parameter(torch.randn(n, input_size) / math.sqrt(2 * input_size))
        self.c_real = nn.Parameter(torch.randn(hidden_size, n) / math.sqrt(n))
        self.c_imag = nn.Parameter(torch.randn(hidden_size, n) / math.sqrt(n))
        self.d = nn.Parameter(torch.randn(hidden_size))

    def project(self, x: Tensor) -> Tensor:
        """``γ ⊙ B x`` as ``[..., 2N]`` (real parts, then imaginary parts)."""
        gamma = self.gamma_log.exp().unsqueeze(1)
        return x @ torch.cat([self.b_real * gamma, self.b_imag * gamma]).T.to(x.dtype)

    def decay(self) -> Tensor:
        """λ, complex ``[N]``."""
        return torch.exp(torch.complex(-self.nu_log.exp(), self.theta_log.exp()))

    def gates(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        real, imag = projected.chunk(2, dim=-1)
        b = torch.complex(real, imag)
        return self.decay().expand_as(b), b

    def readout(self, h: Tensor, x: Tensor) -> Tensor:
        return h.real @ self.c_real.T - h.imag @ self.c_imag.T + self.d * x
