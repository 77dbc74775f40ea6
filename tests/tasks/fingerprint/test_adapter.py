"""The F-Adapter module: forward, init modes, unwrap/merge, safetensors round trip, mismatches."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tasks.errors import ArchitectureError, CheckpointError, FingerprintError
from tasks.fingerprint.adapter.module import (
    ADAPTER_FILE,
    META_FILE,
    InstructionFingerprint,
    adapter_from_saved,
    inject_adapter,
    load_adapter,
    save_adapter,
    unwrap_adapter,
)

T = [3, 5, 7, 11, 40]


@pytest.fixture
def model_and_tok(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (
        AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32),
        AutoTokenizer.from_pretrained(tiny_llama),
    )


def emb(vocab=64, hidden=8, seed=0) -> nn.Embedding:
    torch.manual_seed(seed)
    return nn.Embedding(vocab, hidden)


def randomise(adapter: InstructionFingerprint) -> None:
    """Non-trivial A, B and rows, so the formulas below are tested on real numbers."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in adapter.adapter_parameters():
            p.add_(torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("residual", ["orig", "trainable"])
def test_forward_is_the_formula_inside_t_and_the_embedding_outside(residual):
    e = emb()
    adapter = InstructionFingerprint(e, T, 4, residual=residual)
    randomise(adapter)
    ids = torch.tensor([[0, 3, 1, 40, 63], [5, 2, 11, 7, 9]])
    out = adapter(ids)
    outside = ~torch.isin(ids, torch.tensor(T))
    assert torch.equal(out[outside], e(ids)[outside])
    for t in T:
        row = adapter.trainable_emb.weight[T.index(t)]
        resid = row if residual == "trainable" else e.weight[t]
        want = resid + adapter.B(adapter.A(row))
        assert torch.allclose(out[ids == t], want.expand_as(out[ids == t]), atol=1e-6)
    assert adapter.weight is e.weight  # tied-weight code sees the original matrix


def test_both_inits_start_as_the_identity_and_differ_in_a():
    e = emb()
    ids = torch.arange(64).unsqueeze(0)
    lora = InstructionFingerprint(e, T, 4, init="lora", init_seed=3)
    seed = InstructionFingerprint(e, T, 4, init="seed")
    assert torch.equal(lora(ids), e(ids)) and torch.equal(seed(ids), e(ids))
    assert torch.count_nonzero(seed.A.weight) == 0 and torch.count_nonzero(lora.A.weight) > 0
    assert torch.count_nonzero(lora.B.weight) == torch.count_nonzero(lora.B.bias) == 0
    again = InstructionFingerprint(e, T, 4, init="lora", init_seed=3)
    assert torch.equal(again.A.weight, lora.A.weight)  # reproducible, global RNG untouched


def adam_steps(adapter: InstructionFingerprint, n: int = 5) -> None:
    opt = torch.optim.AdamW(adapter.adapter_parameters(), lr=1e-2, weight_decay=0.0)
    ids = torch.tensor([[3, 5, 1, 40], [7, 11, 2, 0]])
    for _ in range(n):
        opt.zero_grad()
        adapter(ids).pow(2).sum().backward()
        opt.step()


def test_seed_init_moves_only_the_bias_of_b():
    e = emb()
    adapter = InstructionFingerprint(e, T, 4, init="seed", residual="orig")
    before = {n: p.detach().clone() for n, p in adapter.named_parameters()}
    adam_steps(adapter)
    after = dict(adapter.named_parameters())
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved == {"B.bias"}
    assert torch.equal(adapter.merged_weight(), e.weight)  # the "published" embedding is vanilla


def test_lora_init_trains_a_b_and_the_rows():
    adapter = InstructionFingerprint(emb(), T, 4, init="lora")
    before = {n: p.detach().clone() for n, p in adapter.named_parameters()}
    adam_steps(adapter)
    after = dict(adapter.named_parameters())
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved == {"trainable_emb.weight", "A.weight", "A.bias", "B.weight", "B.bias"}


def test_token_ids_outside_the_vocabulary_are_refused():
    with pytest.raises(ArchitectureError, match="64 rows"):
        InstructionFingerprint(emb(), [1, 64], 4)


def test_inject_freezes_everything_but_the_adapter(model_and_tok):
    model, _ = model_and_tok
    adapter = inject_adapter(model, InstructionFingerprint(model.get_input_embeddings(), T, 4))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    prefix = next(n for n, m in model.named_modules() if m is adapter)
    assert trainable == {
        f"{prefix}.{s}"
        for s in ("trainable_emb.weight", "A.weight", "A.bias", "B.weight", "B.bias")
    }
    with pytest.raises(FingerprintError, match="already carries"):
        from tasks.fingerprint.adapter.module import input_embedding

        input_embedding(model)


def test_unwrap_publishes_orig_with_t_rows_replaced_and_unties_the_head(model_and_tok):
    model, _ = model_and_tok
    vanilla = model.get_input_embeddings().weight.detach().clone()
    adapter = inject_adapter(model, InstructionFingerprint(model.get_input_embeddings(), T, 4))
    randomise(adapter)
    rows = adapter.trainable_emb.weight.detach().clone()
    model, returned, info = unwrap_adapter(model)
    published = model.get_input_embeddings()
    assert type(published) is nn.Embedding and returned is adapter
    assert torch.equal(published.weight[T], rows)
    others = torch.ones(len(vanilla), dtype=torch.bool)
    others[T] = False
    assert torch.equal(published.weight[others], vanilla[others])
    assert info.rows_changed == len(T) and info.untied and not model.config.tie_word_embeddings
    assert torch.equal(model.get_output_embeddings().weight, vanilla)  # head keeps the original


def test_unwrap_without_changes_keeps_the_model_tied(model_and_tok):
    model, _ = model_and_tok
    inject_adapter(model, InstructionFingerprint(model.get_input_embeddings(), T, 4, init="seed"))
    model, _, info = unwrap_adapter(model)
    assert info.rows_changed == 0 and not info.untied
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    with pytest.raises(FingerprintError, match="no F-Adapter"):
        unwrap_adapter(model)


def test_save_load_round_trip_is_safetensors_and_exact(model_and_tok, tmp_path):
    model, tok = model_and_tok
    e = model.get_input_embeddings()
    adapter = InstructionFingerprint(e, T, 4)
    randomise(adapter)
    meta = save_adapter(adapter, tmp_path, tokenizer=tok, base_model="tiny-llama")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ADAPTER_FILE, META_FILE])
    raw = (tmp_path / ADAPTER_FILE).read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and json.loads(raw[8 : 8 + header])["__metadata__"]["format"]
    on_disk = json.loads((tmp_path / META_FILE).read_text())
    assert on_disk == meta and on_disk["token_ids"] == T and on_disk["hidden_size"] == 64
    assert on_disk["vocab_size"] == 1024 and on_disk["base_model"] == "tiny-llama"
    back = adapter_from_saved(e, load_adapter(tmp_path), tokenizer=tok)
    ids = torch.randint(0, 1024, (2, 9))
    ids[0, :5] = torch.tensor(T)
    assert torch.equal(back(ids), adapter(ids))


