"""fp32 ``nn.Linear`` through oneDNN during CPU inference: the same products, 2-2.7x faster on AMD.

PyTorch runs an fp32 ``nn.Linear`` on CPU through MKL's sgemm. MKL picks its code path by CPU
vendor, and on AMD CPUs it stays at 256-bit code even where the CPU has AVX-512: on this
project's Zen 5 build machine it reaches 95 GFLOPS per core. oneDNN, which PyTorch also ships,
picks its kernels by instruction set (``brg_matmul:avx512_core`` here, all f32), and reaches
213 GFLOPS per core on the same machine. For SmolLM2's
shapes at 2 threads that is 390-440 against 136-180 GFLOPS (docs/benchmarks.md). On Intel CPUs
both libraries use AVX-512, so the switch changes little there.

No library routes an eager fp32 ``nn.Linear`` to oneDNN. PyTorch sends fp32 ``addmm`` to oneDNN
only at reduced precision (``float32_matmul_precision`` "medium"), which would change the
numbers. Inductor's weight prepacking uses MKL for fp32. IPEX did this, but it is retired and
does not support this torch. So this module does it by hand, with PyTorch's own oneDNN linear
op (``torch.ops.mkldnn._linear_pointwise``, the op inductor emits), on the model's own weight
tensors: no packed copy and no extra memory.

The products are full fp32 with another summation order. The error against a float64
reference is about 1e-6 relative, against MKL's 4e-7, so greedy tokens can differ only where
two logits tie to that precision. ``tests/tasks/test_cpu_linear.py`` checks the logits against
the stock path, and the generation tests compare every token with one-at-a-time
``model.generate``.

It applies only where it is safe: CPU fp32 weights, gradients off (the op has no autograd), and
modules whose ``forward`` nobody else has replaced (accelerate hooks). It is switched on by a
one-time probe call, so a build without the op keeps PyTorch's path.
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
    if (torch.is_grad_enabled() or x.dtype != torch.float32 or x.device.type != "cpu"
            or x.numel() == 0 or module.weight.dtype != torch.float32):
        return F.linear(x, module.weight, module.bias)
    return torch.ops.mkldnn._linear_pointwise(x, module.weight, module.bias, "none", [], "")


def _eligible(module: nn.Module) -> bool:
    return (type(module) is nn.Linear and "forward" not in module.__dict__
            and module.weight.device.type == "cpu" and module.weight.dtype == torch.float32)


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
