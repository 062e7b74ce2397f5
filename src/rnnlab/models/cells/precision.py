"""Recurrences in float32 inside autocast, where low precision is missing or unsafe.

Two cases meet here. oneDNN's bfloat16 LSTM needs AVX-512-BF16 or AMX: on a CPU without them
``nn.LSTM`` under CPU autocast raises "could not create a primitive descriptor" in the middle of a
run. And the parallel scans accumulate products of many gates, which bfloat16's 8-bit mantissa
cannot carry. Either way the recurrence runs in float32 with autocast off, its inputs cast up
and its outputs handed back in float32; everything around it (embedding, heads) stays mixed.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

# (cell class, device type, dtype) → whether a tiny forward + backward ran natively
_PROBED: dict[tuple[type, str, torch.dtype], bool] = {}


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The lower precision autocast runs on ``device`` now, or ``None`` where it is off."""
    kind = device.type
    if not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)


def runs_natively(cell: type[nn.Module], device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``cell`` (a ``torch.nn`` RNN class) has a kernel for ``dtype`` on ``device``, probed once.

    The answer depends on the CPU's instructions and on how torch was built, so it is asked of the
    kernel itself: two steps of a 1-unit cell, forward and backward, under the same autocast. The
    random numbers its weights draw are given back, so a run stays the run it was.
    """
    key = (cell, device.type, dtype)
    if key not in _PROBED:
        _PROBED[key] = _probe(cell, device, dtype)
        if not _PROBED[key]:
            log.warning(
                "%s has no %s kernel on this %s (for an LSTM on a CPU: oneDNN needs AVX-512-BF16 or AMX); "
                "its recurrence runs in float32 inside autocast, the rest of the model in %s",
                cell.__name__,
                dtype,
                device.type,
                dtype,
            )
    return _PROBED[key]


def _probe(cell: type[nn.Module], device: torch.device, dtype: torch.dtype) -> bool:
    with torch.random.fork_rng(devices=[]):  # building the probe draws its initial weights: put the stream back
        probe = cell(1, 1, batch_first=True).to(device)
    x = torch.zeros(1, 2, 1, device=device, requires_grad=True)
    try:
        with torch.enable_grad(), torch.autocast(device.type, dtype=dtype):
            outputs, _ = probe(x)
            outputs.float().sum().backward()
    except RuntimeError:
        return False
    return True


def needs_float32(cell: nn.Module, x: Tensor) -> bool:
    """Whether ``cell`` must run outside autocast on ``x``: a ``torch.nn`` RNN without a native kernel."""
    dtype = autocast_dtype(x.device)
    if dtype is None or not isinstance(cell, nn.RNNBase):
        return False
    return not runs_natively(type(cell), x.device, dtype)


def to_float32(state: Tensor | tuple[Tensor, ...] | None) -> Tensor | tuple[Tensor, ...] | None:
    """A state (a tensor, a tuple of them, or none) in float32; complex states stay complex."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(to_float32(s) for s in state)
    return state if state.dtype in (torch.float32, torch.complex64) else state.float()
