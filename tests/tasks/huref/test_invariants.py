"""HuRef invariants: formulas against the models' own weights and forward code, every family,
selective reads, and bad checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.errors import ArchitectureError, CheckpointError
from tasks.huref.arch import detect
from tasks.huref.config import ExtractConfig
from tasks.huref.extract import extract
from tasks.huref.invariants import StateDictSource, compute_invariants
from tasks.huref.safetensors_io import CheckpointReader
from tasks.huref.store import load_invariants
from tests.tasks.huref.families import FAMILIES, IDS, _hf, _rel


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_builds_invariants_in_seed_order(family_paths, name, tmp_path):
    row = extract(family_paths[name], tmp_path, ExtractConfig(k=64), model_ref=name)
    inv, meta = load_invariants(tmp_path)
    assert inv.shape == (6, 64, 64) and torch.isfinite(inv).all()
    assert meta["terms"] == ["Ma(L-2)", "Mb(L-2)", "Mf(L-2)", "Ma(L-1)", "Mb(L-1)", "Mf(L-1)"]
    assert meta["layers"] == [0, 1] and row["k"] == 64 and row["token_set_hash"]
    # only the needed tensors were read: far less than the checkpoint
    total = sum(f.stat().st_size for f in family_paths[name].glob("*.safetensors"))
    assert 0 < row["bytes_read"] < 0.8 * total


@pytest.mark.parametrize(
    "name", ["tiny-llama", "tiny-qwen2", "tiny-mistral", "tiny-gemma", "tiny-opt"]
)
def test_formulas_match_dense_computation_with_repeated_kv(family_paths, name):
    """METHODS 3.3 written out densely from the HF modules, K/V expanded with repeat_kv."""
    from transformers.models.llama.modeling_llama import repeat_kv

    path = family_paths[name]
    reader = CheckpointReader(path)
    a = detect(path, reader)
    inv = compute_invariants(reader, a, IDS)
    model = _hf(path)
    x = model.get_input_embeddings().weight[IDS].detach().double()
    layers = model.model.decoder.layers if name == "tiny-opt" else model.model.layers
    for j, layer in enumerate(layers):
        at = layer.self_attn
        wq, wk, wv = (m.weight.detach().double() for m in (at.q_proj, at.k_proj, at.v_proj))
        wo = (at.o_proj if hasattr(at, "o_proj") else at.out_proj).weight.detach().double()
        h, kv, hd = a.n_heads, a.n_kv_heads, a.head_dim
        wk = repeat_kv(wk.reshape(1, kv, hd, -1), h // kv).reshape(h * hd, -1)
        wv = repeat_kv(wv.reshape(1, kv, hd, -1), h // kv).reshape(h * hd, -1)
        if name == "tiny-opt":
            up, gate, down = layer.fc1.weight, None, layer.fc2.weight
        else:
            up, gate, down = (
                layer.mlp.up_proj.weight,
                layer.mlp.gate_proj.weight,
                layer.mlp.down_proj.weight,
            )
        inner = up.T if gate is None else gate.T * up.T
        expected = [
            x @ wq.T @ wk @ x.T,
            x @ wv.T @ wo.T @ x.T,
            x @ inner.detach().double() @ down.T.detach().double() @ x.T,
        ]
        for t, ref in enumerate(expected):
            assert _rel(inv[3 * j + t], ref) < 1e-5, (name, j, t)


def _zero_biases(model) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.zero_()


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-neox", "tiny-gpt2", "tiny-opt"])
def test_attention_terms_match_the_models_own_forward(family_paths, name):
    """Ma = sum over heads of the model's own q.k logits (RoPE at position 0 is the identity),
    Mb = the attention block's output under identity attention; GQA pairing and fused-QKV
    layouts come from transformers' forward, not from our reading of it."""
    from transformers import AttentionInterface
    from transformers.models.llama.modeling_llama import repeat_kv

    captured = {}

    def probe(module, query, key, value, attention_mask, **kwargs):
        rep = query.shape[1] // key.shape[1]
        k, v = repeat_kv(key, rep), repeat_kv(value, rep)
        captured["ma"] = (query[0] @ k[0].transpose(-1, -2)).sum(0)
        return v.transpose(1, 2).contiguous(), None

    AttentionInterface.register("huref_probe", probe)
    path = family_paths[name]
    reader = CheckpointReader(path)
    inv = compute_invariants(reader, detect(path, reader), IDS)
    model = _hf(path)
    _zero_biases(model)
    model.config._attn_implementation = "huref_probe"
    x = model.get_input_embeddings().weight[IDS].detach()[None]
    base = getattr(model, "gpt_neox", None) or getattr(model, "transformer", None) or model.model
    layers = base.decoder.layers if name == "tiny-opt" else getattr(base, "layers", None) or base.h
    kwargs = {}
    if hasattr(base, "rotary_emb"):
        kwargs["position_embeddings"] = base.rotary_emb(x, torch.zeros(1, len(IDS), dtype=int))
    for j, layer in enumerate(layers):
        attn = getattr(layer, "self_attn", None) or getattr(layer, "attention", None) or layer.attn
        attn.config._attn_implementation = "huref_probe"
        with torch.no_grad():
            out = attn(hidden_states=x, attention_mask=None, **kwargs)[0][0]
        # OPT folds the softmax scale into its query projection; HuRef uses the raw weights
        ma = captured["ma"] / attn.scaling if name == "tiny-opt" else captured["ma"]
        assert _rel(inv[3 * j], ma) < 1e-5, (name, j)
        assert _rel(inv[3 * j + 1], out @ x[0].T) < 1e-5, (name, j)
        if name == "tiny-llama":  # the seed's tiling of K pairs heads the model never pairs
            wq, wk = attn.q_proj.weight.detach(), attn.k_proj.weight.detach()
            tiled = x[0] @ wq.T @ torch.cat([wk] * (wq.shape[0] // wk.shape[0])) @ x[0].T
            assert _rel(tiled.numpy(), ma) > 0.1


def test_falcon_fused_layout_matches_its_split_heads(family_paths):
    path = family_paths["tiny-falcon"]
    reader = CheckpointReader(path)
    a = detect(path, reader)
    assert a.qkv_layout == "grouped" and a.n_kv_heads == 2
    inv = compute_invariants(reader, a, IDS)
    model = _hf(path)
    x = model.get_input_embeddings().weight[IDS].detach()
    for j, layer in enumerate(model.transformer.h):
        at = layer.self_attention
        with torch.no_grad():
            q, k, v = at._split_heads((x @ at.query_key_value.weight.T)[None])
            q, k, v = (t[0].reshape(len(IDS), a.n_heads, a.head_dim) for t in (q, k, v))
            ma = torch.einsum("shd,thd->st", q, k)
            mb = v.reshape(len(IDS), -1) @ at.dense.weight.T @ x.T
        assert _rel(inv[3 * j], ma) < 1e-5 and _rel(inv[3 * j + 1], mb) < 1e-5


def test_streamed_equals_full_load_bitwise(family_paths):
    """The seed's way (whole model in memory) and the streaming reader give identical bits."""
    path = family_paths["tiny-llama"]
    reader = CheckpointReader(path)
    a = detect(path, reader)
    streamed = compute_invariants(reader, a, IDS)
    full = compute_invariants(StateDictSource(_hf(path).state_dict(), path), a, IDS)
    assert np.array_equal(streamed, full)


def test_bf16_checkpoint_reads_exactly(tmp_path, family_paths):
    from safetensors.torch import load_file, save_file

    src = family_paths["tiny-llama"]
    shutil.copytree(src, tmp_path / "m")
    sd = load_file(src / "model.safetensors")
    save_file(
        {k: v.bfloat16() for k, v in sd.items()},
        tmp_path / "m" / "model.safetensors",
        metadata={"format": "pt"},
    )
    reader = CheckpointReader(tmp_path / "m")
    key = "model.embed_tokens.weight"
    assert np.array_equal(
        reader.read_rows(key, [5, 1, 900]), sd[key].bfloat16().float().numpy()[[5, 1, 900]]
    )


def test_sharded_checkpoint_with_index(tmp_path, family_paths):
    from safetensors.torch import load_file, save_file

    src = family_paths["tiny-llama"]
    sd = load_file(src / "model.safetensors")
    out = tmp_path / "sharded"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("model.safetensors"))
    names = sorted(sd)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: sd[n] for n in part}, out / fname, metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    r1, r2 = CheckpointReader(src), CheckpointReader(out)
    inv1 = compute_invariants(r1, detect(src, r1), IDS)
    assert np.array_equal(inv1, compute_invariants(r2, detect(out, r2), IDS))


