import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.errors import ConfigError
from rnnlab.models.cells.elman import ElmanRNN
from rnnlab.models.classifier import SequenceClassifier
from rnnlab.models.encoder import CELLS, SequenceEncoder

from conftest import make_encoder


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("pooling", ["last", "meanmax", "concat"])
def test_padding_invariance(cell, pooling):
    torch.manual_seed(0)
    model = SequenceClassifier(
        vocab_size=30,
        encoder=dict(embed_dim=8, hidden_size=6, cell=cell, bidirectional=True),
        pooling=pooling,
        fc_hidden=5,
    ).eval()
    tokens = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    lengths = torch.tensor([4, 2])
    padded = torch.cat([tokens, torch.zeros(2, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(tokens, lengths), model(padded, lengths), atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman"])
def test_bidirectional_final_features_equal_per_sequence_runs(cell):
    torch.manual_seed(0)
    enc = make_encoder(20, embed_dim=5, hidden_size=4, num_layers=2, cell=cell, bidirectional=True)
    tokens = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0], [8, 9, 10, 0, 0]])
    lengths = torch.tensor([5, 2, 3])
    outputs, _ = enc(tokens, lengths)
    batch_last = enc.final_features(outputs, lengths)
    for i, n in enumerate(lengths.tolist()):
        out_i, _ = enc(tokens[i : i + 1, :n])
        assert torch.allclose(batch_last[i], enc.final_features(out_i, None)[0], atol=1e-6)
        assert torch.allclose(outputs[i, :n], out_i[0], atol=1e-6)
        assert (outputs[i, n:] == 0).all()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_final_features_match_packed_nn_module(cell):
    """The padded path gives what the packed ``nn.LSTM``/``nn.GRU`` gives (state at each row's end)."""
    torch.manual_seed(0)
    enc = make_encoder(20, embed_dim=5, hidden_size=4, num_layers=2, cell=cell)
    tokens = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0], [8, 9, 10, 0, 0]])
    lengths = torch.tensor([5, 2, 3])
    outputs, state = enc(tokens, lengths)
    assert state is None  # ragged rows: no single final state to hand back
    packed = pack_padded_sequence(enc.embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
    ref_out, ref_state = enc.rnn(packed)
    ref_h = ref_state[0] if isinstance(ref_state, tuple) else ref_state
    assert torch.allclose(enc.final_features(outputs, lengths), ref_h[-1], atol=1e-6)
    assert torch.allclose(outputs, pad_packed_sequence(ref_out, batch_first=True)[0], atol=1e-6)


def test_unknown_cell_and_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="model.encoder.cell='transformer' .* allowed: rnn, gru, lstm, elman"):
        make_encoder(10, embed_dim=4, hidden_size=4, cell="transformer")
    with pytest.raises(ConfigError, match="model.encoder.hidden_size"):
        make_encoder(10, embed_dim=4, hidden_size=0)
    with pytest.raises(ConfigError, match="model.vocab_size"):
        make_encoder(0, embed_dim=4, hidden_size=4)


