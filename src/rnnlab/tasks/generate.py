"""``generate(cfg)``: continue a prompt with a trained language model checkpoint."""

from __future__ import annotations

from omegaconf import DictConfig

from rnnlab.errors import RnnlabError
from rnnlab.models.language_model import LanguageModel
from rnnlab.runs.checkpoints import Checkpoint


def sampling_temperature(temperature: float, scale_factor: float | None) -> float:
    """Raschka et al.'s scale factor alpha (ch. 15) multiplies the logits: the same as temperature = 1 / alpha."""
    if scale_factor is None:
        return temperature
    if scale_factor <= 0:
        raise RnnlabError(f"scale_factor must be > 0, got {scale_factor}")
    return 1.0 / scale_factor


def generate(cfg: DictConfig) -> str:
    checkpoint = Checkpoint.open(cfg.ckpt_path, trust=cfg.trust_checkpoint)
    if not issubclass(checkpoint.module_class, LanguageModel):
        raise RnnlabError(
            f"{cfg.ckpt_path} is a {checkpoint.module_class.__name__} checkpoint; "
            f"generate.py needs a language model (e.g. experiment=novel_lstm or news_gru)"
        )
    model = checkpoint.model()
    temperature = sampling_temperature(cfg.temperature, cfg.get("scale_factor"))
    continuation = model.generate_text(cfg.prompt, cfg.max_new_tokens, temperature, cfg.top_k, cfg.greedy, cfg.seed)
    return model.codec.join(cfg.prompt, continuation)
