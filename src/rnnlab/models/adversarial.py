"""Adversarial and virtual adversarial training on word embeddings (Miyato, Dai & Goodfellow 2017).

Both perturb the embedded review by a vector ``r`` of norm ``epsilon`` (one norm per review,
over its real steps) in the direction that hurts the model most:
- adversarial training (``at``): ``r`` follows the gradient of the supervised loss; the loss on
  ``x + r`` with the true label is added to the objective (labelled reviews only);
- virtual adversarial training (``vat``): ``r`` follows the direction that most changes the
  model's own prediction, found by ``iterations`` steps of power iteration from a random vector
  of norm ``xi``; the KL divergence between the predictions at ``x`` and ``x + r`` is added.
  It needs no label, so unlabelled reviews take part too;
- both (``atvat``, as Miyato et al.'s code names it): the sum of the two terms.
The perturbation is meaningful only against a known embedding scale: the classifier normalises
its embeddings by the word frequencies (``normalized_embeddings``), as the paper does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.models.padding import step_mask

MODES = ("at", "vat", "atvat")


def terms_of(mode: str) -> tuple[str, ...]:
    """The adversarial terms a mode adds to the supervised loss: ``("at",)``, ``("vat",)`` or both."""
    return ("at", "vat") if mode == "atvat" else (mode,)


Logits = Callable[[Tensor, Tensor], Tensor]  # (embedded [B, T, E], lengths [B]) -> logits


def embedding_statistics(weight: Tensor, frequencies: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Frequency-weighted mean and standard deviation of each embedding dimension, each ``[1, E]``."""
    f = (frequencies / frequencies.sum().clamp(min=eps)).unsqueeze(1).to(weight.dtype)
    mean = (f * weight).sum(0, keepdim=True)
    var = (f * (weight - mean) ** 2).sum(0, keepdim=True)
    return mean, torch.sqrt(var + eps)


def normalized_embeddings(weight: Tensor, frequencies: Tensor) -> Tensor:
    """Each dimension of the embedding matrix centred and scaled by its frequency-weighted statistics."""
    mean, std = embedding_statistics(weight, frequencies)
    return (weight - mean) / std


def unit(direction: Tensor, lengths: Tensor) -> Tensor:
    """``direction`` with unit L2 norm per review, counted over its real steps (padding stays zero)."""
    direction = direction * step_mask(lengths, direction.size(1), direction.device).unsqueeze(-1)
    norm = direction.flatten(1).norm(dim=1).clamp(min=1e-12)
    return direction / norm.view(-1, *([1] * (direction.dim() - 1)))


def kl_divergence(clean: Tensor, perturbed: Tensor) -> Tensor:
    """Mean KL(p(clean) || p(perturbed)) over the batch; one logit means a Bernoulli."""
    if clean.dim() == 1:
        clean, perturbed = (
            torch.stack([torch.zeros_like(clean), clean], -1),
            torch.stack([torch.zeros_like(perturbed), perturbed], -1),
        )
    return F.kl_div(perturbed.log_softmax(-1), clean.log_softmax(-1), log_target=True, reduction="batchmean")


def adversarial_loss(
    logits: Logits, loss_of: Callable[[Tensor], Tensor], embedded: Tensor, lengths: Tensor, loss: Tensor, epsilon: float
) -> Tensor:
    """The supervised loss at ``embedded + r``, ``r`` the loss gradient's direction scaled to ``epsilon``."""
    (grad,) = torch.autograd.grad(loss, embedded, retain_graph=True)
    return loss_of(logits(embedded + epsilon * unit(grad.detach(), lengths), lengths))


def sensitive_direction(
    logits: Logits, embedded: Tensor, lengths: Tensor, clean: Tensor, xi: float, iterations: int
) -> Tensor:
    """The direction in which the prediction ``clean`` at ``embedded`` changes most (unit norm per review).

    Power iteration by finite differences: the gradient of the KL at a probe of norm ``xi`` from a random
    start. The probe must move the logits well above their rounding error, or the gradient is noise:
    spread over a review's few thousand numbers, a norm of 1e-6 (the image VAT's value) is below what
    float32 resolves there, hence 0.1 as Miyato et al.'s text code. For the same reason the iteration
    runs in float32 even under mixed precision, where half precision would drop the probe entirely.
    In training, the dropout after the embeddings (the head's) draws other masks for the probe's pass
    than for ``clean``; with one logit the gradient of that difference points along the same line, with
    more outputs it adds noise.
    """
    with torch.autocast(embedded.device.type, enabled=False):
        embedded = embedded.detach().float()
        direction = torch.randn_like(embedded)
        for _ in range(iterations):
            probe = (xi * unit(direction, lengths)).requires_grad_()
            kl = kl_divergence(clean, logits(embedded + probe, lengths).float())
            (direction,) = torch.autograd.grad(kl, probe)
    return unit(direction, lengths)


def with_same_dropout(logits: Logits, device: torch.device) -> Logits:
    """``logits`` drawing the same dropout masks at every call, from a seed drawn now.

    Each call runs on a forked generator, so the training's own random stream goes on as without it
    (only this device's generator is restored: a process trains on one device).
    """
    seed = int(torch.randint(2**62, ()))
    devices = [device] if device.type == "cuda" else []

    def call(embedded: Tensor, lengths: Tensor) -> Tensor:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return logits(embedded, lengths)

    return call


def virtual_adversarial_loss(
    logits: Logits,
    embedded: Tensor,
    lengths: Tensor,
    epsilon: float,
    xi: float,
    iterations: int,
    same_dropout: bool = False,
) -> Tensor:
    """KL between the prediction at ``embedded`` (held fixed, in float32) and at ``embedded + r``.

    ``embedded`` comes after the embeddings' dropout, so every pass reads the same dropped review and
    the perturbation is never dropped itself, as in Miyato et al.'s code (whose only dropout is the
    embeddings'). Dropout further on (the head's) draws its own masks in each pass, so the KL also
    measures how much that dropout alone moves the prediction; ``same_dropout`` gives every pass the
    same masks there too: the term is then the perturbation's effect only (zero for ``r = 0``).
    """
    if same_dropout:
        logits = with_same_dropout(logits, embedded.device)
    with torch.no_grad(), torch.autocast(embedded.device.type, enabled=False):
        clean = logits(embedded.float(), lengths).float()
    r = epsilon * sensitive_direction(logits, embedded, lengths, clean, xi, iterations).to(embedded.dtype)
    return kl_divergence(clean, logits(embedded + r, lengths).float())
