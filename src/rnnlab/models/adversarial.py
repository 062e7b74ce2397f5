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

What decides it is one config node, ``model.adversarial``, read by ``AdversarialSettings``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.errors import ConfigError
from rnnlab.models.padding import step_mask

MODES = ("at", "vat", "atvat")

# the flat hyper-parameters of checkpoints written before model.adversarial was one node, by their new names
FLAT_NAMES = {
    "adversarial": "mode",
    "adv_epsilon": "epsilon",
    "adv_weight": "weight",
    "adv_warmup_steps": "warmup_steps",
    "vat_xi": "xi",
    "vat_iterations": "iterations",
    "vat_same_dropout": "same_dropout",
    "normalize_embeddings": "normalize_embeddings",
}


@dataclass(frozen=True)
class AdversarialSettings:
    """What decides adversarial training (``model.adversarial.*``): checked once, saved as one node."""

    mode: str | None = None  # null (none) | at | vat | atvat
    epsilon: float = 5.0  # the perturbation's norm per review, on frequency-normalised embeddings
    weight: float = 1.0  # the adversarial term's weight beside the supervised loss
    warmup_steps: int = 0  # reach ``weight`` linearly over this many optimizer steps
    xi: float = 0.1  # the probe's norm in the power iteration (vat)
    iterations: int = 1  # power-iteration steps (vat)
    same_dropout: bool = False  # the same dropout masks in VAT's passes (vat)
    normalize_embeddings: bool | None = None  # None: when a mode is set (the perturbation's scale assumes it)

    def __post_init__(self) -> None:
        if self.mode not in (None, *MODES):
            raise ConfigError(f"model.adversarial.mode={self.mode!r} is not allowed; choose null | {' | '.join(MODES)}")
        checks = {
            "epsilon": self.epsilon > 0,
            "xi": self.xi > 0,
            "iterations": self.iterations >= 1,
            "warmup_steps": self.warmup_steps >= 0,
            "weight": self.weight >= 0,
        }
        bad = next((key for key, ok in checks.items() if not ok), None)
        if bad is not None:
            rule = {"iterations": ">= 1", "warmup_steps": ">= 0", "weight": ">= 0"}.get(bad, "> 0")
            raise ConfigError(f"model.adversarial.{bad} must be {rule}, got {getattr(self, bad)!r}")

    @classmethod
    def of(cls, value: Mapping[str, Any] | AdversarialSettings | None) -> AdversarialSettings:
        """Settings from the config node (or a checkpoint's hyper-parameters), unknown keys named."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):  # the flat setting's old spelling, model.adversarial=vat
            raise ConfigError(f"model.adversarial={value} is now model.adversarial.mode={value}")
        value = dict(value or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ConfigError(
                f"model.adversarial.{unknown[0]} is not an adversarial setting; allowed: {', '.join(names)}"
            )
        return cls(**value)

    @staticmethod
    def nest(hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Hyper-parameters with the adversarial settings under ``adversarial``, as checkpoints hold them now.

        Checkpoints written before the settings were one node held them flat (``adversarial`` the mode,
        ``adv_epsilon``, ``vat_xi``...); they are moved and renamed, so those checkpoints still load.
        """
        hparams = dict(hparams)
        if isinstance(hparams.get("adversarial"), Mapping) or not set(FLAT_NAMES) & set(hparams):
            return hparams
        return {
            **{k: v for k, v in hparams.items() if k not in FLAT_NAMES},
            "adversarial": {new: hparams[old] for old, new in FLAT_NAMES.items() if old in hparams},
        }

    @property
    def normalizes(self) -> bool:
        """Whether the classifier reads frequency-normalised embeddings."""
        return self.mode is not None if self.normalize_embeddings is None else self.normalize_embeddings

    @property
    def terms(self) -> tuple[str, ...]:
        """The adversarial terms added to the supervised loss (none without a mode)."""
        return () if self.mode is None else terms_of(self.mode)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
