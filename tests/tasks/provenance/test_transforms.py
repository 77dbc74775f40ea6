"""Provenance transforms on tiny models: each changes exactly what its scheme says, no more."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from tasks.config import validate
from tasks.errors import ConfigError
from tasks.provenance.transforms import (
    TransformSpec,
    UnsupportedTransform,
    apply_transform,
    strength,
    transform_label,
)

IDS = torch.tensor([list(range(600, 700, 5))])  # ordinary tokens of the tiny tokenizer
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _w(folder: Path) -> dict[str, np.ndarray]:
    return load_file(str(folder / "model.safetensors"))


def _linear(name: str) -> bool:
    return any(f"{p}.weight" in name for p in LINEAR)


def _logits(folder: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(IDS).logits


def _spec(**kw) -> TransformSpec:
    return TransformSpec(**kw)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"family": "quantize"}, "family quantize needs bits"),
        ({"family": "quantize", "bits": 3}, "bits must be 8 or 4"),
        ({"family": "prune", "method": "magnitude"}, "needs sparsity"),
        ({"family": "prune", "method": "random", "sparsity": 1.0}, "sparsity"),
        ({"family": "noise", "scale": 0.1, "bits": 8}, "takes scale, not bits"),
        ({"family": "none", "sparsity": 0.5}, "takes no knobs, not sparsity"),
        ({"family": "permute_rotate", "group_size": 32}, "not group_size"),
    ],
)
def test_spec_refuses_missing_and_irrelevant_knobs(data, message):
    with pytest.raises(ConfigError, match=message):
        validate(TransformSpec, data, "test")


def test_strength_and_label_name_the_knob():
    cases = [
        (_spec(family="quantize", bits=4, group_size=32), 4.0, "int4 g32"),
        (_spec(family="quantize", bits=8), 8.0, "int8 per-channel"),
        (_spec(family="prune", method="magnitude", sparsity=0.5), 0.5, "prune magnitude 0.5"),
        (_spec(family="prune", method="random", sparsity=0.3, seed=2), 0.3, "prune random 0.3 s2"),
        (_spec(family="noise", scale=0.01), 0.01, "noise 0.01"),
        (_spec(family="permute_rotate"), None, "permute+rotate s0"),
        (_spec(family="none"), None, "none"),
    ]
    for spec, value, label in cases:
        assert (strength(spec), transform_label(spec)) == (value, label)


@pytest.fixture(scope="module")
def quantized(tiny_llama, tmp_path_factory) -> dict[tuple[int, int | None], tuple[Path, dict]]:
    out = {}
    for bits in (8, 4):
        for group in (None, 32):
            folder = tmp_path_factory.mktemp("q") / "model"
            spec = _spec(family="quantize", bits=bits, group_size=group)
            out[bits, group] = folder, apply_transform(tiny_llama, folder, spec)
    return out


def _groups(w: np.ndarray, group: int | None) -> np.ndarray:
    """(out, in) -> (out * n_groups, group) blocks sharing one scale."""
    return w.reshape(-1, group or w.shape[1])


@pytest.mark.parametrize("bits, group", [(8, None), (8, 32), (4, None), (4, 32)])
def test_quantize_round_trip_stays_within_the_scheme(quantized, tiny_llama, bits, group):
    folder, meta = quantized[bits, group]
    before, after = _w(tiny_llama), _w(folder)
    assert meta["library"] == "torchao 0.18.0" and meta["tensors_changed"] == 14
    assert meta["head"] == "kept (tied to the embedding)" and "lm_head.weight" not in after
    for name, w in before.items():
        if not _linear(name):
            assert np.array_equal(after[name], w), f"{name} is not a linear weight"
            continue
        q, g = _groups(after[name], group), _groups(w, group)
        scale = np.abs(g).max(axis=1, keepdims=True) / (2 ** (bits - 1) - 0.5)
        err = np.abs(q - g)
        assert err.max() > 0
        assert (err <= scale / 2 + 1e-7).all(), f"{name}: error above half a step"
        levels = np.round(q / scale)  # every value is an integer number of steps
        assert np.abs(q - levels * scale).max() < 1e-6
        assert levels.min() >= -(2 ** (bits - 1)) and levels.max() <= 2 ** (bits - 1) - 1


def test_fewer_bits_and_coarser_groups_cost_more_error(quantized, tiny_llama):
    before = _w(tiny_llama)

    def err(key):
        after = _w(quantized[key][0])
        return np.mean([np.abs(after[n] - w).mean() for n, w in before.items() if _linear(n)])

    assert err((4, None)) > 8 * err((8, None))
    assert err((4, 32)) < err((4, None)) and err((8, 32)) < err((8, None))


def test_quantized_model_loads_and_int8_keeps_the_logits_close(quantized, tiny_llama):
    base = _logits(tiny_llama)
    int8 = (_logits(quantized[8, None][0]) - base).abs().max()
    int4 = (_logits(quantized[4, None][0]) - base).abs().max()
    assert 0 < int8 < 0.01 * base.abs().max() and int4 > int8


def test_quantize_refuses_a_group_that_does_not_divide_a_layer(tiny_llama, tmp_path):
    with pytest.raises(UnsupportedTransform, match="not a multiple of the group size 48"):
        apply_transform(tiny_llama, tmp_path / "m", _spec(family="quantize", bits=4, group_size=48))
    assert not (tmp_path / "m").exists()


def test_quantize_handles_gpt2_conv1d_per_output_channel(tiny_gpt2, tmp_path):
    meta = apply_transform(tiny_gpt2, tmp_path / "m", _spec(family="quantize", bits=4))
    before, after = _w(tiny_gpt2), _w(tmp_path / "m")
    conv = [n for n in before if n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))]
    assert meta["tensors_changed"] == len(conv) == 8
    for name in conv:  # Conv1D stores (in, out): one scale per column, 16 levels at most
        assert max(len(np.unique(col)) for col in after[name].T) <= 16
        assert not np.array_equal(after[name], before[name])


@pytest.mark.parametrize("sparsity", [0.3, 0.5])
def test_magnitude_pruning_zeroes_the_smallest_share_exactly(tiny_llama, tmp_path, sparsity):
    spec = _spec(family="prune", method="magnitude", sparsity=sparsity)
    meta = apply_transform(tiny_llama, tmp_path / "m", spec)
    before, after = _w(tiny_llama), _w(tmp_path / "m")
    assert meta["tensors_changed"] == 14
    for name, w in before.items():
        if not _linear(name):
            assert np.array_equal(after[name], w)
            continue
        zero = after[name] == 0
        assert zero.sum() == round(sparsity * w.size)
        assert np.abs(w[zero]).max() <= np.abs(w[~zero]).min()
        assert np.array_equal(after[name][~zero], w[~zero])


def test_random_pruning_is_seeded_and_ignores_magnitude(tiny_llama, tmp_path):
    masks = {}
    for seed, name in ((0, "a"), (0, "b"), (1, "c")):
        spec = _spec(family="prune", method="random", sparsity=0.5, seed=seed)
        apply_transform(tiny_llama, tmp_path / name, spec)
        masks[name] = {k: v == 0 for k, v in _w(tmp_path / name).items() if _linear(k)}
    w = _w(tiny_llama)["model.layers.0.mlp.up_proj.weight"]
    mask = masks["a"]["model.layers.0.mlp.up_proj.weight"]
    assert mask.sum() == w.size // 2 and np.abs(w[mask]).max() > np.abs(w[~mask]).min()
    assert all(np.array_equal(masks["a"][k], masks["b"][k]) for k in masks["a"])
    assert not np.array_equal(mask, masks["c"]["model.layers.0.mlp.up_proj.weight"])


def test_noise_is_relative_to_each_tensors_std_and_keeps_the_tie(tiny_llama, tmp_path):
    meta = apply_transform(tiny_llama, tmp_path / "m", _spec(family="noise", scale=0.05))
    apply_transform(tiny_llama, tmp_path / "again", _spec(family="noise", scale=0.05))
    before, after = _w(tiny_llama), _w(tmp_path / "m")
    emb = "model.embed_tokens.weight"
    rel = (after[emb] - before[emb]).std() / before[emb].std()
    assert rel == pytest.approx(0.05, rel=0.03)
    assert set(after) == set(before) and "lm_head.weight" not in after
    constant = [k for k, v in before.items() if np.ptp(v) == 0]  # fresh norms: std 0, no noise
    assert constant and all(np.array_equal(after[k], before[k]) for k in constant)
    assert meta["tensors_changed"] == len(before) - len(constant)
    assert all(np.array_equal(v, _w(tmp_path / "again")[k]) for k, v in after.items())


def test_permute_rotate_changes_weights_but_not_the_function(tiny_llama, tmp_path):
    meta = apply_transform(tiny_llama, tmp_path / "m", _spec(family="permute_rotate", seed=3))
    assert meta["tensors_changed"] >= 15 and meta["rel_change"] > 0.1
    diff = (_logits(tmp_path / "m") - _logits(tiny_llama)).abs().max()
    assert diff < 1e-4


def test_permute_rotate_is_unsupported_on_fused_qkv(tiny_neox, tmp_path):
    with pytest.raises(UnsupportedTransform, match="permute\\+rotate s0"):
        apply_transform(tiny_neox, tmp_path / "m", _spec(family="permute_rotate"))


def test_none_hard_links_the_folder(tiny_llama, tmp_path):
    meta = apply_transform(tiny_llama, tmp_path / "m", _spec(family="none"))
    a, b = tiny_llama / "model.safetensors", tmp_path / "m" / "model.safetensors"
    assert a.stat().st_ino == b.stat().st_ino and meta["tensors_changed"] == 0
    assert (tmp_path / "m" / "tokenizer.json").is_file()
