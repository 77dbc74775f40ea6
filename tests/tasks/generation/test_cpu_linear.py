"""oneDNN linear layers for CPU inference (``tasks.generation.cpu_linear``): same numbers to fp32
precision, only where safe, and the model left as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from tasks.generation import cpu_linear
from tasks.generation.cpu_linear import onednn_linear
from tasks.generation.engine import generate

pytestmark = pytest.mark.skipif(not cpu_linear.available(), reason="no oneDNN linear op here")


def count_switched(model) -> int:
    return sum("forward" in m.__dict__ for m in model.modules())


@pytest.fixture(scope="module")
def llama(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    return AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval(), tok


def test_logits_match_the_stock_path_and_the_model_is_restored(llama):
    model, _ = llama
    linears = sum(type(m) is nn.Linear for m in model.modules())
    x = torch.randint(4, 1000, (3, 17))
    with torch.inference_mode():
        stock = model(input_ids=x).logits
        with onednn_linear(model) as n:
            assert n == linears > 0
            assert count_switched(model) == linears
            fast = model(input_ids=x).logits
    assert count_switched(model) == 0
    assert not torch.equal(fast, torch.zeros_like(fast))
    torch.testing.assert_close(fast, stock, rtol=1e-4, atol=1e-4)


def test_a_linear_layer_agrees_with_float64_to_fp32_precision():
    gen = torch.Generator().manual_seed(0)
    layer = nn.Linear(576, 1536)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(1536, 576, generator=gen))
        layer.bias.copy_(torch.randn(1536, generator=gen))
    x = torch.randn(2, 31, 576, generator=gen)  # 3-D input, as in a transformer
    ref = x.double() @ layer.weight.detach().double().T + layer.bias.detach().double()
    with torch.inference_mode(), onednn_linear(layer) as n:
        out = layer(x)
    assert n == 1 and out.shape == (2, 31, 1536) and out.dtype == torch.float32
    assert float((out.double() - ref).abs().max() / ref.abs().max()) < 1e-5  # bf16 would be ~4e-3


def test_not_applied_with_gradients_on_other_dtypes_or_hooked_forwards(llama):
    model, _ = llama
    with onednn_linear(model) as n:  # training: the op has no autograd
        assert n == 0
    with torch.inference_mode(), onednn_linear(model, enabled=False) as n:
        assert n == 0
    half = nn.Linear(8, 8).to(torch.bfloat16)
    with torch.inference_mode(), onednn_linear(half) as n:
        assert n == 0
    hooked = nn.Linear(8, 8)
    hooked.forward = lambda x: x  # e.g. an accelerate hook: not ours to replace
    with torch.inference_mode(), onednn_linear(hooked) as n:
        assert n == 0
    assert hooked(torch.ones(1, 8)).sum() == 8  # left in place


def test_restored_after_an_exception(llama):
    model, _ = llama
    with pytest.raises(RuntimeError, match="boom"), torch.inference_mode():
        with onednn_linear(model) as n:
            assert n > 0
            raise RuntimeError("boom")
    assert count_switched(model) == 0


def test_empty_input_falls_back():
    layer = nn.Linear(8, 4)
    with torch.inference_mode(), onednn_linear(layer):
        assert layer(torch.ones(0, 8)).shape == (0, 4)


def test_generate_gives_the_same_tokens_either_way(llama):
    model, tok = llama
    ps = [[5 + i] * (3 + 2 * i) + [7, 8, 9] for i in range(6)]
    on = generate(model, tok, ps, max_new_tokens=10)
    off = generate(model, tok, ps, max_new_tokens=10, onednn=False)
    assert [g.tokens for g in on] == [g.tokens for g in off]
    assert all(len(g.tokens) == 10 for g in on)
    assert count_switched(model) == 0
