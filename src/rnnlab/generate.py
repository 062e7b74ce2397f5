"""``generate(cfg)``: continue a prompt with a trained language model checkpoint."""

from __future__ import annotations

from omegaconf import DictConfig

from rnnlab.builders import model_from_checkpoint
from rnnlab.checkpoints import load_checkpoint, run_config
from rnnlab.errors import RnnlabError
from rnnlab.models.language_model import LanguageModel


def sampling_temperature(temperature: float, scale_factor: float | None) -> float:
    """The book's scale factor alpha multiplies the logits: the same as temperature = 1 / alpha."""
    if scale_factor is None:
        return temperature
    if scale_factor <= 0:
        raise RnnlabError(f"scale_factor must be > 0, got {scale_factor}")
    return 1.0 / scale_factor


def generate(cfg: DictConfig) -> str:
    checkpoint = load_checkpoint(cfg.ckpt_path)
    run = run_config(checkpoint, cfg.ckpt_path)
    model = model_from_checkpoint(run, checkpoint)
    if not isinstance(model, LanguageModel):
        raise RnnlabError(
            f"{cfg.ckpt_path} is a {type(model).__name__} checkpoint (task {run.get('task_name')}); "
            f"generate.py needs a language model (e.g. experiment=novel_lstm or news_gru)"
        )
    temperature = sampling_temperature(cfg.temperature, cfg.get("scale_factor"))
    continuation = model.generate_text(cfg.prompt, cfg.max_new_tokens, temperature, cfg.top_k, cfg.greedy, cfg.seed)
    return model.codec.join(cfg.prompt, continuation)
