"""Embedding + recurrent stack: the one encoder every task shares (rnn | gru | lstm | elman)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.errors import ConfigError
from rnnlab.models.elman import ElmanRNN

CELLS: dict[str, type[nn.Module]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM, "elman": ElmanRNN}

State = Tensor | tuple[Tensor, Tensor]


def check_positive(**values: int | float) -> None:
    for key, value in values.items():
        if value is None or value <= 0:
            raise ConfigError(f"model.{key} must be a positive number, got {value!r}")


class SequenceEncoder(nn.Module):
    """Tokens ``[B, T]`` (+ lengths) → per-step outputs ``[B, T, D]`` and the final state.

    With lengths, the recurrent stack runs on a packed sequence: padding costs no
    compute and the final state of each row is the one at its true end, so appending
    padding never changes a result.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "lstm",
        bidirectional: bool = False,
        dropout: float = 0.0,
        embed_dropout: float = 0.0,
        padding_idx: int | None = None,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"model.cell={cell!r} is not a known cell; allowed: {', '.join(CELLS)}")
        check_positive(vocab_size=vocab_size, embed_dim=embed_dim, hidden_size=hidden_size, num_layers=num_layers)
        if not 0.0 <= dropout < 1.0 or not 0.0 <= embed_dropout < 1.0:
            raise ConfigError(f"model dropouts must be in [0, 1), got dropout={dropout}, embed_dropout={embed_dropout}")
        self.cell, self.num_layers, self.hidden_size = cell, num_layers, hidden_size
        self.num_directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.rnn = CELLS[cell](
            embed_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.output_size = hidden_size * self.num_directions

    def forward(
        self, tokens: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State]:
        x = self.embed_dropout(self.embedding(tokens))
        if lengths is None or bool((lengths == tokens.size(1)).all()):
            return self.rnn(x, state)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, state = self.rnn(packed, state)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=tokens.size(1))
        return outputs, state

    def last_hidden(self, state: State) -> Tensor:
        """The top layer's final hidden state, both directions concatenated: ``[B, D]``."""
        hidden = state[0] if isinstance(state, tuple) else state
        return torch.cat(list(hidden[-self.num_directions :]), dim=-1)
