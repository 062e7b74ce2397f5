"""The recurrent cells the encoder can stack: one registry, ``CELLS``, that the encoder reads.

A family says how to build a stack of its cells with ``nn.RNN``'s call (``(x [B, T, E], state) →
(outputs, state)``), whether it runs as a parallel scan, which blocks it stacks in (its paper's
first), and which linear map reads the embeddings. Classic families (rnn, gru, lstm, elman) are
``torch.nn`` modules or drop-ins for them; the parallel ones (mingru, minlstm, lru, mamba, mlstm) are
``ScanStack``s of one cell (``stack.py`` says how padding and reversal are handled).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from rnnlab.models.cells.elman import ElmanRNN
from rnnlab.models.cells.lru import LRU
from rnnlab.models.cells.mamba import Mamba
from rnnlab.models.cells.mingru import MinGRU, MinLSTM
from rnnlab.models.cells.mlstm import MLSTM
from rnnlab.models.cells.parallel import ParallelCell
from rnnlab.models.cells.stack import BLOCKS, ScanStack


@dataclass(frozen=True)
class ScanOptions:
    """What a parallel stack reads beyond sizes (``model.encoder.*``; defaults are its papers')."""

    block: str = "plain"
    mlp_expansion: int = 4
    scan: str = "auto"
    lru_r_min: float = 0.0
    lru_r_max: float = 0.99
    lru_max_phase: float = 2 * math.pi
    mamba_state_size: int = 16
    mamba_expansion: int = 2
    mamba_conv_width: int = 4
    mlstm_heads: int = 4
    mlstm_expansion: int = 2
    mlstm_conv_width: int = 4


@dataclass(frozen=True)
class CellFamily:
    build: Callable[[int, int, int, float, ScanOptions], nn.Module]  # (input, hidden, layers, dropout, options)
    parallel: bool
    blocks: tuple[str, ...]  # what it may stack in; the first is its paper's

    @property
    def paper_block(self) -> str:
        return self.blocks[0]


def _classic(cls: type[nn.Module]) -> CellFamily:
    def build(input_size: int, hidden_size: int, num_layers: int, dropout: float, options: ScanOptions) -> nn.Module:
        return cls(
            input_size, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )

    return CellFamily(build, parallel=False, blocks=("plain",))


def _parallel(
    make: Callable[[int, int, ScanOptions], ParallelCell | Mamba | MLSTM],
    paper_block: str,
    reads_any_width: bool = True,
) -> CellFamily:
    def build(input_size: int, hidden_size: int, num_layers: int, dropout: float, options: ScanOptions) -> nn.Module:
        return ScanStack(
            lambda width, size: make(width, size, options),
            input_size,
            hidden_size,
            num_layers,
            dropout,
            options.block,
            options.mlp_expansion,
            reads_any_width,
        )

    return CellFamily(build, parallel=True, blocks=(paper_block, *(b for b in BLOCKS if b != paper_block)))


CELLS: dict[str, CellFamily] = {
    "rnn": _classic(nn.RNN),
    "gru": _classic(nn.GRU),
    "lstm": _classic(nn.LSTM),
    "elman": _classic(ElmanRNN),
    "mingru": _parallel(lambda width, size, o: MinGRU(width, size, o.scan), "mlp"),
    "minlstm": _parallel(lambda width, size, o: MinLSTM(width, size, o.scan), "mlp"),
    "lru": _parallel(
        lambda width, size, o: LRU(width, size, o.scan, o.lru_r_min, o.lru_r_max, o.lru_max_phase),
        "glu",
        reads_any_width=False,  # D x needs x of the state's size
    ),
    "mamba": _parallel(
        lambda width, size, o: Mamba(width, size, o.scan, o.mamba_state_size, o.mamba_expansion, o.mamba_conv_width),
        "residual",
        reads_any_width=False,  # its input map has no bias: the stack's projection is what embeddings meet
    ),
    "mlstm": _parallel(
        lambda width, size, o: MLSTM(width, size, o.mlstm_heads, o.mlstm_expansion, o.mlstm_conv_width),
        "prenorm",
        reads_any_width=False,  # as Mamba's: no bias in its up-projection
    ),
}


def input_projection(stack: nn.Module) -> tuple[Tensor, Tensor]:
    """The weight and bias of the linear map through which ``stack`` reads its input (``W x + b``)."""
    if isinstance(stack, ScanStack):
        return stack.input_linear.weight, stack.input_linear.bias
    return stack.weight_ih_l0, stack.bias_ih_l0
