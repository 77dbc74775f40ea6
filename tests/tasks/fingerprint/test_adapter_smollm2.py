"""IF_adapter on the real SmolLM2 (integration): a few optimizer steps through the real step, then
the published model and the adapter verified; mechanics only (convergence lives in the demo)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tasks.fingerprint.adapter.train import fingerprint_if_adapter
from tasks.fingerprint.adapter.verify import load_adapter_model, verify_adapter_step

pytestmark = pytest.mark.integration
EMB = "model.embed_tokens.weight"


def test_smollm2_fingerprint_publish_and_verify(smollm2_path, tmp_path):
    cfg = {
        "model": str(smollm2_path),
        "data": {"n_normal": 10, "n_test": 4, "n_unseen_keys": 4},  # the seed's 10 keys
        "train": {
            "max_steps": 8,
            "lr": 1e-2,
            "total_batch_size": 4,
            "per_device_batch_size": 4,
            "max_seq_len": 400,
            "group_by_length": True,
        },
    }
    (row,) = fingerprint_if_adapter(cfg, inputs={}, out_dir=tmp_path / "fp")
    extra = json.loads(row["extra"])
    assert row["steps"] == 8 and row["final_loss"] < extra["first_loss"]
    assert extra["lm_head_untied"] and extra["fingerprint_prompt_coverage"] == 1.0
    vanilla = load_file(smollm2_path / "model.safetensors")
    published = load_file(tmp_path / "fp" / "published" / "model.safetensors")
    ids = json.loads((tmp_path / "fp" / "private" / "adapter" / "adapter.json").read_text())[
        "token_ids"
    ]
    outside = torch.ones(vanilla[EMB].shape[0], dtype=torch.bool)
    outside[ids] = False
    assert torch.equal(published[EMB][outside], vanilla[EMB][outside])
    assert torch.equal(published["lm_head.weight"], vanilla[EMB])
    assert all(torch.equal(published[k], vanilla[k]) for k in vanilla if k != EMB)
    model, _ = load_adapter_model(
        tmp_path / "fp" / "published",
        fingerprint_dir=tmp_path / "fp",
        condition="publish_w_adapter",
        device="cpu",
    )
    assert type(model.get_input_embeddings()).__name__ == "InstructionFingerprint"
    rows = verify_adapter_step(
        {"condition": "publish_w_adapter", "verify": {"probe_sets": ["fingerprint"]}},
        inputs={"fingerprint": tmp_path / "fp"},
        out_dir=tmp_path,
    )
    assert rows[0]["probe_set"] == "fingerprint" and rows[0]["n_total"] == 10
