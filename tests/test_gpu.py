"""The GPU paths (cuDNN kernels, mixed precision, the trainer=gpu config), run where CUDA is.

CI has no GPU, so these skip there; they are run on a lent NVIDIA machine
(README, "Tests"). A CPU-only test suite cannot catch a tensor left on the wrong
device or a cuDNN kernel that disagrees with the CPU one.
"""

import importlib.util
import math

import pytest
import torch
from test_end_to_end import LM_QUICK, QUICK

from rnnlab.models.encoder import CELLS
from rnnlab.tasks.train import train

from conftest import make_encoder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")
# compose_cfg pins trainer.accelerator=cpu, and swapping the trainer group does not undo a value
# override: without the second entry these ran on the CPU (seen: AMP fell back to bf16 there)
ON_GPU = ("trainer=gpu", "trainer.accelerator=gpu")


@pytest.fixture
def exact_float32():
    """TF32 would round the GPU side to ~1e-3; the comparison is about the kernels, not the format."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_encoder_on_gpu_matches_cpu(cell, bidirectional, exact_float32):
    torch.manual_seed(0)
    encoder = make_encoder(30, embed_dim=8, hidden_size=12, num_layers=2, cell=cell, bidirectional=bidirectional).eval()
    tokens = torch.randint(1, 30, (5, 9))
    lengths = torch.tensor([9, 4, 7, 1, 9])
    with torch.no_grad():
        on_cpu, _ = encoder(tokens, lengths)
        on_gpu, _ = encoder.cuda()(tokens.cuda(), lengths.cuda())
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-5)


@pytest.mark.skipif(
    importlib.util.find_spec("accelerated_scan") is None or importlib.util.find_spec("triton") is None,
    reason="the accelerated-scan extra (pip install 'rnnlab[scan]') or Triton is not installed",
)
@pytest.mark.parametrize("steps", [1, 37, 1024])
def test_the_accelerated_scan_kernel_gives_the_per_step_scans_numbers(steps):
    """accelerated-scan's Triton kernel against rnnlab's own scan, values and gradients, from a carried state."""
    from rnnlab.models.cells import scan as scans

    torch.manual_seed(0)
    a = (torch.rand(4, steps, 64, device="cuda") * 0.5 + 0.49).requires_grad_()
    b, h0 = torch.randn(4, steps, 64, device="cuda", requires_grad=True), torch.randn(4, 64, device="cuda")
    weight = torch.randn(4, steps, 64, device="cuda")
    found, want = [], []
    for scan, out in ((scans.accelerated_scan, found), (scans.linear_scan, want)):
        h = scan(a, b, h0)
        grad_a, grad_b = torch.autograd.grad((h * weight).sum(), (a, b))
        out.extend([h.detach(), grad_a, grad_b])
    for got, expected in zip(found, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_weight_drop_runs_on_cudnn(cell, exact_float32):
    """cuDNN reads its weights from a flat buffer: the dropped matrices must reach it, per call."""
    torch.manual_seed(0)
    encoder = make_encoder(30, embed_dim=8, hidden_size=32, num_layers=2, cell=cell, weight_drop=0.5).cuda()
    tokens = torch.randint(1, 30, (4, 10), device="cuda")
    outputs, _ = encoder.train()(tokens)
    outputs.square().sum().backward()
    with torch.no_grad():
        plain, _ = encoder.eval()(tokens)
    assert not torch.allclose(outputs.detach(), plain, atol=1e-4)
    assert torch.allclose(outputs[:, 0].detach(), plain[:, 0], atol=1e-5)  # the first step reads no weight_hh
    assert 0.35 < (encoder.rnn.weight_hh_l0.grad == 0).float().mean().item() < 0.65


@pytest.mark.parametrize("precision", ["32-true", "16-mixed", "bf16-mixed"])
def test_classifier_trains_and_tests_on_gpu(precision, compose_cfg):
    cfg = compose_cfg("experiment=imdb_bilstm", *ON_GPU, f"trainer.precision={precision}", *QUICK)
    metrics = train(cfg)
    assert metrics["status"] == "completed"
    assert 0.0 <= metrics["test/acc"] <= 1.0 and math.isfinite(metrics["val/loss"])


@pytest.mark.parametrize("precision", ["32-true", "16-mixed", "bf16-mixed"])
def test_language_model_trains_on_gpu(precision, compose_cfg):
    cfg = compose_cfg(
        "experiment=imdb_lm_pretrain_large",
        *ON_GPU,
        f"trainer.precision={precision}",
        "data.val_size=8",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        *LM_QUICK,
        "model.sample_length=5",
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed"
    assert metrics["val/ppl"] == pytest.approx(2.718281828 ** metrics["val/loss"], rel=1e-4)


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
@pytest.mark.parametrize("mode", ["at", "vat"])
def test_adversarial_training_runs_under_mixed_precision_on_gpu(mode, precision, compose_cfg):
    # the perturbation's extra backward passes under autocast and, with 16-mixed, the grad scaler
    cfg = compose_cfg(
        "experiment=imdb_vat",
        *ON_GPU,
        "model.pretrained=null",
        f"model.adversarial.mode={mode}",
        f"trainer.precision={precision}",
        "data.val_size=8",
        "data.batch_size=4",
        "trainer.max_epochs=1",
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed" and metrics[f"train/loss_{mode}"] > 0
    assert math.isfinite(metrics["test/loss"])
