from dataclasses import fields

import pytest
import torch

from rnnlab.data.batching import IGNORE_INDEX, Batch
from rnnlab.data.codec import TextCodec
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.models.encoder import EncoderSettings
from rnnlab.models.generation import generate
from rnnlab.models.language_model import LanguageModel, previous_token_targets

ENCODER_KEYS = {f.name for f in fields(EncoderSettings)}


def tiny_lm(**kw) -> LanguageModel:
    torch.manual_seed(0)
    encoder = {"embed_dim": 8, "hidden_size": 16, **{k: kw.pop(k) for k in list(kw) if k in ENCODER_KEYS}}
    return LanguageModel(**{"vocab_size": 12, **kw}, encoder=encoder)


def test_same_seed_same_text_and_greedy_equals_top1():
    model = tiny_lm()
    a = generate(model, [1, 2, 3], 20, temperature=1.0, seed=5)
    b = generate(model, [1, 2, 3], 20, temperature=1.0, seed=5)
    assert a == b
    assert generate(model, [1, 2, 3], 20, greedy=True) == generate(model, [1, 2, 3], 20, top_k=1, seed=9)
    assert generate(model, [1, 2, 3], 20, temperature=1e-4, seed=1) == generate(model, [1, 2, 3], 20, greedy=True)


def test_carried_state_equals_recomputing_the_prefix():
    model = tiny_lm(num_layers=2).eval()
    prefix = [1, 2, 3, 4]
    new = generate(model, prefix, 10, greedy=True)
    seq = list(prefix)
    for expected in new:
        logits, _ = model.step(torch.tensor([seq]), None)  # recompute the whole prefix every time
        assert int(logits[0, -1].argmax()) == expected
        seq.append(expected)


def test_sampling_arguments_are_checked():
    model = tiny_lm()
    with pytest.raises(ConfigError, match="max_new_tokens"):
        generate(model, [1], 0)
    with pytest.raises(ConfigError, match="temperature"):
        generate(model, [1], 5, temperature=0)


def test_generation_stops_at_end_token():
    model = tiny_lm()
    with torch.no_grad():
        model.decoder.bias.fill_(-50.0)
        model.decoder.bias[7] = 50.0
    assert generate(model, [1], 10, greedy=True, stop_id=7) == [7]


def test_logits_only_on_targets_equals_full_padded_loss_and_gradients():
    model = tiny_lm()
    tokens = torch.tensor([[1, 2, 3, 4], [5, 6, 11, 11]])
    targets = torch.tensor([[2, 3, 4, 5], [6, 7, IGNORE_INDEX, IGNORE_INDEX]])
    batch = Batch(tokens, torch.tensor([4, 2]), targets)
    result = model.loss_on_targets(batch)
    loss, count = result.loss, result.count
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    outputs, _ = model.encoder(tokens)  # the tutorial's way: every position through the softmax
    full = torch.nn.functional.cross_entropy(model.decoder(outputs).transpose(1, 2), targets)
    full.backward()
    assert count == 6 and torch.allclose(loss, full, atol=1e-6)
    for name, param in model.named_parameters():
        assert torch.allclose(grads[name], param.grad, atol=1e-5), name


def test_stateful_training_carries_detached_state():
    model = tiny_lm(stateful=True)
    x = torch.randint(0, 12, (3, 5))
    first = Batch(x, torch.full((3,), 5), torch.randint(0, 12, (3, 5)))
    model._forward_stage(first, "train")
    carried = model._carried["train"]
    assert all(not s.requires_grad for s in carried)
    _, expected_state = model.encoder(x)
    assert torch.allclose(carried[0], expected_state[0].detach())
    # the next batch starts from that state
    second = Batch(torch.randint(0, 12, (3, 5)), torch.full((3,), 5), torch.randint(0, 12, (3, 5)))
    loss_carried = model.loss_on_targets(second, carried).loss
    loss_fresh = model.loss_on_targets(second, None).loss
    model._forward_stage(second, "train")
    assert not torch.allclose(loss_carried, loss_fresh)
    assert model._carried_state("train", second) is model._carried["train"]


def test_tiny_text_overfits_to_near_zero_loss():
    model = tiny_lm(hidden_size=32)
    seq = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    batch = Batch(seq[:, :-1], torch.tensor([9]), seq[:, 1:])
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(200):
        opt.zero_grad()
        loss = model.loss_on_targets(batch).loss
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_deep_or_stateful_bidirectional_language_model_is_refused():
    with pytest.raises(ConfigError, match="num_layers=1"):
        tiny_lm(bidirectional=True, num_layers=2)
    with pytest.raises(ConfigError, match="stateful=false"):
        tiny_lm(bidirectional=True, stateful=True)


def test_previous_token_targets_stop_at_each_rows_length():
    batch = Batch(torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]]), torch.tensor([4, 2]), torch.zeros(2, 4, dtype=torch.long))
    ignore = IGNORE_INDEX
    assert previous_token_targets(batch).tolist() == [[ignore, 1, 2, 3], [ignore, 5, ignore, ignore]]


