"""The parallel cells (minGRU, minLSTM, LRU, Mamba, mLSTM): scans agree, parallel = step by step, padding unread."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from rnnlab.errors import ConfigError
from rnnlab.models.cells import CELLS
from rnnlab.models.cells import scan as scans
from rnnlab.models.cells.mingru import MinGRU, MinLSTM, _MinGRUGates
from rnnlab.models.encoder import EncoderSettings

from conftest import make_encoder

NEW_CELLS = ["mingru", "minlstm", "lru", "mamba", "mlstm"]


HAS_ACCELERATED_SCAN = importlib.util.find_spec("accelerated_scan") is not None
needs_accelerated_scan = pytest.mark.skipif(
    not HAS_ACCELERATED_SCAN, reason="the accelerated-scan extra is not installed (pip install 'rnnlab[scan]')"
)


def scans_of(cell: str) -> tuple[str, ...]:
    """The scans a cell runs: Mamba's ``b`` has either sign, so it has no log form (its settings refuse one);
    the mLSTM runs its own chunkwise form."""
    if cell == "mlstm":
        return ("auto",)
    found = ("linear", "associative") if cell == "mamba" else ("linear", "log", "associative")
    return found + ("accelerated",) if HAS_ACCELERATED_SCAN else found


def gates(complex_valued: bool, steps: int = 300, seed: int = 0):
    torch.manual_seed(seed)
    shape = (3, steps, 5)
    a = torch.rand(shape) * 0.5 + 0.49  # decays near 1 carry the state far
    b = torch.rand(shape) + 0.1
    if complex_valued:
        a = torch.polar(a, torch.rand(shape) * 6.28)
        b = torch.complex(b, torch.randn(shape))
    h0 = b[:, 0].clone() * 0.7
    return a.requires_grad_(), b.requires_grad_(), h0.requires_grad_()


def reference(a, b, h0):
    h, out = h0, []
    for t in range(b.size(1)):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, 1)


def grads(fn, a, b, h0):
    out = fn(a, b, h0)
    weight = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out.real * weight).sum().backward() if out.is_complex() else (out * weight).sum().backward()
    found = [t.grad.clone() for t in (a, b, h0)]
    for t in (a, b, h0):
        t.grad = None
    return out.detach(), found


@pytest.mark.parametrize("complex_valued", [False, True])
@pytest.mark.parametrize("name", ["linear", "associative", "log", "accelerated"])
def test_every_scan_equals_the_loop_in_values_and_gradients(name, complex_valued):
    if name == "log" and complex_valued:
        pytest.skip("the log-space scan is for positive b (minGRU / minLSTM)")
    if name == "accelerated" and not HAS_ACCELERATED_SCAN:
        pytest.skip("the accelerated-scan extra is not installed (pip install 'rnnlab[scan]')")
    a, b, h0 = gates(complex_valued)
    if name == "log":

        def fn(a, b, h0):
            return scans.log_scan(a.log(), b.log(), h0.log())
    else:
        fn = {"linear": scans.linear_scan, "associative": scans.associative_scan}.get(name, scans.accelerated_scan)
    expected, expected_grads = grads(reference, a, b, h0)
    found, found_grads = grads(fn, a, b, h0)
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(found_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_accelerated_scan
@pytest.mark.parametrize("steps", [1, 2, 37])  # one step, the smallest tree, a length it pads to 64
def test_the_accelerated_scan_takes_any_length_and_trailing_shape(steps):
    torch.manual_seed(0)
    a, b, h0 = torch.rand(2, steps, 3, 4), torch.randn(2, steps, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(scans.accelerated_scan(a, b, h0), reference(a, b, h0), rtol=1e-5, atol=1e-5)


def test_auto_takes_the_accelerated_kernel_on_cuda_only_where_it_is_installed(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(scans, "accelerated_available", lambda device: device.type == "cuda")
    assert scans.resolve_scan("auto", cuda, log_form=True) == "accelerated"
    assert scans.resolve_scan("auto", cpu, log_form=True) == "linear"
    monkeypatch.setattr(scans, "accelerated_available", lambda device: False)
    assert scans.resolve_scan("auto", cuda, log_form=True) == "log"
    assert scans.resolve_scan("auto", cuda, log_form=False) == "associative"


def test_the_accelerated_scan_without_its_package_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name.startswith("accelerated_scan"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    a, b = torch.rand(1, 4, 2), torch.rand(1, 4, 2)
    with pytest.raises(ConfigError, match=r"scan=accelerated needs the accelerated-scan package.*rnnlab\[scan\]"):
        scans.accelerated_scan(a, b)


def stack(cell: str, scan: str = "auto", layers: int = 2, block: str = "paper"):
    torch.manual_seed(1)
    settings = EncoderSettings(cell=cell, embed_dim=6, hidden_size=8, num_layers=layers, scan=scan, block=block)
    return CELLS[cell].build(6, 8, layers, 0.0, settings.scan_options()).eval()


def run_step_by_step(module, x, state):
    outputs = []
    for t in range(x.size(1)):
        y, state = module.step(x[:, t], state)
        outputs.append(y)
    return torch.stack(outputs, 1), state


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_parallel_equals_step_by_step_at_1024_steps_with_and_without_a_carried_state(cell):
    # one layer, the cell alone: the blocks around it act on each step alone (tested below)
    module = stack(cell, scans_of(cell)[0], layers=1, block="plain")
    x, more = torch.randn(2, 1024, 6), torch.randn(2, 1024, 6)
    with torch.no_grad():
        stepped, stepped_state = run_step_by_step(module, x, None)
        stepped_on, _ = run_step_by_step(module, more, stepped_state)
        for scan in scans_of(cell):
            for block in module.blocks:
                block.cell.scan = scan
            parallel, state = module(x)
            torch.testing.assert_close(parallel, stepped, rtol=1e-5, atol=1e-5, msg=scan)
            torch.testing.assert_close(state, stepped_state, rtol=1e-5, atol=1e-5, msg=scan)
            carried, _ = module(more, state)  # continuing: the state enters the scan as itself
            torch.testing.assert_close(carried, stepped_on, rtol=1e-5, atol=1e-5, msg=scan)


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_a_stack_of_paper_blocks_steps_as_it_scans(cell):
    module = stack(cell, layers=2)
    x, more = torch.randn(2, 60, 6), torch.randn(2, 40, 6)
    with torch.no_grad():
        whole, _ = module(torch.cat([x, more], 1))
        _, state = module(x)
        stepped, _ = run_step_by_step(module, more, state)
    torch.testing.assert_close(stepped, whole[:, 60:], rtol=1e-5, atol=1e-5)


def test_a_carried_state_enters_the_log_scan_as_its_own_log_not_through_g():
    # lucidrains/minGRU-pytorch #9: feeding h0 through log_g instead of log changes every later step
    cell = MinGRU(4, 4, scan="log")
    x, h0 = torch.randn(1, 5, 4), torch.rand(1, 4) + 0.2
    with torch.no_grad():
        parallel, _ = cell(x, h0)
        first, _ = cell.step(x[:, 0], h0)
    torch.testing.assert_close(parallel[:, 0], first)


def test_mingru_gates_have_the_derivatives_of_their_formula():
    """The hand-written backward of minGRU's gates against autograd through ``1 − σ(k)``, ``σ(k) g(c)``."""
    torch.manual_seed(0)
    k = torch.randn(3, 7, 4, dtype=torch.float64, requires_grad=True)
    c = (torch.randn(3, 7, 4, dtype=torch.float64) * 2).requires_grad_()  # both sides of g's kink
    assert torch.autograd.gradcheck(_MinGRUGates.apply, (k, c))
    a, b = _MinGRUGates.apply(k, c)
    ref_a = 1 - torch.sigmoid(k)
    ref_b = torch.sigmoid(k) * torch.where(c >= 0, c + 0.5, torch.sigmoid(c))  # Feng et al.'s g as written
    weights = torch.randn(2, *k.shape, dtype=torch.float64)
    mine = torch.autograd.grad((a * weights[0] + b * weights[1]).sum(), (k, c))
    theirs = torch.autograd.grad((ref_a * weights[0] + ref_b * weights[1]).sum(), (k, c))
    for x, y in zip(mine, theirs, strict=True):
        torch.testing.assert_close(x, y)


