"""bf16-mixed on any CPU: a recurrence without a low-precision kernel runs in float32 inside autocast."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from rnnlab.models.cells import precision

from conftest import make_encoder

CPU = torch.device("cpu")
NATIVE_BF16_LSTM = precision.runs_natively(nn.LSTM, CPU, torch.bfloat16)


@pytest.fixture
def no_native_kernel(monkeypatch):
    """Every probed cell answers 'no kernel', as oneDNN's LSTM does on an AVX2-only CPU."""
    monkeypatch.setattr(precision, "_PROBED", {})
    monkeypatch.setattr(precision, "_probe", lambda cell, device, dtype: False)


def encoder_and_tokens(cell: str, **settings):
    torch.manual_seed(0)
    encoder = make_encoder(30, cell=cell, embed_dim=6, hidden_size=8, **settings)
    return encoder, torch.randint(1, 30, (3, 7))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_forced_fallback_runs_the_lstm_in_float32_and_matches_full_precision(no_native_kernel, bidirectional):
    encoder, tokens = encoder_and_tokens("lstm", bidirectional=bidirectional, num_layers=2)
    exact, _ = encoder(tokens, torch.tensor([7, 4, 2]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = encoder(tokens, torch.tensor([7, 4, 2]))
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, exact)  # the embedding stays float32 under autocast, so nothing was rounded
    mixed.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_forced_fallback_carries_a_state_and_weight_drop(no_native_kernel):
    encoder, tokens = encoder_and_tokens("lstm", weight_drop=0.5)
    state = (torch.randn(1, 3, 8).bfloat16(), torch.randn(1, 3, 8).bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs, (h, c) = encoder(tokens, None, state)
    assert outputs.dtype == h.dtype == c.dtype == torch.float32 and torch.isfinite(outputs).all()


def test_the_fallback_is_said_once(no_native_kernel, caplog):
    encoder, tokens = encoder_and_tokens("lstm")
    with caplog.at_level(logging.WARNING, logger=precision.__name__), torch.autocast("cpu", dtype=torch.bfloat16):
        encoder(tokens)
        encoder(tokens)
    said = [r for r in caplog.records if "runs in float32 inside autocast" in r.getMessage()]
    assert len(said) == 1 and "LSTM" in said[0].getMessage()


def test_a_cell_with_its_kernel_is_left_alone_and_outside_autocast_nothing_is_probed(monkeypatch):
    monkeypatch.setattr(precision, "_PROBED", {})
    monkeypatch.setattr(precision, "_probe", lambda cell, device, dtype: True)
    encoder, tokens = encoder_and_tokens("rnn")
    exact, _ = encoder(tokens)
    assert precision._PROBED == {}  # no autocast, no probe
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = encoder(tokens)
    assert mixed.dtype == torch.bfloat16 and not torch.equal(mixed.float(), exact)


def test_probing_draws_no_random_numbers_from_the_run(monkeypatch):
    monkeypatch.setattr(precision, "_PROBED", {})
    torch.manual_seed(3)
    precision.runs_natively(nn.LSTM, CPU, torch.bfloat16)
    after_probe = torch.rand(4)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(4), after_probe)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "elman"])
def test_every_cell_trains_a_step_under_bf16_autocast_on_this_cpu(cell):
    encoder, tokens = encoder_and_tokens(cell)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs, _ = encoder(tokens)
    outputs.float().sum().backward()
    assert torch.isfinite(outputs.float()).all()


@pytest.mark.skipif(not NATIVE_BF16_LSTM, reason="this CPU has no bf16 LSTM kernel (oneDNN needs AVX-512-BF16 or AMX)")
def test_native_bf16_lstm_runs_in_bf16_where_the_cpu_has_the_kernel():
    encoder, tokens = encoder_and_tokens("lstm")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs, _ = encoder(tokens)
    assert outputs.dtype == torch.bfloat16
