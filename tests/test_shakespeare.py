"""Tiny Shakespeare at nanoGPT's split, and the evaluation protocols a language model is scored under."""

import json
import math
import random

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn

from rnnlab.data.novel import NovelDataModule, split_sizes
from rnnlab.errors import ConfigError, DataNotFoundError
from rnnlab.models.language_model import LanguageModel
from rnnlab.runs.summary import summary_lines

from conftest import real_data_dir


def write_text(root, text: str, dataset: str = "shakespeare", name: str = "input.txt"):
    (root / dataset).mkdir(parents=True, exist_ok=True)
    (root / dataset / name).write_text(text, encoding="utf-8", newline="")


def shakespeare(root, cache, **kw) -> NovelDataModule:
    """The DataModule as data/shakespeare.yaml builds it, on the text under ``root``."""
    settings = dict(
        dataset="shakespeare",
        filename="input.txt",
        whole_file=True,
        start_marker=None,
        end_marker=None,
        val_fraction=0.05,
        test_fraction=0.1,
        split_rounding="train_floor",
        val_position="start",
        seq_length=8,
        batch_size=4,
        download=False,
    )
    return NovelDataModule(data_dir=str(root), cache_dir=str(cache), **{**settings, **kw})


def test_split_is_nanogpts_first_90_percent_then_the_last_10_percent_in_order(tmp_path):
    rng = random.Random(0)  # random letters: no stretch repeats, so order and contiguity are visible
    text = "*** START OF THE PROJECT GUTENBERG EBOOK ***\n" + "".join(rng.choice("abcdefgh \n") for _ in range(955))
    text += "\n\n"  # nanoGPT reads the file whole: markers and the final newlines are text like the rest
    write_text(tmp_path, text)
    dm = shakespeare(tmp_path, tmp_path / "cache")
    dm.setup()
    n = len(text)
    sizes = {name: dm.parts[name].numel() for name in ("train", "val", "test")}
    assert n == 1002 and sizes == {"train": 851, "val": 50, "test": 101}  # int(1002 * 0.9) = 901 before the tail
    decoded = {name: dm.codec.decode(dm.parts[name].tolist()) for name in sizes}
    assert decoded["val"] == text[:50] and decoded["train"] == text[50:901] and decoded["test"] == text[901:]
    assert split_sizes(1_115_394, 0.05, 0.1, "train_floor") == (948_085, 55_769, 111_540)  # 1,003,854 before


def test_the_novels_split_keeps_its_rounding():
    # the novel's tail is floor(n * test) characters, as before nanoGPT's rounding was added: its runs reproduce
    assert split_sizes(1002, 0.05, 0.1) == (852, 50, 100)
    assert split_sizes(1002, 0.05, 0.1, "train_floor") == (851, 50, 101)


def test_an_unknown_split_rounding_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.split_rounding='nearest' is not one of test_floor, train_floor"):
        shakespeare(tmp_path, tmp_path / "cache", split_rounding="nearest")


def test_whole_file_with_markers_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"data.whole_file=true .* data.start_marker='X'"):
        shakespeare(tmp_path, tmp_path / "cache", start_marker="X")


def test_a_missing_file_names_where_to_put_it_and_the_download(tmp_path):
    with pytest.raises(
        DataNotFoundError, match=r"shakespeare/input.txt.*char-rnn/master/data/tinyshakespeare/input.txt"
    ) as err:
        shakespeare(tmp_path, tmp_path / "cache").prepare_data()
    assert "\n" not in str(err.value)


def softplus_of_minus(k: float) -> float:
    """The loss of the counting model below at context length ``k``: ``-log sigmoid(k)``."""
    return math.log1p(math.exp(-k))