def test_minlstm_gates_are_normalised():
    cell = MinLSTM(3, 4, scan="linear")
    a, b = cell.gates(cell.project(torch.randn(2, 5, 3)))
    forget, input_gate = a, cell.gates(torch.cat([torch.zeros(2, 5, 8), torch.full((2, 5, 4), 0.5)], -1))[1]
    assert torch.all((a > 0) & (a < 1)) and torch.all(b > 0) and forget.shape == input_gate.shape
    k_f, k_i, _ = cell.project(torch.randn(2, 5, 3)).chunk(3, -1)
    f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
    gap = cell._gap(k_f, k_i)
    torch.testing.assert_close(torch.sigmoid(-gap), f / (f + i))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", NEW_CELLS)
def test_padding_changes_no_rows_outputs_or_gradients(cell, bidirectional):
    torch.manual_seed(2)
    encoder = make_encoder(20, padding_idx=0, cell=cell, embed_dim=6, hidden_size=8, bidirectional=bidirectional)
    row = torch.randint(1, 20, (1, 5))
    other = torch.randint(1, 20, (1, 9))

    def first_row(batch: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The first row's outputs and the gradients of its squared outputs, computed in ``batch``."""
        encoder.zero_grad()
        outputs, _ = encoder(batch, torch.tensor(lengths))
        outputs[:1].pow(2).sum().backward()
        return outputs, {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}

    alone, alone_grads = first_row(row, [5])
    # float32 rounding alone moves a gradient when the batch changes shape (other GEMM blockings): under one
    # thread the mLSTM's reverse direction here moves by 1e-5 with no padding at all; the row twice measures it
    _, twice_grads = first_row(torch.cat([row, row]), [5, 5])
    batch = torch.cat([torch.cat([row, torch.zeros(1, 4, dtype=torch.long)], 1), other])
    padded, padded_grads = first_row(batch, [5, 9])
    torch.testing.assert_close(padded[0, :5], alone[0], rtol=1e-5, atol=1e-6)
    assert torch.all(padded[0, 5:] == 0)
    for name, grad in alone_grads.items():
        assert torch.isfinite(padded_grads[name]).all(), name
        rounding = (twice_grads[name] - grad).abs().max().item()
        torch.testing.assert_close(padded_grads[name], grad, rtol=1e-4, atol=1e-5 + 4 * rounding)
    features = encoder.final_features(padded, torch.tensor([5, 9]))
    torch.testing.assert_close(features[0], encoder.final_features(alone, torch.tensor([5]))[0])


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_the_reverse_direction_reads_each_row_backwards_within_its_length(cell):
    torch.manual_seed(3)
    encoder = make_encoder(20, padding_idx=0, cell=cell, embed_dim=6, hidden_size=8, bidirectional=True).eval()
    tokens = torch.tensor([[4, 7, 9, 0, 0]])
    both, _ = encoder(tokens, torch.tensor([3]))
    reverse_stack = encoder.layers[0][1]
    behind, _ = reverse_stack(encoder.embedding(torch.tensor([[9, 7, 4]])))
    torch.testing.assert_close(both[0, :3, 8:], behind[0].flip(0))


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_gradients_are_finite_with_heavy_padding_and_long_rows(cell):
    torch.manual_seed(4)
    scan = "log" if "log" in scans_of(cell) else "auto"  # the one where masking padding would give NaN
    encoder = make_encoder(20, padding_idx=0, cell=cell, embed_dim=6, hidden_size=8, num_layers=2, scan=scan)
    tokens = torch.randint(1, 20, (3, 400))
    lengths = torch.tensor([400, 3, 1])
    tokens[1, 3:] = tokens[2, 1:] = 0
    outputs, _ = encoder(tokens, lengths)
    encoder.final_features(outputs, lengths).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_the_scan_runs_in_float32_under_bf16_autocast(cell):
    encoder = make_encoder(20, cell=cell, embed_dim=6, hidden_size=8)
    tokens = torch.randint(1, 20, (2, 30))
    exact, _ = encoder(tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, state = encoder(tokens)
    assert state.dtype in (torch.float32, torch.complex64)
    assert (mixed.float() - exact).abs().max() < 0.1  # only the linear maps around the scan ran in bf16
    mixed.float().sum().backward()


def test_settings_that_cannot_apply_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="weight_drop"):
        EncoderSettings(cell="mingru", weight_drop=0.3)
    with pytest.raises(ConfigError, match="block='mlp' does not stack lstm"):
        EncoderSettings(cell="lstm", block="mlp")
    with pytest.raises(ConfigError, match="scan"):
        EncoderSettings(cell="lru", scan="fast")
    with pytest.raises(ConfigError, match="lru_r_max"):
        EncoderSettings(cell="lru", lru_r_max=1.0)
    with pytest.raises(ConfigError, match="mamba has no log form"):
        EncoderSettings(cell="mamba", scan="log")
    with pytest.raises(ConfigError, match="mamba_state_size"):
        EncoderSettings(cell="mamba", mamba_state_size=0)
    assert EncoderSettings(cell="lru").resolved_block() == "glu" and EncoderSettings().resolved_block() == "plain"
    assert EncoderSettings(cell="mamba").resolved_block() == "residual"
    with pytest.raises(ConfigError, match="mlstm runs its own chunkwise form"):
        EncoderSettings(cell="mlstm", scan="linear")
    with pytest.raises(ConfigError, match="mlstm_heads=5.*inner width 16"):
        EncoderSettings(cell="mlstm", hidden_size=8, mlstm_heads=5)
    assert EncoderSettings(cell="mlstm").resolved_block() == "prenorm"


def mlstm_by_its_formula(q, k, v, f_pre, i_pre):
    """The mLSTM written as its paper's recurrence, unstabilised (float64 holds exp(ĩ) here): C, n, h̃."""
    batch, heads, steps, d = q.shape
    c, n, out = q.new_zeros(batch, heads, d, d), q.new_zeros(batch, heads, d), []
    for t in range(steps):
        f, i = torch.sigmoid(f_pre[..., t]), torch.exp(i_pre[..., t])
        c = f[..., None, None] * c + i[..., None, None] * k[:, :, t, :, None] * v[:, :, t, None, :]
        n = f[..., None] * n + i[..., None] * k[:, :, t]
        numerator = (q[:, :, t, :, None] * c).sum(-2)  # C_tᵀ q_t
        normaliser = (n * q[:, :, t]).sum(-1).abs().clamp(min=1.0)
        out.append(numerator / normaliser[..., None])
    return torch.stack(out, 2)


def test_the_mlstms_chunkwise_form_is_its_recurrence_in_values_and_gradients(monkeypatch):
    import torch.nn.functional as F

    from rnnlab.models.cells import mlstm

    monkeypatch.setattr(mlstm, "EPS", 0.0)  # the reference adds 1e-6 to the normaliser; the formula does not
    torch.manual_seed(7)
    shape = (2, 3, 37, 4)  # three chunks of 16 and a part
    q, k, v = (torch.randn(shape, dtype=torch.float64, requires_grad=True) for _ in range(3))
    f_pre = (torch.randn(shape[:3], dtype=torch.float64) + 2).requires_grad_()
    i_pre = (torch.randn(shape[:3], dtype=torch.float64) * 3).requires_grad_()  # exp(ĩ) from 0 to ~10⁴
    weight = torch.randn(shape, dtype=torch.float64)

    def chunkwise(q, k, v, f_pre, i_pre):
        memory, pieces = None, []
        for s in range(0, 37, 16):
            e = s + 16
            h, memory = mlstm.chunk_step(
                q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], F.logsigmoid(f_pre[..., s:e]), i_pre[..., s:e], memory
            )
            pieces.append(h)
        return torch.cat(pieces, 2)

    inputs = (q, k, v, f_pre, i_pre)
    found, want = chunkwise(*inputs), mlstm_by_its_formula(*inputs)
    torch.testing.assert_close(found, want, rtol=1e-9, atol=1e-9)
    found_grads = torch.autograd.grad((found * weight).sum(), inputs)
    want_grads = torch.autograd.grad((want * weight).sum(), inputs)
    for got, expected in zip(found_grads, want_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-8)


