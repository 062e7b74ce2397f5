"""xLSTM's matrix-memory LSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory"), in pure
PyTorch: the mixer of one mLSTM block, as xLSTM[1:0] stacks them (the sLSTM has hidden-to-hidden
weights, so no parallel form, and is not here).

    [x, z] = W_up u;   c = SiLU(causal depthwise conv(x));   q = W_q c,  k = W_k c / √d,  v = W_v x
    ĩ_t, f̃_t = W_i [q, k, v] + b_i,  W_f [q, k, v] + b_f                        (one scalar a head)
    C_t = σ(f̃_t) C_{t−1} + exp(ĩ_t) k_t v_tᵀ,   n_t = σ(f̃_t) n_{t−1} + exp(ĩ_t) k_t   (C: d × d a head)
    h̃_t = C_tᵀ q_t / max(|n_t · q_t|, 1)
    out = W_down((GroupNorm_heads(h̃) + s ⊙ c) ⊙ SiLU(z))

The input gate is exponential, so the memory would overflow float32; it is kept divided by
``exp(m_t)``, ``m_t = max(log σ(f̃_t) + m_{t−1}, ĩ_t)``, which leaves the ratio unchanged (its floor
becomes ``exp(−m_t)``). The recurrence is linear in ``C`` with input-only gates, like Mamba's, but its
state is ``d × d`` a head (d = 2H / heads), far too large to write out step by step. Training runs the
chunkwise form instead: time is cut into chunks of ``CHUNK`` steps; inside one, every step reads the
chunk's earlier steps through an ``L × L`` decay matrix (causal attention with decays: GEMMs) and the
steps before the chunk through the carried ``(C, n, m)``, which is then moved to the chunk's end. Memory
is O(T L + T / L d²) a head, linear in T. A step (generation, carried state) is the same computation on a
chunk of one.

The carried state is one tensor ``[B, heads (d² + d + 1) + (conv_width − 1) D]``: the memory, the
normaliser and the stabiliser of every head, then the convolution's last inputs. Padding at the end of a
row is never read by a real step (the convolution looks back only, the chunks are causal). An empty state
is ``None`` and its terms are left out, rather than a stabiliser of −∞ whose weights ``exp(−∞ − m)`` a
gradient would have to pass through.

Initialisation as the reference ``xlstm`` package: the forget gate's bias spread over [3, 6] across
heads, the input gate's ~ N(0, 0.1²), both gates' weights 0; the up and q, k, v maps N(0, 2 / 5H), the
down map N(0, 4 / H) (its ``wang_init_`` for one block: the mixer does not know the stack's depth);
skip and norm weights 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.models.cells.causal_conv import project_and_convolve

CHUNK = 64  # steps a chunk: the L × L decays and the d × d memory updates are GEMMs of that size
QKV_BLOCK = 4  # the q, k, v projections are block-diagonal in blocks of this width (the reference's default)
EPS = 1e-6  # added to the normaliser, as the reference
MIN_STABILISER = -80.0  # exp(−m) is floored at exp(80), which float32 holds (exp(89) it does not)


def small_init(weight: Tensor, width: int) -> None:
    """The reference's ``small_init_init_`` (Nguyen & Salazar 2019): N(0, 2 / (5 · width))."""
    nn.init.normal_(weight, std=math.sqrt(2 / (5 * width)))


class HeadwiseLinear(nn.Module):
    """A block-diagonal linear map over ``[..., width]`` in blocks of ``block``: xLSTM's q, k, v maps."""

    def __init__(self, width: int, block: int, init_width: int):
        super().__init__()
        self.blocks = width // block
        self.weight = nn.Parameter(torch.empty(self.blocks, block, block))
        small_init(self.weight, init_width)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("...gi,goi->...go", x.unflatten(-1, (self.blocks, -1)), self.weight).flatten(-2)


Memory = tuple[Tensor, Tensor, Tensor]  # C [B, heads, d, d], n [B, heads, d], m [B, heads]


def chunk_step(
    q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, i_pre: Tensor, memory: Memory | None
) -> tuple[Tensor, Memory]:
    """``h̃`` ``[B, heads, L, d]`` of one chunk (``q, k, v`` ``[B, heads, L, d]``, gates ``[B, heads, L]``) and the
    memory at its end, from the memory before it (``None``: empty — every weight on it would be 0, so the
    terms that read it are left out)."""
    steps = q.size(-2)
    f_sum = log_f.cumsum(-1)  # F_t: the log of the decay from the chunk's start to t
    log_decay = f_sum.unsqueeze(-1) - f_sum.unsqueeze(-2) + i_pre.unsqueeze(-2)  # [t, s]: F_t − F_s + ĩ_s
    causal = torch.ones(steps, steps, dtype=torch.bool, device=q.device).tril()
    log_decay = log_decay.masked_fill(~causal, float("-inf"))
    m = log_decay.amax(-1)  # the stabiliser m_t: the largest weight's log
    if memory is not None:
        c_prev, n_prev, m_prev = memory
        log_prev = f_sum + m_prev.unsqueeze(-1)  # the weight's log of the memory before the chunk
        m = torch.maximum(log_prev, m)
    decay = torch.exp(log_decay - m.unsqueeze(-1))  # 0 above the diagonal
    scores = (q @ k.transpose(-1, -2)) * decay
    numerator, normaliser = scores @ v, scores.sum(-1)
    last = decay[..., -1, :].unsqueeze(-1)  # every step's weight on the chunk's last state
    c, n = k.transpose(-1, -2) @ (last * v), (last * k).sum(-2)
    if memory is not None:
        prev = torch.exp(log_prev - m)
        numerator = numerator + prev.unsqueeze(-1) * (q @ c_prev)
        normaliser = normaliser + prev * (q @ n_prev.unsqueeze(-1)).squeeze(-1)
        c, n = c + prev[..., -1, None, None] * c_prev, n + prev[..., -1, None] * n_prev
    floor = torch.exp(-m.clamp(min=MIN_STABILISER))
    h = numerator / (torch.maximum(normaliser.abs(), floor) + EPS).unsqueeze(-1)
    return h, (c, n, m[..., -1])


