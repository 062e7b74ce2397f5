"""An Elman RNN written from scratch, a drop-in for ``nn.RNN(nonlinearity="tanh")``.

    h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)

It exists to show (and test) what ``nn.RNN`` computes: same parameter names and
shapes (a state_dict moves across either way), same inputs and outputs, packed
sequences included. Padded steps leave the state untouched, so the final state of
each sequence is the one at its true end, as with ``nn.RNN`` on packed input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnlab.models.padding import reverse_padded, step_mask


class ElmanRNN(nn.Module):
    """Stacked (optionally bidirectional) tanh RNN with ``nn.RNN``'s interface."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes(layer):
                self.register_parameter(f"weight_ih{suffix}", nn.Parameter(torch.empty(hidden_size, layer_input)))
                self.register_parameter(f"weight_hh{suffix}", nn.Parameter(torch.empty(hidden_size, hidden_size)))
                if bias:
                    self.register_parameter(f"bias_ih{suffix}", nn.Parameter(torch.empty(hidden_size)))
                    self.register_parameter(f"bias_hh{suffix}", nn.Parameter(torch.empty(hidden_size)))
        self.reset_parameters()

    def _suffixes(self, layer: int) -> list[str]:
        return [f"_l{layer}", f"_l{layer}_reverse"][: self.num_directions]

    def reset_parameters(self) -> None:
        """``nn.RNN``'s initialisation: every parameter uniform in ±1/sqrt(hidden_size)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def _run_direction(self, x: Tensor, h: Tensor, suffix: str, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        w_hh = getattr(self, f"weight_hh{suffix}")
        b_hh = getattr(self, f"bias_hh{suffix}") if self.bias else None
        # the input projection of every step at once: one matmul instead of T
        projected = F.linear(x, getattr(self, f"weight_ih{suffix}"), getattr(self, f"bias_ih{suffix}", None))
        outputs = []
        for t in range(x.size(1)):
            h_new = torch.tanh(projected[:, t] + F.linear(h, w_hh, b_hh))
            if mask is None:
                h = h_new
                outputs.append(h_new)
            else:
                keep = mask[:, t].unsqueeze(1)
                h = torch.where(keep, h_new, h)
                outputs.append(h_new * keep)
        return torch.stack(outputs, dim=1), h

    def forward(self, input: Tensor | PackedSequence, hx: Tensor | None = None):
        packed = isinstance(input, PackedSequence)
        if packed:
            x, lengths = pad_packed_sequence(input, batch_first=True)
        else:
            x, lengths = (input if self.batch_first else input.transpose(0, 1)), None
        batch, steps = x.size(0), x.size(1)
        if hx is None:
            hx = x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
        mask = step_mask(lengths, steps, x.device) if lengths is not None else None
        finals = []
        layer_input = x
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
            outputs = []
            for direction, suffix in enumerate(self._suffixes(layer)):
                reverse = direction == 1
                inp = reverse_padded(layer_input, lengths) if reverse else layer_input
                dir_mask = mask  # reversal keeps each row's valid steps at the front
                out, h = self._run_direction(inp, hx[layer * self.num_directions + direction], suffix, dir_mask)
                outputs.append(reverse_padded(out, lengths) if reverse else out)
                finals.append(h)
            layer_input = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
        h_n = torch.stack(finals, dim=0)
        if packed:
            output = pack_padded_sequence(layer_input, lengths, batch_first=True, enforce_sorted=False)
        else:
            output = layer_input if self.batch_first else layer_input.transpose(0, 1)
        return output, h_n
