"""Embedding + recurrent stack: the one encoder every task shares (rnn | gru | lstm | elman, and the
parallel-scan cells mingru | minlstm | lru | mamba | mlstm; ``models/cells`` holds them all behind one registry).

Variable lengths are handled on padded tensors, not packed sequences: on CPU a packed
``nn.LSTM`` falls off the fused kernel and its backward pass is an order of magnitude slower.
Results stay exact without packing:
- a forward direction is causal, so outputs at real steps never see the padding after
  them; outputs at padded steps are zeroed, and each row's final features are read at
  its own last step;
- a reverse direction runs on each row reversed within its own length (padding stays
  at the end), and its outputs are reversed back.
Length-bucketed batches keep the padding, and so the wasted compute, small. The parallel-scan
cells keep the same two rules (they are causal: ``models/cells/parallel.py``).

``weight_drop`` is AWD-LSTM's DropConnect on the hidden-to-hidden matrices (Merity et al.
2018): one mask per forward pass, shared by every time step, so the recurrence itself is
regularised while the fused cuDNN / CPU kernels still run (dropout on the hidden state
between steps would need a Python loop over time).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from rnnlab.errors import ConfigError
from rnnlab.models.cells import CELLS, ScanOptions, input_projection
from rnnlab.models.cells.mlstm import QKV_BLOCK
from rnnlab.models.cells.precision import needs_float32, to_float32
from rnnlab.models.cells.scan import SCANS
from rnnlab.models.padding import reverse_padded, step_mask

State = Tensor | tuple[Tensor, Tensor]  # [layers × directions, B, H]; (h, c) for an LSTM; complex for an LRU


def check_positive(**values: int | float) -> None:
    for key, value in values.items():
        if value is None or value <= 0:
            raise ConfigError(f"model.{key} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class EncoderSettings:
    """What decides an encoder (``model.encoder.*``): one object that both models take, the config
    writes once, and transfer compares whole."""

    cell: str = "lstm"
    embed_dim: int = 20
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # between recurrent layers
    embed_dropout: float = 0.0
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights
    # the parallel-scan cells (mingru | minlstm | lru | mamba | mlstm); the defaults keep older checkpoints loading
    block: str = "paper"  # paper (the cell's own) | plain | mlp | glu | residual | prenorm: models/cells/stack.py
    mlp_expansion: int = 4  # the mlp block's width, in hidden sizes
    scan: str = "auto"  # auto | linear | log | associative | accelerated: models/cells/scan.py
    lru_r_min: float = 0.0  # the LRU's ring initialisation: |λ| in [r_min, r_max], phase in [0, max_phase]
    lru_r_max: float = 0.99
    lru_max_phase: float = 2 * math.pi
    mamba_state_size: int = 16  # N, the states per channel
    mamba_expansion: int = 2  # the mixer's inner width, in hidden sizes
    mamba_conv_width: int = 4  # the causal depthwise convolution's kernel
    mlstm_heads: int = 4  # xLSTM's mLSTM: heads of the matrix memory
    mlstm_expansion: int = 2  # its up-projection, in hidden sizes
    mlstm_conv_width: int = 4  # its causal depthwise convolution's kernel

    # what the weights' shapes follow
    SHAPE = (
        "cell", "embed_dim", "hidden_size", "num_layers", "bidirectional", "block", "mlp_expansion",
        "mamba_state_size", "mamba_expansion", "mamba_conv_width", "mlstm_heads", "mlstm_expansion", "mlstm_conv_width",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(f"model.encoder.cell={self.cell!r} is not a known cell; allowed: {', '.join(CELLS)}")
        check_positive(
            **{f"encoder.{k}": getattr(self, k) for k in ("embed_dim", "hidden_size", "num_layers")},
        )
        dropouts = {"dropout": self.dropout, "embed_dropout": self.embed_dropout, "weight_drop": self.weight_drop}
        if not all(0.0 <= value < 1.0 for value in dropouts.values()):
            shown = ", ".join(f"model.encoder.{key}={value}" for key, value in dropouts.items())
            raise ConfigError(f"model dropouts must be in [0, 1), got {shown}")
        self._check_scan_settings()

    def _check_scan_settings(self) -> None:
        family = CELLS[self.cell]
        if self.block not in ("paper", *family.blocks):
            allowed = ", ".join(("paper", *family.blocks))
            raise ConfigError(f"model.encoder.block={self.block!r} does not stack {self.cell}; allowed: {allowed}")
        if family.parallel and self.weight_drop > 0:
            raise ConfigError(
                f"model.encoder.weight_drop={self.weight_drop}: {self.cell} has no hidden-to-hidden weights to drop "
                f"(its gates read the input only); set model.encoder.weight_drop=0"
            )
        if self.scan not in SCANS:
            raise ConfigError(f"model.encoder.scan={self.scan!r} is not a scan; allowed: {', '.join(SCANS)}")
        if self.cell == "mamba" and self.scan == "log":
            raise ConfigError("model.encoder.scan=log: mamba has no log form (its b has either sign); use auto")
        if self.cell == "mlstm" and self.scan != "auto":
            raise ConfigError(
                f"model.encoder.scan={self.scan}: mlstm runs its own chunkwise form (models/cells/mlstm.py); use auto"
            )
        sizes = ("mlp_expansion", "mamba_state_size", "mamba_expansion", "mamba_conv_width")
        sizes += ("mlstm_heads", "mlstm_expansion", "mlstm_conv_width")
        check_positive(**{f"encoder.{k}": getattr(self, k) for k in sizes})
        inner = self.mlstm_expansion * self.hidden_size
        if self.cell == "mlstm" and (inner % self.mlstm_heads or inner % QKV_BLOCK):
            raise ConfigError(
                f"model.encoder.mlstm_heads={self.mlstm_heads}: mlstm's inner width {inner} (mlstm_expansion × "
                f"hidden_size) must divide by the heads and by {QKV_BLOCK}; change hidden_size or mlstm_heads"
            )
        if not (0.0 <= self.lru_r_min < self.lru_r_max < 1.0 and 0.0 < self.lru_max_phase <= 2 * math.pi):
            raise ConfigError(
                f"model.encoder.lru_r_min={self.lru_r_min}, lru_r_max={self.lru_r_max}, "
                f"lru_max_phase={self.lru_max_phase}: need 0 <= lru_r_min < lru_r_max < 1 and 0 < lru_max_phase <= 2π"
            )

    def resolved_block(self) -> str:
        """The block the stack is built with: ``paper`` names the cell's own (plain for the classic cells)."""
        return CELLS[self.cell].paper_block if self.block == "paper" else self.block

    def scan_options(self) -> ScanOptions:
        return ScanOptions(
            self.resolved_block(),
            self.mlp_expansion,
            self.scan,
            self.lru_r_min,
            self.lru_r_max,
            self.lru_max_phase,
            self.mamba_state_size,
            self.mamba_expansion,
            self.mamba_conv_width,
            self.mlstm_heads,
            self.mlstm_expansion,
            self.mlstm_conv_width,
        )

    @classmethod
    def of(cls, value: Mapping[str, Any] | EncoderSettings | None) -> EncoderSettings:
        """Settings from the config node (or a checkpoint's hyper-parameters), unknown keys named."""
        if isinstance(value, cls):
            return value
        value = dict(value or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ConfigError(f"model.encoder.{unknown[0]} is not an encoder setting; allowed: {', '.join(names)}")
        return cls(**value)

    @classmethod
    def nest(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Hyper-parameters with the encoder's settings under ``encoder``, as checkpoints hold them now.

        Checkpoints written before the settings were one node held them flat beside the others;
        they are moved, so those checkpoints still load.
        """
        hparams = dict(hparams)
        if "encoder" in hparams or "cell" not in hparams:
            return hparams
        names = {f.name for f in fields(cls)}
        return {
            **{k: v for k, v in hparams.items() if k not in names},
            "encoder": {k: hparams[k] for k in names if k in hparams},
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def shape(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.SHAPE}, "block": self.resolved_block()}


def drop_recurrent_weights(rnn: nn.Module, p: float, x: Tensor, state: State | None) -> tuple[Tensor, State]:
    """Run ``rnn`` with dropout on its ``weight_hh*`` matrices; the module's own weights stay as they are.

    ``functional_call`` swaps the dropped tensors in for this call only, so checkpoints keep the
    plain parameter names (a weight-dropped LM still starts a classifier) and gradients reach them.
    """
    dropped = {
        name: F.dropout(w, p, training=True) for name, w in rnn.named_parameters() if name.startswith("weight_hh")
    }
    return functional_call(rnn, dropped, (x, state))


class SequenceEncoder(nn.Module):
    """Tokens ``[B, T]`` (+ lengths) → per-step outputs ``[B, T, D]`` (zero at padding) and the final state.

    The state is returned when every row is full length (language models, generation,
    carried state); with ragged rows it is ``None``, and ``final_features`` gives each
    row's top-layer features at its true end.
    """

    def __init__(self, vocab_size: int, settings: EncoderSettings, padding_idx: int | None = None):
        super().__init__()
        check_positive(vocab_size=vocab_size)
        self.settings = settings
        self.weight_drop = settings.weight_drop
        self.cell, self.num_layers, self.hidden_size = settings.cell, settings.num_layers, settings.hidden_size
        self.bidirectional = settings.bidirectional
        self.num_directions = 2 if settings.bidirectional else 1
        embed_dim, hidden_size = settings.embed_dim, settings.hidden_size
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.embed_dropout = nn.Dropout(settings.embed_dropout)
        build, options = CELLS[settings.cell].build, settings.scan_options()
        if settings.bidirectional:  # per layer, one module per direction: each sees its own padding-free order
            self.layers = nn.ModuleList(
                nn.ModuleList(
                    build(embed_dim if i == 0 else 2 * hidden_size, hidden_size, 1, 0.0, options) for _ in range(2)
                )
                for i in range(settings.num_layers)
            )
            self.layer_dropout = nn.Dropout(settings.dropout)
        else:
            self.rnn = build(embed_dim, hidden_size, settings.num_layers, settings.dropout, options)
        self.output_size = hidden_size * self.num_directions

    def forward(
        self, tokens: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State | None]:
        return self.encode(self.embedding(tokens), lengths, state)

    def encode(
        self, embedded: Tensor, lengths: Tensor | None = None, state: State | None = None, dropped: bool = False
    ) -> tuple[Tensor, State | None]:
        """The recurrent stack over embedded tokens ``[B, T, E]``, after their dropout unless ``dropped``
        says the caller applied it (adversarial training perturbs the embeddings after their dropout)."""
        x = embedded if dropped else self.embed_dropout(embedded)
        ragged = lengths is not None and bool((lengths != x.size(1)).any())
        if self.bidirectional:
            if state is not None:
                raise ConfigError("a bidirectional encoder cannot continue from a carried state")
            return self._bidirectional(x, lengths if ragged else None), None
        outputs, state = self._recur(self.rnn, x, state)
        if not ragged:
            return outputs, state
        return outputs * step_mask(lengths, x.size(1), x.device).unsqueeze(-1), None

    def causal(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Forward direction only, continuing from ``state``: what predicting the next token may read.

        For a one-layer bidirectional encoder (a forward + backward language model) this is its
        forward half; deeper bidirectional stacks mix the directions and have no causal half.
        """
        if not self.bidirectional:
            return self(tokens, None, state)
        if self.num_layers != 1:
            raise ConfigError("a bidirectional encoder with more than one layer has no forward-only half")
        return self._recur(self.layers[0][0], self.embed_dropout(self.embedding(tokens)), state)

    def _recur(self, rnn: nn.Module, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if needs_float32(rnn, x):  # no low-precision kernel for this cell here: the recurrence alone in float32
            with torch.autocast(x.device.type, enabled=False):
                return self._recur_as_is(rnn, x.float(), to_float32(state))
        return self._recur_as_is(rnn, x, state)

    def _recur_as_is(self, rnn: nn.Module, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if self.training and self.weight_drop > 0:
            return drop_recurrent_weights(rnn, self.weight_drop, x, state)
        return rnn(x, state)

    def _bidirectional(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        mask = step_mask(lengths, x.size(1), x.device).unsqueeze(-1) if lengths is not None else None
        for i, (forward_rnn, reverse_rnn) in enumerate(self.layers):
            if i > 0:
                x = self.layer_dropout(x)
            ahead, _ = self._recur(forward_rnn, x)
            behind, _ = self._recur(reverse_rnn, reverse_padded(x, lengths))
            x = torch.cat([ahead, reverse_padded(behind, lengths)], dim=-1)
            if mask is not None:
                x = x * mask
        return x

    @torch.no_grad()
    def read_normalized_inputs(self, mean: Tensor, std: Tensor) -> None:
        """From now on read embeddings ``(e - mean) / std`` as the encoder read the raw ``e`` until now.

        A language model pretrained on raw embeddings, handed to a classifier that normalises them
        (adversarial training), would otherwise see inputs of another centre and scale at every step, and
        fine-tuning would start far from what pretraining learned. The first layer reads its input through
        ``W e + b``: with ``W' = W diag(std)`` and ``b' = b + W mean`` it computes ``W' ê + b'``, the same
        numbers. Only dropout on the embeddings now drops an entry to its mean rather than to zero. (The
        parallel-scan stacks read their input through one input projection, before any normalisation.)
        """
        mean, std = mean.reshape(-1), std.reshape(-1)
        for rnn in list(self.layers[0]) if self.bidirectional else [self.rnn]:  # what reads the embeddings
            weight, bias = input_projection(rnn)
            bias.add_(weight @ mean.to(weight.dtype))
            weight.mul_(std.to(weight.dtype))

    def final_features(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        """Top layer at each row's true end (forward direction) and at its start (reverse direction)."""
        if lengths is None:
            last = outputs[:, -1]
        else:
            index = (lengths.to(outputs.device) - 1).clamp(min=0)
            last = outputs[torch.arange(outputs.size(0), device=outputs.device), index]
        if not self.bidirectional:
            return last
        return torch.cat([last[:, : self.hidden_size], outputs[:, 0, self.hidden_size :]], dim=-1)