def _copy(src: nn.Module, dst: nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_elman_equals_nn_rnn(num_layers, bidirectional, with_state):
    torch.manual_seed(0)
    ref = nn.RNN(6, 5, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
    ours = ElmanRNN(6, 5, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
    _copy(ref, ours)
    assert [n for n, _ in ref.named_parameters()] == [n for n, _ in ours.named_parameters()]
    x = torch.randn(4, 7, 6)
    lengths = torch.tensor([7, 3, 5, 1])
    h0 = torch.randn(num_layers * (2 if bidirectional else 1), 4, 5) if with_state else None
    results = []
    for rnn in (ref, ours):
        rnn.zero_grad()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, h_n = rnn(packed, h0)
        out, _ = pad_packed_sequence(out, batch_first=True)
        (out.square().sum() + h_n.sum()).backward()
        results.append((out, h_n, {n: p.grad.clone() for n, p in rnn.named_parameters()}))
    (o1, h1, g1), (o2, h2, g2) = results
    assert torch.allclose(o1, o2, atol=1e-5) and torch.allclose(h1, h2, atol=1e-5)
    for name in g1:
        assert torch.allclose(g1[name], g2[name], atol=1e-5), name


def test_elman_unpacked_time_major_matches_and_state_dict_moves_back():
    torch.manual_seed(1)
    ours = ElmanRNN(3, 4, num_layers=2)
    ref = nn.RNN(3, 4, num_layers=2)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(6, 2, 3)
    (o1, h1), (o2, h2) = ref(x), ours(x)
    assert torch.allclose(o1, o2, atol=1e-6) and torch.allclose(h1, h2, atol=1e-6)


def test_tiny_batch_overfits_to_full_accuracy():
    torch.manual_seed(0)
    model = SequenceClassifier(vocab_size=12, encoder=dict(embed_dim=8, hidden_size=16), fc_hidden=16)
    tokens = torch.randint(2, 12, (16, 6))
    lengths = torch.randint(2, 7, (16,))
    targets = torch.randint(0, 2, (16,)).float()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(tokens, lengths), targets)
        loss.backward()
        opt.step()
    assert ((model(tokens, lengths) > 0).float() == targets).all()


def paired_encoders(cell: str, bidirectional: bool, weight_drop: float) -> tuple[SequenceEncoder, SequenceEncoder]:
    """The same initial weights, with and without DropConnect on the recurrence."""
    kwargs = dict(vocab_size=20, embed_dim=6, hidden_size=16, num_layers=2, cell=cell, bidirectional=bidirectional)
    plain = make_encoder(**kwargs)
    dropped = make_encoder(**kwargs, weight_drop=weight_drop)
    dropped.load_state_dict(plain.state_dict())  # same keys: weight drop adds no parameters
    return plain, dropped


@pytest.mark.parametrize("cell", [name for name, family in CELLS.items() if not family.parallel])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_weight_drop_only_touches_the_recurrence_and_only_in_training(cell, bidirectional):
    torch.manual_seed(0)
    plain, dropped = paired_encoders(cell, bidirectional, weight_drop=0.5)
    tokens = torch.randint(1, 20, (3, 7))
    with torch.no_grad():
        reference, _ = plain(tokens)
        trained, _ = dropped.train()(tokens)
        evaluated, _ = dropped.eval()(tokens)
        one_step, _ = dropped.train()(tokens[:, :1])
    assert torch.equal(evaluated, reference)
    assert not torch.allclose(trained, reference, atol=1e-4)
    # From a zero state the first step never reads weight_hh: a dropped recurrence cannot change it
    expected = reference[:, 0] if not bidirectional else plain(tokens[:, :1])[0][:, 0]
    assert torch.allclose(one_step[:, 0], expected, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), dropped.parameters(), strict=True))


def test_weight_drop_masks_recurrent_gradients():
    torch.manual_seed(0)
    encoder = make_encoder(20, embed_dim=6, hidden_size=32, cell="lstm", weight_drop=0.5)
    outputs, _ = encoder(torch.randint(1, 20, (4, 12)))
    outputs.square().sum().backward()
    recurrent_zeros = (encoder.rnn.weight_hh_l0.grad == 0).float().mean().item()
    assert 0.4 < recurrent_zeros < 0.6  # the dropped half of the matrix gets no gradient
    assert (encoder.rnn.weight_ih_l0.grad != 0).float().mean().item() > 0.95


def test_weight_drop_out_of_range_names_the_setting():
    with pytest.raises(ConfigError, match=r"model\.encoder\.weight_drop=1\.0"):
        make_encoder(20, embed_dim=6, hidden_size=8, weight_drop=1.0)


def test_concat_pooling_reads_the_last_step_the_mean_and_the_max():
    torch.manual_seed(0)
    model = SequenceClassifier(
        vocab_size=30, encoder=dict(embed_dim=8, hidden_size=6), pooling="concat", fc_hidden=5
    ).eval()
    tokens, lengths = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]]), torch.tensor([4, 2])
    with torch.no_grad():
        outputs, _ = model.encoder(tokens, lengths)
        rows = [outputs[i, :n] for i, n in enumerate(lengths.tolist())]
        features = torch.stack([torch.cat([row[-1], row.mean(0), row.amax(0)]) for row in rows])
        assert torch.allclose(model(tokens, lengths), model.head(features).squeeze(-1), atol=1e-6)
