"""The independent pool: entries expand to one item per model; random inits are new lineages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tasks.config import validate
from tasks.errors import ConfigError
from tasks.provenance.pool import PoolEntry, build_pool_model, expand


def _w(folder: Path) -> dict[str, np.ndarray]:
    return load_file(str(folder / "model.safetensors"))


def _load(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def test_expand_gives_one_labelled_item_per_model():
    entries = [
        PoolEntry(ref="gemma3-270m"),
        PoolEntry(random_init="owner", seeds=[0, 1]),
        PoolEntry(random_init="gpt2", label="g"),
    ]
    assert expand(entries) == [
        {"label": "gemma3-270m", "ref": "gemma3-270m", "random_init": None, "seed": None},
        {"label": "random-init owner s0", "ref": None, "random_init": "owner", "seed": 0},
        {"label": "random-init owner s1", "ref": None, "random_init": "owner", "seed": 1},
        {"label": "g s0", "ref": None, "random_init": "gpt2", "seed": 0},
    ]
    with pytest.raises(ConfigError, match="pool labels repeat: x"):
        expand([PoolEntry(ref="a/b", label="x"), PoolEntry(ref="c/d", label="x")])


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "exactly one of ref and random_init"),
        ({"ref": "a/b", "random_init": "owner"}, "exactly one of ref and random_init"),
        ({"random_init": "bert"}, "not 'owner' or a tiny family"),
        ({"ref": "a/b", "seeds": [1, 2]}, "seeds apply to random_init"),
        ({"random_init": "llama", "seeds": [1, 1]}, "seeds repeat"),
    ],
)
def test_pool_entry_refuses_ambiguous_members(data, message):
    with pytest.raises(ConfigError, match=message):
        validate(PoolEntry, data, "test")


def test_owner_random_init_keeps_shapes_and_draws_new_weights(tiny_llama, tmp_path):
    item = expand([PoolEntry(random_init="owner", seeds=[4])])[0]
    out = build_pool_model(item, tiny_llama, tmp_path / "m")
    owner, fresh = _w(tiny_llama), _w(out)
    assert {k: v.shape for k, v in fresh.items()} == {k: v.shape for k, v in owner.items()}
    emb = "model.embed_tokens.weight"
    assert fresh[emb].std() == pytest.approx(0.02, rel=0.05)
    corr = np.corrcoef(fresh[emb].ravel(), owner[emb].ravel())[0, 1]
    assert abs(corr) < 0.05
    assert _load(out).config.model_type == "llama"


def test_tiny_family_random_init_uses_the_owners_tokenizer_and_a_fresh_seed(tiny_llama, tmp_path):
    gpt2 = build_pool_model(expand([PoolEntry(random_init="gpt2")])[0], tiny_llama, tmp_path / "g")
    model = _load(gpt2)
    assert model.config.model_type == "gpt2" and model.config.vocab_size == 1024
    owner_tok = json.loads((tiny_llama / "tokenizer.json").read_text())
    assert json.loads((gpt2 / "tokenizer.json").read_text()) == owner_tok
    # Pool member "llama" seed 0 must not reproduce the zoo's tiny-llama (seed 0), the owner.
    llama = build_pool_model(
        expand([PoolEntry(random_init="llama")])[0], tiny_llama, tmp_path / "l"
    )
    owner, member = _w(tiny_llama), _w(llama)
    assert set(owner) == set(member)
    assert not np.array_equal(
        owner["model.embed_tokens.weight"], member["model.embed_tokens.weight"]
    )


def test_a_reference_resolves_without_writing(tiny_llama, tmp_path):
    item = expand([PoolEntry(ref=str(tiny_llama))])[0]
    assert build_pool_model(item, tiny_llama, tmp_path / "m") == tiny_llama.resolve()
    assert not (tmp_path / "m").exists()
