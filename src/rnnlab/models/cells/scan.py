"""First-order linear recurrences ``h_t = a_t * h_{t-1} + b_t`` over ``[B, T, H]``, computed all at once.

Every parallel-scan cell (minGRU, minLSTM, LRU, Mamba) reduces to this recurrence with gates ``a_t`` that
depend on the input only. Three ways to run it give the same numbers (float32, 1e-5):

- ``linear``: one fused multiply-add per step, in place on the ``[:, t]`` slices, with a
  hand-written backward (the same recurrence run in reverse). T small ops of ``B × H`` each and no
  graph of T nodes: on a CPU this is the fastest, and it is exact, since a step is exactly what the
  step-by-step cell does.
- ``log``: Heinsen (2023)'s scan in log space, ``log h = a* + logcumsumexp(log b - a*)`` with
  ``a* = cumsum(log a)``, for positive ``b`` (minGRU / minLSTM with the ``g`` activation). It runs in
  chunks of ``LOG_CHUNK`` steps, the state carried between them in its own log, so ``a*`` stays small
  enough for float32 to keep 1e-5 at any length. A starting state enters as ``log h0`` (its own log,
  not through the activation's); nothing is ever masked with −inf (``logcumsumexp`` would give NaN
  gradients, pytorch #31829): padding needs no mask because the recurrence is causal.
- ``associative``: Hillis–Steele's scan, log2(T) vectorised steps of ``(a, b) ∘ (a', b') =
  (a a', a' b + b')``; O(T log T) work but few, large operations (GPUs), real or complex.
- ``accelerated``: the optional ``accelerated-scan`` package (``pip install rnnlab[scan]``): its
  Triton kernel (``accelerated_scan.scalar``, chunked ``tl.associative_scan`` with a fused backward) on
  CUDA, its pure-PyTorch tree scan (``accelerated_scan.ref``, the one its kernels are checked against)
  elsewhere. Real gates only: a complex recurrence (LRU) runs ``associative`` instead, since the
  package's complex kernel cannot be checked against PyTorch's conjugate convention without a GPU.

``a`` and ``b`` may be complex (LRU); the gradients then follow PyTorch's conjugate convention.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
from torch import Tensor

from rnnlab.errors import ConfigError

SCANS = ("auto", "linear", "log", "associative", "accelerated")
LOG_CHUNK = 16  # steps per log-space chunk: |cumsum(log a)| stays small enough for 1e-5 in float32


@functools.cache
def _installed(package: str) -> bool:
    """Whether ``package`` can be imported; asked once a process, since ``auto`` resolves every forward."""
    return importlib.util.find_spec(package) is not None


def accelerated_available(device: torch.device) -> bool:
    """Whether ``accelerated-scan`` has a kernel for ``device``: its Triton one needs CUDA and Triton."""
    return device.type == "cuda" and _installed("accelerated_scan") and _installed("triton")


def resolve_scan(scan: str, device: torch.device, log_form: bool) -> str:
    """``auto``: the per-step scan on a CPU; on CUDA ``accelerated-scan``'s kernel where it is installed;
    otherwise the log-space scan where the cell has a log form (positive ``b``: minGRU, minLSTM), else the
    associative one (LRU, Mamba)."""
    if scan != "auto":
        return scan
    if device.type == "cpu":
        return "linear"
    if accelerated_available(device):
        return "accelerated"
    return "log" if log_form else "associative"


def recurrence(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """``h`` ``[B, T, ...]`` of the recurrence from ``h0`` ``[B, ...]``, outside autograd: one fused
    multiply-add a step, written in place into the ``[:, t]`` slices."""
    h = torch.empty_like(b, memory_format=torch.contiguous_format)
    previous = h0
    for t in range(b.size(1)):
        torch.addcmul(b[:, t], a[:, t], previous, out=h[:, t])
        previous = h[:, t]
    return h


def adjoint(a: Tensor, g: Tensor, out: Tensor) -> Tensor:
    """The recurrence run backwards, ``out_t = g_t + a_{t+1} out_{t+1}`` (``out`` may be ``g`` itself): what
    the loss's gradient with respect to each ``h_t`` is, given the gradient ``g_t`` reaching it directly."""
    out[:, -1] = g[:, -1]
    for t in range(g.size(1) - 2, -1, -1):
        torch.addcmul(g[:, t], a[:, t + 1], out[:, t + 1], out=out[:, t])
    return out