def test_the_mlstms_exponential_gate_stays_finite_where_exp_overflows_float32():
    from rnnlab.models.cells.mlstm import MLSTM

    torch.manual_seed(8)
    cell = MLSTM(8, 8, heads=2)
    with torch.no_grad():
        cell.igate.bias.copy_(torch.tensor([150.0, -150.0]))  # exp(150) overflows float32; exp(-150) is 0
    y, state = cell(torch.randn(2, 70, 8))
    y.square().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(state).all()
    assert all(torch.isfinite(p.grad).all() for p in cell.parameters())


def test_an_old_checkpoints_encoder_settings_still_load():
    old = {"cell": "lstm", "embed_dim": 8, "hidden_size": 8, "num_layers": 1, "bidirectional": False}
    settings = EncoderSettings.of(EncoderSettings.nest(old)["encoder"])
    assert settings.block == "paper" and settings.shape()["block"] == "plain"


def test_the_input_projection_reads_normalised_embeddings_as_the_raw_ones():
    torch.manual_seed(5)
    encoder = make_encoder(20, cell="lru", embed_dim=6, hidden_size=8).eval()
    embedded = torch.randn(2, 7, 6)
    before, _ = encoder.encode(embedded)
    mean, std = embedded.mean((0, 1)), embedded.std((0, 1))
    encoder.read_normalized_inputs(mean, std)
    after, _ = encoder.encode((embedded - mean) / std)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_mamba_selects_its_step_from_the_input_and_starts_as_its_paper():
    # what makes it Mamba rather than S4: the decay a = exp(Δ A) differs from token to token
    from rnnlab.models.cells.mamba import DT_MAX, DT_MIN, Mamba

    torch.manual_seed(6)
    cell = Mamba(8, 8, state_size=4, expansion=2, conv_width=3)
    step = torch.nn.functional.softplus(cell.dt_proj.bias)
    assert step.min() >= DT_MIN * 0.999 and step.max() <= DT_MAX * 1.001
    torch.testing.assert_close(cell.a_log.exp()[0], torch.arange(1.0, 5.0))
    assert cell.state_size == 16 * 4 + 2 * 16  # the SSM state, then the convolution's last 2 inputs
    dt, _, _ = cell._selection(torch.randn(1, 5, 16))
    a = torch.exp(dt.unsqueeze(-1) * cell.rate)
    assert a.shape == (1, 5, 16, 4) and (a[0, 0] - a[0, 1]).abs().max() > 1e-4


