"""Run fp32 ``nn.Linear`` through oneDNN during CPU inference: the same products, faster on AMD.

PyTorch's eager fp32 ``nn.Linear`` on CPU goes through MKL, which stays on 256-bit code on AMD
CPUs even with AVX-512; oneDNN (shipped with PyTorch) picks kernels by instruction set, and
nothing routes eager fp32 linears to it without lowering precision (docs/performance.md). This
module calls PyTorch's own oneDNN op (``torch.ops.mkldnn._linear_pointwise``) on the model's own
weights: no packed copy, no extra memory. Products are full fp32 in another summation order, so
greedy tokens can differ only where two logits tie to ~1e-6. It applies only to CPU fp32 weights
with gradients off and an unreplaced ``forward``, once a one-time probe call succeeds.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


@functools.cache
def available() -> bool:
    """Whether this build's oneDNN linear op runs and agrees with ``F.linear`` (probed once)."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x, w = torch.randn(3, 16, generator=gen), torch.randn(8, 16, generator=gen)
        b = torch.randn(8, generator=gen)
        return bool(torch.allclose(op(x, w, b, "none", [], ""), F.linear(x, w, b), atol=1e-5))
    except (RuntimeError, NotImplementedError):
        return False


def _forward(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` through oneDNN; PyTorch's path where the op does not apply."""
    if (
        torch.is_grad_enabled()
        or x.dtype != torch.float32
        or x.device.type != "cpu"
        or x.numel() == 0
        or module.weight.dtype != torch.float32
    ):
        return F.linear(x, module.weight, module.bias)
    return torch.ops.mkldnn._linear_pointwise(x, module.weight, module.bias, "none", [], "")


def _eligible(module: nn.Module) -> bool:
    return (
        type(module) is nn.Linear
        and "forward" not in module.__dict__
        and module.weight.device.type == "cpu"
        and module.weight.dtype == torch.float32
    )


@contextlib.contextmanager
def onednn_linear(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Route ``model``'s CPU fp32 ``nn.Linear`` layers through oneDNN while inside; yields how
    many layers were switched (0 when disabled, off-CPU, with gradients on or without the op).

    Each switched module gets an instance ``forward`` that is removed on exit, so the model is
    left as it was, also after an exception. The weights are read at every call, never copied.
    """
    switched: list[nn.Module] = []
    if enabled and not torch.is_grad_enabled() and available():
        for module in model.modules():
            if _eligible(module):
                module.forward = functools.partial(_forward, module)
                switched.append(module)
    try:
        yield len(switched)
    finally:
        for module in switched:
            module.__dict__.pop("forward", None)