class _LinearRecurrence(torch.autograd.Function):
    """``h_t = a_t h_{t-1} + b_t`` on batch-major ``[B, T, H]`` tensors, ``h_{-1} = h0``.

    Each step reads and writes the strided ``[:, t]`` slices in place, so no time-major copy of the
    gates, their gradients or the states is ever made: at the sizes a CPU trains, the recurrence is a
    few passes over memory, and every copy would be one more.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        h = recurrence(a, b, h0)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a, h, h0 = ctx.saved_tensors
        a_next = a.conj().resolve_conj() if a.is_complex() else a
        grad_b = adjoint(a_next, grad_h, torch.empty_like(h))  # dL/db_t = g_t + a_{t+1} dL/db_{t+1}
        states = h.conj().resolve_conj() if h.is_complex() else h
        grad_a = torch.empty_like(h)  # dL/da_t = dL/db_t * conj(h_{t-1})
        torch.mul(grad_b[:, 1:], states[:, :-1], out=grad_a[:, 1:])
        torch.mul(grad_b[:, 0], h0.conj() if h0.is_complex() else h0, out=grad_a[:, 0])
        grad_h0 = grad_b[:, 0] * a_next[:, 0]
        return grad_a, grad_b, grad_h0


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """``h`` ``[B, T, H]`` of the recurrence, step by step in one fused op per step."""
    if h0 is None:
        h0 = torch.zeros_like(b[:, 0])
    return _LinearRecurrence.apply(a, b, h0.to(b.dtype))


def log_scan(log_a: Tensor, log_b: Tensor, log_h0: Tensor | None = None) -> Tensor:
    """``h = exp(log h)`` for positive ``b`` and ``h0``, from the logs of the gates ``[B, T, H]``."""
    pieces = []
    for start in range(0, log_b.size(1), LOG_CHUNK):
        a_star = log_a[:, start : start + LOG_CHUNK].cumsum(1)
        values = log_b[:, start : start + LOG_CHUNK] - a_star
        if log_h0 is not None:  # the state enters as the first term of the sum, in its own log
            values = torch.cat([log_h0.unsqueeze(1), values], dim=1)
            log_h = a_star + values.logcumsumexp(1)[:, 1:]
        else:
            log_h = a_star + values.logcumsumexp(1)
        pieces.append(log_h)
        log_h0 = log_h[:, -1]
    return torch.cat(pieces, dim=1).exp()


def associative_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """``h`` by Hillis–Steele: after the step of offset d, each position holds the composition of its last 2d."""
    if h0 is not None:  # the state folds into the first step's offset
        b = torch.cat([(a[:, :1] * h0.unsqueeze(1)) + b[:, :1], b[:, 1:]], dim=1)
    steps, offset = b.size(1), 1
    while offset < steps:
        b = torch.cat([b[:, :offset], a[:, offset:] * b[:, :-offset] + b[:, offset:]], dim=1)
        a = torch.cat([a[:, :offset], a[:, offset:] * a[:, :-offset]], dim=1)
        offset *= 2
    return b


def _accelerated_kernel(device: torch.device):
    """``scan(gates, tokens)`` on ``[B, C, T]`` from ``accelerated-scan``: its kernel on CUDA, else its reference."""
    try:
        if device.type == "cuda":
            from accelerated_scan.scalar import scan
        else:
            from accelerated_scan.ref import scan
    except ImportError as error:
        raise ConfigError(
            f"model.encoder.scan=accelerated needs the accelerated-scan package ({error}); "
            "install it with `pip install 'rnnlab[scan]'` or choose another scan (auto, linear, associative)"
        ) from None
    return scan


def accelerated_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """``h`` ``[B, T, ...]`` by ``accelerated-scan``; every trailing position is one channel of its ``[B, C, T]``.

    The package starts from a zero state, so a carried ``h0`` folds into the first step's ``b``
    (``a_0 h0 + b_0``, as the associative scan does), its gradient flowing through that product.
    """
    if a.is_complex() or b.is_complex():
        return associative_scan(a, b, h0)
    if h0 is not None:
        b = torch.cat([torch.addcmul(b[:, :1], a[:, :1], h0.unsqueeze(1)), b[:, 1:]], dim=1)
    shape = b.shape
    if shape[1] == 1:  # one step is its b (the reference tree scan needs two)
        return b
    gates, tokens = (x.reshape(shape[0], shape[1], -1).transpose(1, 2).contiguous() for x in (a, b))
    h = _accelerated_kernel(b.device)(gates, tokens)
    return h.transpose(1, 2).reshape(shape)


def step(a: Tensor, b: Tensor, h: Tensor | None) -> Tensor:
    """One step ``[B, H]`` of the recurrence: what generation and the reference loop run."""
    return b if h is None else torch.addcmul(b, a, h)
