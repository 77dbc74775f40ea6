"""HuRef on the real SmolLM2-135M-Instruct (integration tier: a few seconds of compute each)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.huref.compare import compare
from tasks.huref.config import CompareConfig, DeriveConfig, ExtractConfig, TokenConfig
from tasks.huref.controls import derive
from tasks.huref.extract import extract

pytestmark = pytest.mark.integration
K = 512


def test_streamed_invariants_equal_the_full_model_load(smollm2_path):
    import torch
    from transformers import AutoModelForCausalLM

    from tasks.huref.arch import detect
    from tasks.huref.invariants import StateDictSource, compute_invariants
    from tasks.huref.safetensors_io import CheckpointReader
    from tasks.huref.tokens import select_tokens

    ids = list(select_tokens(smollm2_path, TokenConfig(), K).ids)
    reader = CheckpointReader(smollm2_path)
    arch = detect(smollm2_path, reader)
    assert (arch.n_heads, arch.n_kv_heads, arch.head_dim, arch.gated) == (9, 3, 64, True)
    streamed = compute_invariants(reader, arch, ids)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    full = compute_invariants(StateDictSource(model.state_dict(), smollm2_path), arch, ids)
    assert np.array_equal(streamed, full)
    total = sum(f.stat().st_size for f in smollm2_path.glob("*.safetensors"))
    assert reader.bytes_read < 0.1 * total


def test_smollm2_lineage_and_rearrangement(smollm2_path, tmp_path):
    inv = {}
    models = {"base": smollm2_path}
    for name, mode, noise in [("noise", "noise", 0.01), ("perm_rot", "permute_rotate", 0.0)]:
        models[name] = derive(
            smollm2_path,
            tmp_path / name,
            DeriveConfig(base="smollm2", mode=mode, noise=noise, seed=0),
        )
    for name, path in models.items():
        extract(path, tmp_path / f"inv-{name}", ExtractConfig(k=K), model_ref=name)
        inv[name] = tmp_path / f"inv-{name}"
    res = compare(list(inv.values()), CompareConfig(pcs=True))
    ics, pcs = res["ics"], res["pcs"]
    assert ics[0, 1] > 99 and ics[0, 2] > 99.99  # noisy offspring; permuted + rotated copy
    assert pcs[0, 1] > 99 and pcs[0, 2] < 50  # PCS is defeated by the rearrangement
