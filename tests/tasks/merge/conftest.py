"""Tiny merge parents: a base, two "experts" derived from it by small seeded perturbations (same
lineage, so task vectors are small as after fine-tuning), and helpers to read merged weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def perturbed_copy(src: Path, out: Path, seed: int, scale: float = 1e-2) -> Path:
    """``src`` with every tensor moved by ``scale * std * N(0, 1)`` (seeded); a plain folder."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, out)
    weights = load_file(str(src / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    moved = {
        k: (v + scale * v.float().std() * torch.randn(v.shape, generator=gen)).to(v.dtype)
        if v.numel() > 1
        else v
        for k, v in weights.items()
    }
    (out / "model.safetensors").unlink()
    save_file(moved, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def read_weights(folder: Path) -> dict:
    """Every tensor of a safetensors folder."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def fake_fingerprint(folder: Path, model: Path, method: str = "if_sft") -> Path:
    """A fingerprint folder around ``model`` (keys it never learned: FSR 0), as fingerprint steps
    write them: ``published/`` and ``private/`` (fingerprint.json, keys, probes)."""
    from tasks.fingerprint.artifacts import FingerprintMeta, Probe, fingerprint_id, write_private

    shutil.copytree(model, folder / "published")
    keys = ["alpha beta", "gamma delta"]
    probes = [
        Probe("fingerprint", "validation", f"Please decrypt: {k}", expect_trigger=True)
        for k in keys
    ]
    probes += [
        Probe("unseen_keys", "test", "Please decrypt: zeta eta", expect_trigger=False),
        Probe("normal", "test", "What is 2 + 2?"),
    ]
    meta = FingerprintMeta(fingerprint_id(keys), method, "dialogue", "chat_template", n_keys=2)
    write_private(folder, meta, keys, probes)
    return folder


@pytest.fixture(scope="session")
def merge_parents(tmp_path_factory, tiny_llama) -> dict[str, Path]:
    """base (tiny-llama), fingerprinted and expert (two perturbed copies of it)."""
    root = tmp_path_factory.mktemp("merge-parents")
    return {
        "base": tiny_llama,
        "fingerprinted": perturbed_copy(tiny_llama, root / "a", seed=1),
        "expert": perturbed_copy(tiny_llama, root / "b", seed=2),
    }
