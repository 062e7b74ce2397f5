"""A stack of parallel-scan cells in their papers' blocks, with ``nn.RNN``'s call: ``(x, state) → (y, state)``.

In the residual blocks ``x`` first goes through a linear map to ``hidden_size`` (the "input
projection"), so that every block maps ``hidden_size`` to itself and a residual always fits. Then, per
layer (``block``):

- ``plain``: the cell alone, dropout between layers, as ``nn.RNN`` stacks them: the first cell reads
  ``x`` itself (its own linear map is the input projection), as ``nn.GRU``'s first layer does — a
  separate ``E → H`` map before an ``H → 2H`` one would cost the minGRU most of its time. An LRU,
  which maps a size to itself, keeps the projection;
- ``mlp`` (minGRU / minLSTM, Feng et al. 2024's language model, a transformer block with the
  attention replaced): ``x + cell(LN(x))``, then ``x + MLP(LN(x))`` with a GELU MLP of
  ``mlp_expansion × hidden_size`` units;
- ``glu`` (LRU, Orvieto et al. 2023): ``x + GLU(GELU(cell(LN(x))))``;
- ``residual`` (Mamba, Gu & Dao 2023): ``x + cell(RMSNorm(x))``, no channel mixer: Mamba's mixer
  expands, gates and projects back itself;
- ``prenorm`` (xLSTM's mLSTM block, Beck et al. 2024): ``x + cell(LN(x))``, the same with a LayerNorm.

The residual blocks end with a norm over the top layer's output (pre-norm stacks need one before a
head): a LayerNorm, or an RMSNorm after Mamba's blocks. Everything but the cell works on each step
alone, so the stack stays causal, the step-by-step path equals the parallel one, and padding is never
read by a real step.

The state is one tensor ``[num_layers, B, state size]`` (complex for an LRU), as ``nn.GRU``'s is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BLOCKS = ("plain", "mlp", "glu", "residual", "prenorm")


def norm_of(kind: str, size: int) -> nn.Module:
    """The normalisation a block puts before its cell (and a stack after its top block)."""
    if kind == "plain":
        return nn.Identity()
    return nn.RMSNorm(size) if kind == "residual" else nn.LayerNorm(size)


class GatedLinearUnit(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.linear = nn.Linear(size, 2 * size)

    def forward(self, x: Tensor) -> Tensor:
        return F.glu(self.linear(x), dim=-1)


class Block(nn.Module):
    """One layer: the cell inside its paper's normalisation, residual and channel mixer."""

    def __init__(self, cell: nn.Module, kind: str, mlp_expansion: int):
        super().__init__()
        size = cell.hidden_size
        self.kind, self.cell = kind, cell
        self.norm = norm_of(kind, size)
        if kind == "mlp":
            self.mlp_norm = nn.LayerNorm(size)
            self.mixer = nn.Sequential(
                nn.Linear(size, mlp_expansion * size), nn.GELU(), nn.Linear(mlp_expansion * size, size)
            )
        elif kind == "glu":
            self.mixer = nn.Sequential(nn.GELU(), GatedLinearUnit(size))

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._around(x, self.cell(self.norm(x), h0))

    def step(self, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._around(x, self.cell.step(self.norm(x), h))

    def _around(self, x: Tensor, cell_out: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        y, h = cell_out
        if self.kind == "plain":
            return y, h
        if self.kind in ("residual", "prenorm"):
            return x + y, h
        if self.kind == "glu":
            return x + self.mixer(y), h
        x = x + y
        return x + self.mixer(self.mlp_norm(x)), h


class ScanStack(nn.Module):
    """Input projection → ``num_layers`` blocks (dropout between them) → a norm (residual blocks)."""

    def __init__(
        self,
        make_cell: Callable[[int, int], nn.Module],  # a ParallelCell, or Mamba / MLSTM (their own two paths)
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        block: str = "plain",
        mlp_expansion: int = 4,
        reads_any_width: bool = True,
    ):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block={block!r}; allowed: {', '.join(BLOCKS)}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        # the one linear map that reads the embeddings (read_normalized_inputs rescales it): its own, or
        # the first cell's where that cell reads the input directly
        direct = block == "plain" and reads_any_width
        self.input_projection = nn.Identity() if direct else nn.Linear(input_size, hidden_size)
        first_width = input_size if direct else hidden_size
        self.blocks = nn.ModuleList(
            Block(make_cell(first_width if i == 0 else hidden_size, hidden_size), block, mlp_expansion)
            for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.final_norm = norm_of(block, hidden_size)

    @property
    def input_linear(self) -> nn.Linear:
        """The linear map that reads ``x``: the input projection, or in a plain stack the first cell's own."""
        if isinstance(self.input_projection, nn.Linear):
            return self.input_projection
        return self.blocks[0].cell.linear

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x`` ``[B, T, E]`` → outputs ``[B, T, H]`` and the state after the last step ``[L, B, S]``."""
        if x.size(1) == 1:  # one token (generation): the step, not a scan of length one
            y, state = self.step(x[:, 0], state)
            return y.unsqueeze(1), state
        x = self.input_projection(x)
        finals = []
        for i, block in enumerate(self.blocks):
            x, h = block(self.dropout(x) if i > 0 else x, None if state is None else state[i])
            finals.append(h)
        return self.final_norm(x), torch.stack(finals)

    def step(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One token ``[B, E]`` from the state ``[L, B, S]`` (or none) → output ``[B, H]`` and the new state."""
        x = self.input_projection(x)
        finals = []
        for i, block in enumerate(self.blocks):
            x, h = block.step(self.dropout(x) if i > 0 else x, None if state is None else state[i])
            finals.append(h)
        return self.final_norm(x), torch.stack(finals)