def _strip_layer(src: Path, dst: Path, layer: int) -> None:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    sd = load_file(src / "model.safetensors")
    save_file(
        {k: v for k, v in sd.items() if f"layers.{layer}." not in k},
        dst / "model.safetensors",
        metadata={"format": "pt"},
    )


def test_missing_layer_is_a_checkpoint_error(tmp_path, family_paths):
    _strip_layer(family_paths["tiny-llama"], tmp_path / "m", 1)
    with pytest.raises(CheckpointError, match=r"lacks layer\(s\) \[1\]"):
        extract(tmp_path / "m", tmp_path / "out", ExtractConfig(k=32))
    assert not (tmp_path / "out").exists()


def test_corrupt_and_truncated_safetensors(tmp_path, family_paths):
    shutil.copytree(family_paths["tiny-llama"], tmp_path / "m")
    f = tmp_path / "m" / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        CheckpointReader(tmp_path / "m")
    f.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + data[200:])
    with pytest.raises(CheckpointError, match="unreadable safetensors header"):
        CheckpointReader(tmp_path / "m")


def test_unknown_architecture_names_what_it_saw(tmp_path, family_paths):
    from safetensors.torch import load_file, save_file

    shutil.copytree(family_paths["tiny-llama"], tmp_path / "m")
    sd = load_file(tmp_path / "m" / "model.safetensors")
    save_file(
        {k.replace("self_attn.q_proj", "attn.wq"): v for k, v in sd.items()},
        tmp_path / "m" / "model.safetensors",
        metadata={"format": "pt"},
    )
    with pytest.raises(ArchitectureError, match="model_type='llama'.*attn.wq|model_type='llama'"):
        detect(tmp_path / "m", CheckpointReader(tmp_path / "m"))