class ContextCounter(nn.Module):
    """A stand-in encoder whose state is the number of characters read so far (``stateful``), or that
    ignores any state and reports the input character's id times three; output: (input id, count)."""

    bidirectional, hidden_size = False, 2

    def __init__(self, uses_state: bool):
        super().__init__()
        self.uses_state = uses_state

    def forward(self, tokens: Tensor, lengths: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch, steps = tokens.shape
        seen = state[0, :, 0] if state is not None else torch.zeros(batch)
        counts = seen[:, None] + torch.arange(steps)[None, :] if self.uses_state else tokens.float() * 3
        return torch.stack([tokens.float(), counts], -1), (seen + steps)[None, :, None]


class OtherLetterHead(nn.Module):
    """On "abab…" every target is the other letter: logit ``count`` for it, 0 for the input's own, so the
    loss at context length ``k`` is ``-log sigmoid(k)``, falling as the model has read more."""

    def forward(self, hidden: Tensor) -> Tensor:
        token, count = hidden[:, 0], hidden[:, 1]
        return torch.stack([torch.where(token == 0, 0.0, count), torch.where(token == 0, count, 0.0)], -1)


def scored(uses_state: bool, tmp_path) -> dict[str, float]:
    write_text(tmp_path, "ab" * 205)  # 410 characters: the test tail int(410 * 0.9) = 369 onward holds 41
    dm = shakespeare(tmp_path, tmp_path / "cache", streams=True, seq_length=8, eval_batch_size=1, eval_windows=4)
    model = LanguageModel(vocab_size=2, encoder={"embed_dim": 2, "hidden_size": 2}, stateful=True)
    model.encoder, model.decoder = ContextCounter(uses_state), OtherLetterHead()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, datamodule=dm)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_windowed_protocol_scores_every_window_from_a_zero_state(tmp_path):
    metrics = scored(uses_state=True, tmp_path=tmp_path)
    # 41 held-out characters: ten windows of 4 predictions, each at context lengths 0, 1, 2, 3
    assert metrics["test/loss_window4"] == pytest.approx(sum(map(softplus_of_minus, range(4))) / 4, rel=1e-6)
    assert metrics["test/ppl_window4"] == pytest.approx(math.exp(metrics["test/loss_window4"]), rel=1e-6)
    # full context: one stream, its state carried through all 40 predictions (context lengths 0 … 39)
    full = sum(map(softplus_of_minus, range(40))) / 40
    assert metrics["test/loss_full_context"] == metrics["test/loss"] == pytest.approx(full, rel=1e-6)
    assert metrics["test/loss_window4"] > metrics["test/loss_full_context"] + 0.1  # the state's advantage


def test_a_model_that_ignores_its_state_scores_the_same_under_both_protocols(tmp_path):
    metrics = scored(uses_state=False, tmp_path=tmp_path)
    # both protocols predict the same 40 characters once each: 20 from 'a' (count 0), 20 from 'b' (count 3)
    expected = (softplus_of_minus(0) + softplus_of_minus(3)) / 2
    assert metrics["test/loss_window4"] == pytest.approx(expected, rel=1e-6)
    assert metrics["test/loss_full_context"] == pytest.approx(expected, rel=1e-6)


def test_eval_windows_longer_than_the_held_out_text_is_a_config_error(tmp_path):
    write_text(tmp_path, "ab" * 205)
    with pytest.raises(ConfigError, match="data.eval_windows=64 is longer than the val text"):
        shakespeare(tmp_path, tmp_path / "cache", eval_windows=64).setup()


def test_the_last_lines_name_each_protocol(tmp_path):
    metrics = {"status": "completed", "test/loss": 1.43, "test/loss_full_context": 1.43, "test/loss_window256": 1.46}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    lines = summary_lines(tmp_path, tmp_path, "val/loss_window256", ["train.py"], "hydra.run.dir=x")
    by_protocol = "full context (state carried) 1.4300 · 256-token windows from a zero state 1.4600"
    assert f"test loss by protocol:  {by_protocol}" in lines


@pytest.mark.real_data
def test_real_tiny_shakespeare_splits_as_nanogpt(tmp_path):
    data = real_data_dir()
    if data is None or not (data / "shakespeare" / "input.txt").exists():
        pytest.skip("tiny Shakespeare not found: set RNNLAB_DATA_DIR or place ../shared/data beside the checkout")
    dm = shakespeare(data, tmp_path, eval_windows=256)
    dm.setup()
    assert dm.provenance["sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert dm.vocab_size == 65
    train_90 = dm.parts["train"].numel() + dm.parts["val"].numel()
    assert (train_90, dm.parts["test"].numel()) == (1_003_854, 111_540)
    # the held-out play (The Taming of the Shrew) opens before the tail: its first names are trained on
    train = dm.codec.decode(dm.parts["train"].tolist())
    assert "GREMIO" in train and "GREMIO" not in dm.codec.decode(dm.parts["val"].tolist())
    assert len(dm.test_dataloader()[1].dataset) == (111_540 - 257) // 256 + 1  # x = data[i:i+256], stride 256


def test_validation_just_before_the_tail_as_the_novel_carves_it(tmp_path):
    # data=shakespeare carves validation from the start, since its held-out play begins in the 5 % before the
    # tail; the novel's slice just before the tail stays what before_test gives
    rng = random.Random(1)
    text = "".join(rng.choice("abcdefgh \n") for _ in range(1002))
    write_text(tmp_path, text)
    dm = shakespeare(tmp_path, tmp_path / "cache", val_position="before_test")
    dm.setup()
    decoded = {name: dm.codec.decode(dm.parts[name].tolist()) for name in ("train", "val", "test")}
    assert decoded == {"train": text[:851], "val": text[851:901], "test": text[901:]}
    with pytest.raises(ConfigError, match="data.val_position='middle' is not one of before_test, start"):
        shakespeare(tmp_path, tmp_path / "cache", val_position="middle")