def test_bidirectional_loss_is_both_directions_through_one_output_layer():
    model = tiny_lm(bidirectional=True)
    tokens = torch.tensor([[1, 2, 3, 4], [5, 6, 11, 11]])
    targets = torch.tensor([[2, 3, 4, 5], [6, 7, IGNORE_INDEX, IGNORE_INDEX]])
    batch = Batch(tokens, torch.tensor([4, 2]), targets)
    result = model.loss_on_targets(batch)
    outputs, _ = model.encoder(tokens, batch.lengths)
    ahead, behind = outputs[..., :16], outputs[..., 16:]
    backward_targets = torch.tensor([[IGNORE_INDEX, 1, 2, 3], [IGNORE_INDEX, 5, IGNORE_INDEX, IGNORE_INDEX]])
    ce = torch.nn.functional.cross_entropy
    forward_sum = ce(model.decoder(ahead).transpose(1, 2), targets, reduction="sum")
    backward_sum = ce(model.decoder(behind).transpose(1, 2), backward_targets, reduction="sum")
    assert result.count == 10 and result.forward_count == 6
    assert torch.allclose(result.loss, (forward_sum + backward_sum) / 10, atol=1e-6)
    assert torch.allclose(result.forward_loss, forward_sum / 6, atol=1e-6)


def test_bidirectional_directions_never_read_the_token_they_predict():
    model = tiny_lm(bidirectional=True).eval()
    tokens = torch.randint(1, 12, (1, 7))
    outputs, _ = model.encoder(tokens)
    for t in range(1, 6):
        changed = tokens.clone()
        changed[0, t] = (changed[0, t] % 11) + 1
        again, _ = model.encoder(changed)
        assert torch.equal(again[0, :t, :16], outputs[0, :t, :16])  # forward before t predicted token t
        assert torch.equal(again[0, t + 1 :, 16:], outputs[0, t + 1 :, 16:])  # reverse after t predicted it


def test_bidirectional_language_model_generates_from_its_forward_half():
    model = tiny_lm(bidirectional=True).eval()
    prefix = [1, 2, 3]
    new = generate(model, prefix, 6, greedy=True)
    seq = list(prefix)
    for expected in new:
        ahead = model.encoder(torch.tensor([seq]))[0][..., :16]
        assert int(model.decoder(ahead)[0, -1].argmax()) == expected
        seq.append(expected)


def test_codec_char_and_word_prompts(caplog):
    chars = TextCodec(list("abc "), level="char")
    assert chars.decode(chars.encode("ab c")) == "ab c"
    with pytest.raises(RnnlabError, match="'z'"):
        chars.encode("abz")
    words = TextCodec(
        ["<unk>", "<start>", "the", "island", "<end>", "<pad>"],
        level="word",
        normalizer="news",
        start_token="<start>",
        end_token="<end>",
        unk_token="<unk>",
    )
    assert words.encode("The island!") == [1, 2, 3]
    assert words.encode("the volcano") == [1, 2, 0]
    assert "volcano" in caplog.text


def test_adaptive_head_trains_and_predicts():
    model = tiny_lm(vocab_size=40, head="adaptive", adaptive_cutoffs=[8, 20])
    assert model.decoder is None and model.adaptive is not None
    seq = torch.tensor([[1, 9, 25, 3, 30, 2, 12, 39, 5, 7]])
    batch = Batch(seq[:, :-1], torch.tensor([9]), seq[:, 1:])
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = model.loss_on_targets(batch).loss
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    with torch.no_grad():
        result = model.loss_on_targets(batch)
        final, correct, count = result.loss, result.correct, result.count
        argmax = model.step(batch.tokens, None)[0].argmax(-1)
    assert final.item() < first / 4 and count == 9
    assert int(correct) == int((argmax == batch.targets).sum()) >= 7  # accuracy agrees with the head's argmax
    log_probs, _ = model.step(seq[:, :3], None)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(1, 3), atol=1e-4)


def test_adaptive_head_runs_in_float32_under_mixed_precision():
    """Its loss must not come back in half precision (on CUDA the mix of dtypes raised outright)."""
    model = tiny_lm(vocab_size=40, head="adaptive", adaptive_cutoffs=[8, 20])
    seq = torch.tensor([[1, 9, 25, 3, 30, 2, 12, 39, 5, 7]])
    batch = Batch(seq[:, :-1], torch.tensor([9]), seq[:, 1:])
    exact = model.loss_on_targets(batch).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.loss_on_targets(batch)
        log_probs, _ = model.step(seq[:, :3], None)
    assert mixed.loss.dtype == torch.float32 and log_probs.dtype == torch.float32
    assert mixed.loss.item() == pytest.approx(exact.item(), abs=0.05)  # only the recurrent part ran in bf16
