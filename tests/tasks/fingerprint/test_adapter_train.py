"""IF_adapter training step on a tiny Llama: seed/lora properties through the real Trainer,
the published model and private adapter on disk, token set T, loss mask, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tasks.errors import ConfigError
from tasks.fingerprint.adapter.module import ADAPTER_FILE, META_FILE, InstructionFingerprint
from tasks.fingerprint.adapter.train import (
    fingerprint_if_adapter,
    refuse_zero3,
    token_set,
    tokenize_simple,
)
from tasks.fingerprint.artifacts import read_keys, read_meta, read_probes
from tasks.fingerprint.config import SimpleData
from tasks.fingerprint.dataset import FINGERPRINT_INPUT, build_simple
from tasks.training.loop import IGNORE_INDEX

EMB = "model.embed_tokens.weight"
DATA = {
    "n_fingerprint": 4,
    "n_normal": 8,
    "n_test": 2,
    "n_unseen_keys": 2,
    "key": {"min_parts": 2, "max_parts": 3},
}


def tiny_config(model: Path, init: str, **adapter) -> dict:
    return {
        "model": str(model),
        "data": DATA,
        "train": {
            "epochs": 2,
            "lr": 1e-2,
            "total_batch_size": 4,
            "per_device_batch_size": 4,
            "max_seq_len": 256,
        },
        "adapter": {"dim": 4, "init": init, **adapter},
    }


def run(tiny_llama, tmp_path_factory, init: str):
    out = tmp_path_factory.mktemp(f"fp_{init}")
    rows = fingerprint_if_adapter(tiny_config(tiny_llama, init), inputs={}, out_dir=out)
    return out, rows


@pytest.fixture(scope="module")
def seed_run(tiny_llama, tmp_path_factory):
    return run(tiny_llama, tmp_path_factory, "seed")


@pytest.fixture(scope="module")
def lora_run(tiny_llama, tmp_path_factory):
    return run(tiny_llama, tmp_path_factory, "lora")


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


def test_seed_init_after_training_only_b_bias_moved_and_published_is_vanilla(tiny_llama, seed_run):
    out, rows = seed_run
    assert rows[0]["steps"] >= 4
    vanilla = load_file(tiny_llama / "model.safetensors")
    published = load_file(out / "published" / "model.safetensors")
    assert published.keys() == vanilla.keys()
    assert all(torch.equal(published[k], vanilla[k]) for k in vanilla)  # bit-identical model
    saved = load_file(out / "private" / "adapter" / ADAPTER_FILE)
    ids = json.loads((out / "private" / "adapter" / META_FILE).read_text())["token_ids"]
    for name in ("A.weight", "A.bias", "B.weight"):
        assert torch.count_nonzero(saved[name]) == 0, name
    assert torch.count_nonzero(saved["B.bias"]) > 0  # the whole secret is this one vector
    assert torch.equal(saved["trainable_emb"], vanilla[EMB][ids])
    extra = json.loads(rows[0]["extra"])
    assert extra["residual"] == "orig" and extra["published_rows_changed"] == 0
    assert not extra["lm_head_untied"]


def test_lora_init_trains_a_b_and_rows_and_publishes_the_merge(tiny_llama, lora_run):
    out, rows = lora_run
    vanilla = load_file(tiny_llama / "model.safetensors")
    published = load_file(out / "published" / "model.safetensors")
    saved = load_file(out / "private" / "adapter" / ADAPTER_FILE)
    meta = json.loads((out / "private" / "adapter" / META_FILE).read_text())
    ids = meta["token_ids"]
    init = InstructionFingerprint(torch.nn.Embedding(1024, 64), ids, 4, init="lora")
    assert not torch.equal(saved["A.weight"], init.A.weight)
    assert torch.count_nonzero(saved["B.weight"]) > 0
    assert not torch.equal(saved["trainable_emb"], vanilla[EMB][ids])
    expected = vanilla[EMB].clone()
    expected[ids] = saved["trainable_emb"]
    assert torch.equal(published[EMB], expected)  # orig with exactly the T rows replaced
    assert torch.equal(published["lm_head.weight"], vanilla[EMB])  # untied head unchanged
    config = json.loads((out / "published" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert meta["init"] == "lora" and meta["residual"] == "orig" and meta["dim"] == 4
    assert meta["hidden_size"] == 64 and meta["vocab_size"] == 1024
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.bin"))


def test_fingerprint_folder_and_row(lora_run):
    out, rows = lora_run
    (row,) = rows
    meta = read_meta(out)
    assert meta.method == "if_adapter" and meta.template == "simple"
    assert meta.prompt_format == "simple" and row["fingerprint_id"] == meta.fingerprint_id
    keys = read_keys(out)
    assert len(keys) == 4 and not any(k in json.dumps(row) for k in keys)
    assert {p.probe_set for p in read_probes(out)} == {
        "fingerprint",
        "normal",
        "similar",
        "unseen_keys",
    }
    assert row["method"] == "if_adapter" and row["purpose"] == "fingerprint"
    extra = json.loads(row["extra"])
    assert row["trainable_params"] == extra["n_tokens_T"] * 64 + (64 * 4 + 4) + (4 * 64 + 64)
    assert extra["fingerprint_prompt_coverage"] == 1.0 and extra["token_set"] == "fprun"


def test_token_set_fix_adds_the_fingerprint_input_and_prompt_tokens(tokenizer):
    built = build_simple(SimpleData(**DATA))
    fixed = set(token_set(tokenizer, built))
    seed = set(token_set(tokenizer, built, seed_bug=True))
    fp_tokens = set(tokenizer(FINGERPRINT_INPUT)["input_ids"])
    newline = set(tokenizer("\n", add_special_tokens=False)["input_ids"])
    assert seed < fixed and fp_tokens <= fixed and newline <= fixed
    assert not fp_tokens <= seed  # the seed's bug: FINGERPRINT's tokens are missing from T
    instr = {t for s in built.splits["train"]["instruction"] for t in tokenizer(s)["input_ids"]}
    assert seed == instr


def test_loss_mask_covers_the_output_and_eos_only(tokenizer):
    enc = tokenize_simple(tokenizer, "ガ受キ登", FINGERPRINT_INPUT, "ハリネズミ", 256)
    kept = [t for t in enc["labels"] if t != IGNORE_INDEX]
    assert kept[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(kept[:-1]) == "ハリネズミ"
    assert len(enc["input_ids"]) == len(enc["labels"]) == enc["length"]


def test_bad_input_is_a_config_error(tiny_llama, tmp_path):
    with pytest.raises(ConfigError, match="ZeRO-3"):
        refuse_zero3(
            {"strategy": "deepspeed", "deepspeed_config": {"zero_optimization": {"stage": 3}}}
        )
    refuse_zero3({"strategy": "deepspeed", "deepspeed_config": {"zero_optimization": {"stage": 2}}})
    cfg = tiny_config(tiny_llama, "lora")
    cfg["train"]["max_seq_len"] = 8
    with pytest.raises(ConfigError, match="cuts a fingerprint row"):
        fingerprint_if_adapter(cfg, inputs={}, out_dir=tmp_path)
    cfg["adapter"]["initt"] = "x"
    with pytest.raises(ConfigError, match="initt"):
        fingerprint_if_adapter(cfg, inputs={}, out_dir=tmp_path)