class MLSTM(nn.Module):
    """The mLSTM mixer: ``[B, T, H]`` → ``[B, T, H]``, state ``[B, state_size]``."""

    def __init__(self, input_size: int, hidden_size: int, heads: int = 4, expansion: int = 2, conv_width: int = 4):
        super().__init__()
        inner = expansion * hidden_size
        if min(heads, expansion, conv_width) < 1 or inner % heads or inner % QKV_BLOCK:
            raise ValueError(
                f"mlstm needs positive sizes and its inner width {inner} (expansion {expansion} × hidden "
                f"{hidden_size}) divisible by heads {heads} and by {QKV_BLOCK}"
            )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.inner, self.heads, self.head_size, self.conv_width = inner, heads, inner // heads, conv_width
        self.linear = nn.Linear(input_size, 2 * inner, bias=False)  # W_up: [x, z]
        small_init(self.linear.weight, input_size)
        self.conv = nn.Conv1d(inner, inner, conv_width, groups=inner)  # depthwise, padded by hand (causal)
        self.q, self.k, self.v = (HeadwiseLinear(inner, QKV_BLOCK, hidden_size) for _ in range(3))
        self.igate, self.fgate = nn.Linear(3 * inner, heads), nn.Linear(3 * inner, heads)
        with torch.no_grad():
            for gate in (self.igate, self.fgate):
                gate.weight.zero_()
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, heads))
            self.igate.bias.normal_(std=0.1)
        self.norm_weight = nn.Parameter(torch.ones(inner))
        self.skip = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, hidden_size, bias=False)
        nn.init.normal_(self.out_proj.weight, std=2 / math.sqrt(hidden_size))  # wang_init_, for one block

    @property
    def state_size(self) -> int:
        return self.heads * (self.head_size**2 + self.head_size + 1) + (self.conv_width - 1) * self.inner

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Outputs ``[B, T, H]`` and the state after the last step."""
        batch, steps = x.shape[:2]
        memory, history = self._unpack(h0, batch, x.device)
        u, z, c, history = project_and_convolve(self.linear, self.conv, x, history)
        with torch.autocast(x.device.type, enabled=False):
            q, k, v = self.q(c), self.k(c), self.v(u)
            qkv = torch.cat([q, k, v], dim=-1)
            i_pre, log_f = self.igate(qkv).transpose(1, 2), F.logsigmoid(self.fgate(qkv)).transpose(1, 2)
            q, k, v = (t.unflatten(-1, (self.heads, self.head_size)).transpose(1, 2) for t in (q, k, v))
            k = k / math.sqrt(self.head_size)
            pieces = []
            for s in range(0, steps, CHUNK):
                e = s + CHUNK
                h, memory = chunk_step(
                    q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], log_f[:, :, s:e], i_pre[:, :, s:e], memory
                )
                pieces.append(h)
            h = torch.cat(pieces, dim=2).transpose(1, 2)  # [B, T, heads, d]
            h = F.layer_norm(h, (self.head_size,)).flatten(2) * self.norm_weight  # a LayerNorm a head
            y = (h + self.skip * c) * F.silu(z)
            state = self._pack(memory, history)
        return self.out_proj(y), state

    def step(self, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One step: ``x`` ``[B, H]`` and the state before it → output ``[B, H]`` and the state after."""
        y, state = self(x.unsqueeze(1), h)
        return y[:, 0], state

    def _unpack(self, state: Tensor | None, batch: int, device: torch.device) -> tuple[Memory | None, Tensor]:
        """The memory ``(C, n, m)`` (``None`` for an empty one) and the convolution's last inputs
        ``[B, conv_width − 1, D]``."""
        heads, d = self.heads, self.head_size
        if state is None:
            return None, torch.zeros(batch, self.conv_width - 1, self.inner, device=device)
        c, n, m, history = state.float().split(
            [heads * d * d, heads * d, heads, (self.conv_width - 1) * self.inner], -1
        )
        memory = (c.view(batch, heads, d, d), n.view(batch, heads, d), m)
        return memory, history.view(batch, self.conv_width - 1, self.inner)

    @staticmethod
    def _pack(memory: Memory, history: Tensor) -> Tensor:
        return torch.cat([part.flatten(1) for part in (*memory, history)], dim=-1)
