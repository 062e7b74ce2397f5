"""Sampling from a language model, shared by the char- and word-level models.

The prompt is consumed once; then each new token costs one recurrent step with the
carried state (the prefix is never recomputed). ``temperature`` divides the logits,
which is Raschka et al.'s scale factor (ch. 15) ``alpha = 1 / temperature``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.errors import ConfigError

# the prompt is read this many tokens at a time, the state carried between pieces, so memory stays
# bounded however long the prompt is (its activations are never all held at once)
PROMPT_CHUNK = 4096


def check_sampling(max_new_tokens: int, temperature: float, top_k: int) -> None:
    if max_new_tokens is None or max_new_tokens <= 0:
        raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if temperature is None or temperature <= 0:
        raise ConfigError(f"temperature must be > 0 (use greedy=true for argmax), got {temperature!r}")
    if top_k is None or top_k < 0:
        raise ConfigError(f"top_k must be >= 0 (0 = no top-k filter), got {top_k!r}")


def next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> int:
    """One token id from the logits ``[V]`` of the last step."""
    if greedy:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))


@torch.no_grad()
def generate(
    model,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    greedy: bool = False,
    seed: int | None = None,
    stop_id: int | None = None,
) -> list[int]:
    """New token ids after ``prompt_ids``; stops early at ``stop_id`` (included)."""
    check_sampling(max_new_tokens, temperature, top_k)
    if not prompt_ids:
        raise ConfigError("the prompt is empty: give at least one character or word")
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    device = next(model.parameters()).device
    state = None
    for start in range(0, len(prompt_ids), PROMPT_CHUNK):
        logits, state = model.step(torch.tensor([prompt_ids[start : start + PROMPT_CHUNK]], device=device), state)
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = next_token(logits[0, -1].cpu(), temperature, top_k, greedy, generator)
        new.append(token)
        if token == stop_id:
            break
        logits, state = model.step(torch.tensor([[token]], device=device), state)
    model.train(was_training)
    return new