def test_torch_path_for_low_precision_matches_numpy(family_paths):
    """bf16/fp16 compute runs through torch (the GPU path) with the same formula code."""
    path = family_paths["tiny-llama"]
    reader = CheckpointReader(path)
    a = detect(path, reader)
    ref = compute_invariants(reader, a, IDS)
    low = compute_invariants(reader, a, IDS, dtype="bfloat16", device="cpu")
    assert low.dtype == np.float32 and _rel(low, torch.from_numpy(ref)) < 5e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_matches_cpu(family_paths):
    path = family_paths["tiny-llama"]
    reader = CheckpointReader(path)
    a = detect(path, reader)
    ref = compute_invariants(reader, a, IDS)
    gpu = compute_invariants(reader, a, IDS, device="cuda")
    assert _rel(gpu, torch.from_numpy(ref)) < 1e-5


def test_bad_device_and_dtype_are_config_errors():
    from tasks.errors import ConfigError
    from tasks.huref.invariants import resolve_device

    with pytest.raises(ConfigError, match="device 'tpu'"):
        resolve_device("tpu", "float32")
    with pytest.raises(ConfigError, match="dtype 'int8'"):
        resolve_device("cpu", "int8")
    assert resolve_device("cpu", "float32") == "cpu"


@pytest.mark.parametrize("shape", [(50, 20, 8), (50, 20, 60), (10, 40, 100)])
def test_sandwich_association_choices_agree(shape):
    """factored, core and chain associations (picked by FLOP count) all give X L R X^T."""
    from tasks.huref.invariants import sandwich

    k, d, r = shape
    rng = np.random.default_rng(0)
    x, left, right = (rng.standard_normal(s) for s in ((k, d), (d, r), (r, d)))
    assert np.allclose(sandwich(x, left, right), x @ left @ right @ x.T)
