"""Merges through mergekit's API on tiny models: exact results, seeds, the CLI's equal, tied heads,
and preflight refusals before any work (no hub call for a missing path)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.errors import ArchitectureError, CheckpointError, ModelRefError
from tasks.merge.config import CellSpec, canonical_cell, mergekit_config
from tasks.merge.mergekit_run import run_mergekit
from tasks.merge.preflight import preflight, resolve_ref
from tests.tasks.merge.conftest import read_weights

ROOT = Path(__file__).resolve().parents[3]


def _merge(parents, spec: CellSpec, out: Path, seed: int | None = None):
    cell = canonical_cell(spec)
    paths = {r: str(p) for r, p in parents.items()}
    s = seed if seed is not None else (cell["seed"] or 0)
    return run_mergekit(mergekit_config(cell, paths), out, seed=s)


def test_task_arithmetic_weights_1_0_reproduce_the_first_model(merge_parents, tmp_path):
    """base + 1 * (a - base) + 0 * (b - base) = a, up to one float32 rounding per element."""
    done = _merge(
        merge_parents, CellSpec(method="task_arithmetic", weights=(1.0, 0.0)), tmp_path / "m"
    )
    merged, a = read_weights(done.path), read_weights(merge_parents["fingerprinted"])
    assert merged.keys() == a.keys()
    for k in a:
        torch.testing.assert_close(
            merged[k], a[k], rtol=0, atol=1e-6 * float(a[k].abs().max()) + 1e-9
        )
    assert done.bytes > 0 and not done.untied_head


def test_dare_same_seed_bitwise_equal_other_seed_differs(merge_parents, tmp_path):
    spec = CellSpec(method="dare_ties", weights=(0.5, 0.5), densities=(0.4, 0.4))
    one = read_weights(_merge(merge_parents, spec, tmp_path / "s0a", seed=0).path)
    two = read_weights(_merge(merge_parents, spec, tmp_path / "s0b", seed=0).path)
    other = read_weights(_merge(merge_parents, spec, tmp_path / "s1", seed=1).path)
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert any(not torch.equal(one[k], other[k]) for k in one)


def test_loader_cache_is_emptied_after_each_merge(merge_parents, tmp_path):
    from mergekit.io.tasks import LoaderCache

    _merge(merge_parents, CellSpec(method="linear", weights=(0.5, 0.5)), tmp_path / "m")
    assert LoaderCache.loaders == {}


def test_failed_merge_leaves_nothing(merge_parents, tmp_path):
    """della at density 0.1 with its default epsilon 0.15: mergekit raises inside the merge
    (density - epsilon must stay above 0); no half-written folder is left."""
    with pytest.raises(Exception) as info:
        _merge(
            merge_parents,
            CellSpec(method="della", weights=(0.5, 0.5), densities=(0.1, 0.1)),
            tmp_path / "m",
        )
    assert "epsilon" in str(info.value).lower()
    assert list(tmp_path.iterdir()) == []


def _untied_copy(src: Path, out: Path) -> Path:
    """``src`` with its own lm_head (the embedding plus noise) and tie_word_embeddings false, as
    IF_adapter publishes a tied model."""
    from safetensors.torch import save_file

    shutil.copytree(src, out)
    w = read_weights(src)
    gen = torch.Generator().manual_seed(5)
    emb = w["model.embed_tokens.weight"]
    w["lm_head.weight"] = emb + 0.1 * emb.std() * torch.randn(emb.shape, generator=gen)
    (out / "model.safetensors").unlink()
    save_file(w, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((out / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def test_merged_untied_head_survives_a_transformers_load(merge_parents, tmp_path):
    """An untied parent merged with tied ones: mergekit writes lm_head under the base's tied
    config; fprun unties the config, so transformers keeps the merged head."""
    from transformers import AutoModelForCausalLM

    parents = {
        **merge_parents,
        "fingerprinted": _untied_copy(merge_parents["fingerprinted"], tmp_path / "u"),
    }
    assert preflight(parents)["fingerprinted"].has_head
    done = _merge(parents, CellSpec(method="task_arithmetic", weights=(0.5, 0.5)), tmp_path / "m")
    assert done.untied_head
    written = read_weights(done.path)
    model = AutoModelForCausalLM.from_pretrained(done.path, dtype=torch.float32)
    head = model.get_output_embeddings().weight
    assert torch.equal(head, written["lm_head.weight"])
    assert not torch.equal(head, model.get_input_embeddings().weight)


def test_preflight_refuses_mismatched_parents(merge_parents, tiny_neox, tmp_path):
    base = merge_parents["base"]
    with pytest.raises(ArchitectureError, match="is GPTNeoXForCausalLM"):
        preflight({"base": base, "other": tiny_neox})
    vocab = shutil.copytree(base, tmp_path / "vocab")
    cfg = json.loads((vocab / "config.json").read_text())
    (vocab / "config.json").write_text(json.dumps({**cfg, "vocab_size": cfg["vocab_size"] + 8}))
    with pytest.raises(ArchitectureError, match="vocab_size differs"):
        preflight({"base": base, "other": vocab})
    tok = shutil.copytree(base, tmp_path / "tok")
    data = json.loads((tok / "tokenizer.json").read_text())
    vocab_map = data["model"]["vocab"]
    a, b = list(vocab_map)[200:202]
    vocab_map[a], vocab_map[b] = vocab_map[b], vocab_map[a]  # two tokens swap ids
    (tok / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ArchitectureError, match="tokenizers"):
        preflight({"base": base, "other": tok})


def test_missing_path_and_pickle_refused_without_network(merge_parents, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a network call was made")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ModelRefError, match="does not exist"):
        resolve_ref(str(tmp_path / "nowhere" / "model"))
    with pytest.raises(ModelRefError, match="LoRA"):
        resolve_ref("some/model+my/lora")
    pickled = shutil.copytree(merge_parents["base"], tmp_path / "pickled")
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="pickle"):
        resolve_ref(str(pickled))
    odd = shutil.copytree(merge_parents["base"], tmp_path / "a+b@c")  # a real folder: a path
    assert resolve_ref(str(odd)) == odd.resolve()


def test_fprun_merge_equals_mergekit_cli(merge_parents, tmp_path, cli):
    """``fprun merge`` on a YAML gives exactly what ``mergekit-yaml`` writes (a random method)."""
    text = (ROOT / "configs" / "merges" / "dare_ties.yml").read_text()
    for role, folder in merge_parents.items():
        text = text.replace("${" + role + "}", str(folder))
    (tmp_path / "c.yml").write_text(text)
    ours = tmp_path / "ours"
    res = cli(
        [
            "merge",
            tmp_path / "c.yml",
            "--out",
            ours,
            "--seed",
            "3",
            "--results",
            tmp_path / "r",
            "--artifacts",
            tmp_path / "a",
        ]
    )
    assert res.exit_code == 0, res.output
    theirs = tmp_path / "theirs"
    exe = Path(sys.executable).with_name("mergekit-yaml")
    subprocess.run(
        [str(exe), str(tmp_path / "c.yml"), str(theirs), "--random-seed", "3", "--device", "cpu"],
        check=True,
        capture_output=True,
    )
    a, b = read_weights(ours), read_weights(theirs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again = cli(
        [
            "merge",
            tmp_path / "c.yml",
            "--out",
            tmp_path / "again",
            "--seed",
            "3",
            "--results",
            tmp_path / "r",
            "--artifacts",
            tmp_path / "a",
        ]
    )
    assert again.exit_code == 0 and "skip" in again.output  # same YAML, models, seed: one step