@pytest.mark.parametrize("steps", [1, 16, 37])  # one step, one whole chunk, two chunks and a part
def test_mambas_chunked_scan_has_the_written_out_forms_values_and_gradients(steps):
    from rnnlab.models.cells.scan import linear_scan
    from rnnlab.models.cells.selective_scan import gates, selective_scan

    torch.manual_seed(7)
    batch, inner, n = 2, 3, 4
    dt = (torch.rand(batch, steps, inner, dtype=torch.float64) * 0.5).requires_grad_()
    rate = (-3 * torch.rand(inner, n, dtype=torch.float64)).requires_grad_()
    bu, b_in, c = (torch.randn(batch, steps, size, dtype=torch.float64, requires_grad=True) for size in (inner, n, n))
    h0 = torch.randn(batch, inner, n, dtype=torch.float64, requires_grad=True)
    inputs = (dt, rate, bu, b_in, c, h0)
    assert torch.autograd.gradcheck(selective_scan, inputs)

    a, b = gates(dt, rate, bu, b_in)
    h = linear_scan(a.flatten(2), b.flatten(2), h0.flatten(1)).view(batch, steps, inner, n)
    written_out = (torch.einsum("btdn,btn->btd", h, c), h[:, -1])
    chunked = selective_scan(*inputs)
    weights = [torch.randn_like(t) for t in written_out]

    def gradients(outputs):
        return torch.autograd.grad(sum((t * w).sum() for t, w in zip(outputs, weights, strict=True)), inputs)

    ours, reference = [*chunked, *gradients(chunked)], [*written_out, *gradients(written_out)]
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
