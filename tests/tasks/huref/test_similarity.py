"""ICS / PCS: definitions, the chunked matrix, lineage, and invariance to rearrangements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.errors import ConfigError
from tasks.huref.compare import compare
from tasks.huref.config import CompareConfig, DeriveConfig, ExtractConfig
from tasks.huref.controls import derive
from tasks.huref.extract import extract
from tasks.huref.similarity import ics_matrix, ics_pair, standardize
from tasks.huref.store import load_invariants

K = 128


@pytest.fixture(scope="module")
def family(tiny_llama, tiny_llama_unrelated, tmp_path_factory) -> dict[str, Path]:
    """Invariants of a base, a derived (noisy) model, rearranged copies and unrelated models."""
    root = tmp_path_factory.mktemp("huref-family")
    models = {"base": tiny_llama, "unrelated": tiny_llama_unrelated}
    for mode, noise in [
        ("noise", 0.05),
        ("permute", 0),
        ("rotate_heads", 0),
        ("permute_rotate", 0),
        ("random_init", 0),
    ]:
        models[mode] = derive(
            tiny_llama,
            root / f"model-{mode}",
            DeriveConfig(base=str(tiny_llama), mode=mode, noise=noise, seed=7),
        )
    out = {}
    for name, path in models.items():
        extract(path, root / f"inv-{name}", ExtractConfig(k=K), model_ref=name)
        out[name] = root / f"inv-{name}"
    return out


def _seed_ics(a: torch.Tensor, b: torch.Tensor) -> float:
    """Invariant_terms_Cos_Sim.py, written as the seed does it in torch."""
    za = torch.cat([((m - m.mean()) / m.std()).flatten() for m in a.double()])
    zb = torch.cat([((m - m.mean()) / m.std()).flatten() for m in b.double()])
    return float(100 * torch.nn.functional.cosine_similarity(za, zb, dim=0))


def test_ics_pair_is_the_seeds_definition(family):
    a, _ = load_invariants(family["base"])
    b, _ = load_invariants(family["noise"])
    assert ics_pair(a.numpy(), a.numpy()) == pytest.approx(100.0, abs=1e-9)
    assert ics_pair(a.numpy(), b.numpy()) == pytest.approx(_seed_ics(a, b), abs=1e-9)
    m = a[0].numpy()
    assert standardize(m).std(ddof=1) == pytest.approx(1.0)


def test_chunked_matrix_equals_pairwise_ics(family):
    names = list(family)
    paths = [family[n] for n in names]
    mat, _ = ics_matrix(paths, chunk_mb=1)  # forces many row blocks
    tensors = [load_invariants(p)[0].numpy() for p in paths]
    for i in range(len(names)):
        for j in range(len(names)):
            assert mat[i, j] == pytest.approx(ics_pair(tensors[i], tensors[j]), abs=1e-8)


def test_lineage_same_derived_unrelated(family):
    res = compare(
        [family[n] for n in ("base", "noise", "unrelated", "random_init")], CompareConfig(pcs=False)
    )
    ics = res["ics"]
    assert ics[0, 0] == pytest.approx(100.0)
    assert ics[0, 1] > 90  # same lineage
    assert abs(ics[0, 2]) < 10 and abs(ics[0, 3]) < 10  # "low" ICS means |ICS| < 10
    assert all(r["tokens_match"] for r in res["rows"])


@pytest.mark.parametrize("mode", ["permute", "rotate_heads", "permute_rotate"])
def test_rearrangements_keep_ics_and_defeat_pcs(family, mode):
    res = compare(
        [family["base"], family[mode], family["noise"], family["unrelated"]],
        CompareConfig(pcs=True),
    )
    ics, pcs = res["ics"], res["pcs"]
    assert ics[0, 1] > 99.99
    if mode != "rotate_heads":  # a head rotation touches attention only: PCS drops less
        # PCS falls to the unrelated-model level (norm weights keep both near ~80 on tiny models)
        assert pcs[0, 1] < pcs[0, 3] + 2 and pcs[0, 1] < pcs[0, 2] - 10
    else:
        assert pcs[0, 1] < pcs[0, 2] - 1
    assert res["rows"][0]["pcs_skipped"] == 0


@pytest.mark.parametrize("mode", ["permute", "rotate_heads", "permute_rotate"])
def test_rearranged_models_compute_the_same_function(tiny_llama, tmp_path, mode):
    from transformers import AutoModelForCausalLM

    other = derive(
        tiny_llama, tmp_path / "m", DeriveConfig(base=str(tiny_llama), mode=mode, seed=3)
    )
    ids = torch.tensor([[5, 100, 300, 7, 900, 12, 44]])
    with torch.no_grad():
        a = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()(ids).logits
        b = AutoModelForCausalLM.from_pretrained(other).eval()(ids).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_pcs_is_null_across_architectures(family, tiny_neox, tmp_path):
    extract(tiny_neox, tmp_path / "neox", ExtractConfig(k=K), model_ref="neox")
    res = compare([family["base"], tmp_path / "neox"], CompareConfig(pcs=True))
    row = res["rows"][0]
    assert row["pcs"] is None and row["pcs_skipped"] is None and abs(row["ics"]) < 10


def test_pcs_skips_mismatched_shapes_and_counts_them(tiny_llama, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from tasks.huref.similarity import pcs_matrix

    shutil.copytree(tiny_llama, tmp_path / "ext")
    sd = load_file(tiny_llama / "model.safetensors")
    emb = sd["model.embed_tokens.weight"]
    sd["model.embed_tokens.weight"] = torch.cat([emb, emb[:8]])  # an extended vocabulary
    save_file(sd, tmp_path / "ext" / "model.safetensors", metadata={"format": "pt"})
    pcs, skipped = pcs_matrix([tiny_llama, tmp_path / "ext"])
    assert skipped[0, 1] == 1 and pcs[0, 1] == pytest.approx(100.0)


def test_different_k_and_token_sets_are_refused(family, tiny_llama, tmp_path):
    extract(tiny_llama, tmp_path / "k64", ExtractConfig(k=64), model_ref="k64")
    with pytest.raises(ConfigError, match="different k"):
        compare([family["base"], tmp_path / "k64"], CompareConfig(pcs=False))
    cfg = ExtractConfig(
        k=K, tokens={"strategy": "corpus", "corpus": ["reasoning_gym:in_the_year_2889"]}
    )
    extract(tiny_llama, tmp_path / "corpus", cfg, model_ref="corpus")
    with pytest.raises(ConfigError, match="different token sets"):
        compare([family["base"], tmp_path / "corpus"], CompareConfig(pcs=False))
    res = compare(
        [family["base"], tmp_path / "corpus"], CompareConfig(pcs=False, mixed_tokens=True)
    )
    assert res["rows"][0]["tokens_match"] is False and res["rows"][0]["token_set_hash"] is None


def test_residual_rotation_changes_mf_of_a_gated_mlp(tiny_llama):
    """A residual-stream rotation keeps Ma and Mb but not Mf (gate * up)."""
    from tasks.huref.arch import attention, detect, mlp
    from tasks.huref.invariants import attention_terms, mlp_term
    from tasks.huref.safetensors_io import CheckpointReader

    reader = CheckpointReader(tiny_llama)
    a = detect(tiny_llama, reader)
    rot = np.linalg.qr(np.random.default_rng(0).standard_normal((a.hidden_size,) * 2))[0]
    x = reader.read_rows(a.embed_key, list(range(600, 700))).astype(np.float64)
    q, k, v, o = (w.astype(np.float64) for w in attention(reader, a, 1))
    up, gate, down = (w.astype(np.float64) for w in mlp(reader, a, 1))
    before = (*attention_terms(x, q, k, v, o, a), mlp_term(x, up, gate, down))
    after = (
        *attention_terms(x @ rot, q @ rot, k @ rot, v @ rot, rot.T @ o, a),
        mlp_term(x @ rot, up @ rot, gate @ rot, rot.T @ down),
    )
    assert np.allclose(before[0], after[0]) and np.allclose(before[1], after[1])
    assert ics_pair(np.stack([before[2]]), np.stack([after[2]])) < 99