def test_pickles_and_corrupt_files_are_refused(model_and_tok, tmp_path):
    model, tok = model_and_tok
    adapter = InstructionFingerprint(model.get_input_embeddings(), T, 4)
    seed_style = tmp_path / "instruction_emb.pt"
    torch.save({"A": adapter.A.weight}, seed_style)  # the seed's format (never unpickled)
    with pytest.raises(CheckpointError, match="pickled"):
        load_adapter(seed_style)
    with pytest.raises(CheckpointError, match="pickled"):
        load_adapter(tmp_path)
    good = tmp_path / "good"
    save_adapter(adapter, good, tokenizer=tok, base_model="tiny-llama")
    (good / ADAPTER_FILE).write_bytes((good / ADAPTER_FILE).read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_adapter(good)
    with pytest.raises(FingerprintError, match="holds no"):
        load_adapter(tmp_path / "missing")


def test_mismatched_hidden_size_vocabulary_or_tokens_are_refused(model_and_tok, tmp_path):
    model, tok = model_and_tok
    save_adapter(
        InstructionFingerprint(model.get_input_embeddings(), T, 4),
        tmp_path,
        tokenizer=tok,
        base_model="tiny-llama",
    )
    saved = load_adapter(tmp_path)
    with pytest.raises(ArchitectureError, match="hidden size 64"):
        adapter_from_saved(nn.Embedding(1024, 32), saved)
    with pytest.raises(ArchitectureError, match="1024-token vocabulary"):
        adapter_from_saved(nn.Embedding(512, 64), saved)
    meta = {**saved.meta, "token_strings_sha256": "0" * 16}
    with pytest.raises(ArchitectureError, match="other tokens"):
        adapter_from_saved(
            model.get_input_embeddings(), type(saved)(meta, saved.tensors), tokenizer=tok
        )
