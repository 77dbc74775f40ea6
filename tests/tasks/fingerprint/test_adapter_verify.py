"""Assembling the adapter conditions' models: which tensors come from where, coherence with the
trained forward, and the bad-input cases (missing adapter, mismatched models)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tasks.errors import ArchitectureError, ConfigError, FingerprintError
from tasks.fingerprint.adapter.module import (
    InstructionFingerprint,
    inject_adapter,
    save_adapter,
    unwrap_adapter,
)
from tasks.fingerprint.adapter.train import fingerprint_if_adapter
from tasks.fingerprint.adapter.verify import load_adapter_model, verify_adapter_step

T = [3, 5, 7, 11, 40, 200]
IDS = torch.tensor([[3, 100, 5, 40, 9, 200, 11, 7], [1, 2, 3, 4, 5, 6, 7, 8]])


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
        AutoTokenizer.from_pretrained(folder),
    )


def make_fingerprint(base: Path, fp: Path, residual: str) -> torch.Tensor:
    """A hand-made fingerprint folder (published/ + private/adapter/) from a "trained" adapter;
    returns the logits the adapter-wrapped model gave before the merge."""
    model, tok = load(base)
    adapter = inject_adapter(
        model, InstructionFingerprint(model.get_input_embeddings(), T, 4, residual=residual)
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in adapter.adapter_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        logits = model(IDS).logits
    model, adapter, _ = unwrap_adapter(model)
    model.save_pretrained(fp / "published")
    tok.save_pretrained(fp / "published")
    save_adapter(adapter, fp / "private" / "adapter", tokenizer=tok, base_model="tiny-llama")
    return logits


@pytest.fixture(scope="module")
def trained(tiny_llama, tmp_path_factory):
    """Fingerprint folder trained with ``residual="trainable"`` and its pre-merge logits."""
    fp = tmp_path_factory.mktemp("fp")
    return fp, make_fingerprint(tiny_llama, fp, "trainable")


def user_model(src: Path, dst: Path, *, seed: int = 1) -> Path:
    """``src`` with every tensor perturbed: a stand-in for a user's fine-tune."""
    model, tok = load(src)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


def params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


@pytest.mark.parametrize("condition", ["publish_w_adapter", "tuned_w_adapter", "tuned_direct"])
def test_every_adapter_condition_on_the_published_model_is_the_trained_function(trained, condition):
    fp, logits = trained
    model, _ = load_adapter_model(
        fp / "published", fingerprint_dir=fp, condition=condition, device="cpu"
    )
    with torch.no_grad():
        assert torch.allclose(model(IDS).logits, logits, atol=1e-5)


def test_under_the_seeds_forward_verification_sees_the_merged_rows(tiny_llama, tmp_path):
    """residual orig: the conditions compute E[t] + B(A(E[t])) on the merged rows E, which
    differs from the trained orig[t] + B(A(rows[t])) once the rows moved (docs/seed_fixes.md)."""
    trained_logits = make_fingerprint(tiny_llama, tmp_path, "orig")
    model, _ = load_adapter_model(
        tmp_path / "published",
        fingerprint_dir=tmp_path,
        condition="publish_w_adapter",
        device="cpu",
    )
    adapter = model.get_input_embeddings()
    assert adapter.residual == "orig"
    assert torch.equal(adapter.orig_emb.weight[T], adapter.trainable_emb.weight)
    with torch.no_grad():
        assert not torch.allclose(model(IDS).logits, trained_logits, atol=1e-5)


def test_tuned_w_adapter_takes_the_users_embedding_and_the_publishers_rest(trained, tmp_path):
    fp, _ = trained
    user = user_model(fp / "published", tmp_path / "user")
    model, _ = load_adapter_model(
        user, fingerprint_dir=fp, condition="tuned_w_adapter", device="cpu"
    )
    pub, usr = params(load(fp / "published")[0]), params(load(user)[0])
    adapter = model.get_input_embeddings()
    assert torch.equal(adapter.orig_emb.weight, usr["model.embed_tokens.weight"])
    assert torch.equal(adapter.trainable_emb.weight, usr["model.embed_tokens.weight"][T])
    saved = load_adapter_model(
        fp / "published", fingerprint_dir=fp, condition="publish_w_adapter", device="cpu"
    )[0]
    for name in ("A.weight", "A.bias", "B.weight", "B.bias"):
        assert torch.equal(params(adapter)[name], params(saved.get_input_embeddings())[name])
    for name, p in params(model).items():
        if "embed_tokens" not in name:
            assert torch.equal(p, pub[name]), name  # lm_head included: the publisher's
            assert not torch.equal(p, usr[name]), name


def test_tuned_direct_and_vanilla_w_adapter_wrap_the_suspects_own_model(
    trained, tiny_llama, tmp_path
):
    fp, _ = trained
    user = user_model(fp / "published", tmp_path / "user")
    direct, _ = load_adapter_model(user, fingerprint_dir=fp, condition="tuned_direct", device="cpu")
    usr = params(load(user)[0])
    for name, p in params(direct).items():
        if "embed_tokens" not in name:
            assert torch.equal(p, usr[name]), name
    assert torch.equal(
        direct.get_input_embeddings().trainable_emb.weight, usr["model.embed_tokens.weight"][T]
    )
    control, _ = load_adapter_model(
        tiny_llama, fingerprint_dir=fp, condition="vanilla_w_adapter", device="cpu"
    )
    vanilla = params(load(tiny_llama)[0])["model.embed_tokens.weight"]
    assert torch.equal(control.get_input_embeddings().trainable_emb.weight, vanilla[T])


def test_mismatched_suspects_are_architecture_errors(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    fp, _ = trained
    model, tok = load(fp / "published")
    cfg = model.config
    cfg.hidden_size, cfg.intermediate_size = 32, 64
    small = AutoModelForCausalLM.from_config(cfg)
    small.save_pretrained(tmp_path / "small")
    tok.save_pretrained(tmp_path / "small")
    with pytest.raises(ArchitectureError, match="suspect model's embedding"):
        load_adapter_model(tmp_path / "small", fingerprint_dir=fp, condition="tuned_w_adapter")
    with pytest.raises(ArchitectureError, match="hidden size 64"):
        load_adapter_model(tmp_path / "small", fingerprint_dir=fp, condition="tuned_direct")
    with pytest.raises(ConfigError, match="unknown adapter condition"):
        load_adapter_model(fp / "published", fingerprint_dir=fp, condition="publish")


@pytest.fixture(scope="module")
def fingerprint(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp_step")
    cfg = {
        "model": str(tiny_llama),
        "data": {
            "n_fingerprint": 3,
            "n_normal": 4,
            "n_test": 2,
            "n_unseen_keys": 2,
            "key": {"min_parts": 2, "max_parts": 3},
        },
        "train": {
            "epochs": 1,
            "total_batch_size": 4,
            "per_device_batch_size": 4,
            "max_seq_len": 256,
        },
        "adapter": {"dim": 4},
    }
    fingerprint_if_adapter(cfg, inputs={}, out_dir=out)
    return out


def test_verify_step_rows_and_no_keys_in_outputs(fingerprint, tmp_path):
    from tasks.fingerprint.artifacts import read_keys

    rows = verify_adapter_step(
        {"condition": "publish_w_adapter", "verify": {"batch_size": 8}},
        inputs={"fingerprint": fingerprint},
        out_dir=tmp_path,
    )
    assert {r["probe_set"] for r in rows} == {"fingerprint", "normal", "similar", "unseen_keys"}
    assert {r["condition"] for r in rows} == {"publish_w_adapter"}
    assert {r["method"] for r in rows} == {"if_adapter"}
    text = (tmp_path / "generations.jsonl").read_text() + json.dumps(rows)
    assert not any(k in text for k in read_keys(fingerprint))


def test_verifying_an_adapter_condition_without_the_adapter_is_refused(fingerprint, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(fingerprint, bare)
    shutil.rmtree(bare / "private" / "adapter")
    with pytest.raises(FingerprintError, match="without its adapter"):
        verify_adapter_step(
            {"condition": "publish_w_adapter"}, inputs={"fingerprint": bare}, out_dir=tmp_path
        )
    with pytest.raises(ConfigError, match="needs a suspect"):
        verify_adapter_step(
            {"condition": "tuned_w_adapter"}, inputs={"fingerprint": fingerprint}, out_dir=tmp_path
        )


# --- fprun verify --adapter ------------------------------------------------------------------


def cli(args):
    """The CLI with runner.cli.main's handling: an FprunError is one line and exit 2."""
    from typer.testing import CliRunner

    from runner.cli import app
    from tasks.errors import FprunError

    try:
        return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    except FprunError as exc:
        return type("R", (), {"exit_code": 2, "output": exc.one_line()})()


def fsr_by_set(rows):
    return {(r["condition"], r["probe_set"]): (r["n_hit"], r["n_total"]) for r in rows}


def test_cli_verify_with_the_adapter_matches_the_protocol_step(fingerprint, tmp_path):
    from runner.results.store import ResultStore

    suspect = user_model(fingerprint / "published", tmp_path / "user")
    store = ["--results", tmp_path / "r", "--artifacts", tmp_path / "a"]
    pub = cli(
        [
            "verify",
            "--model",
            fingerprint / "published",
            "--fingerprint",
            fingerprint,
            "--adapter",
            fingerprint / "private" / "adapter",
            "--condition",
            "publish_w_adapter",
            *store,
        ]
    )
    assert pub.exit_code == 0, pub.output
    tuned = cli(
        [
            "verify",
            "--model",
            suspect,
            "--fingerprint",
            fingerprint,
            "--publisher",
            fingerprint / "published",
            *store,
        ]
    )  # default: tuned_w_adapter
    assert tuned.exit_code == 0, tuned.output
    rows = ResultStore(tmp_path / "r").read("verification").to_pylist()
    assert {r["method"] for r in rows} == {"if_adapter"}
    expected = []
    for condition, inputs in (("publish_w_adapter", {}), ("tuned_w_adapter", {"suspect": suspect})):
        out = tmp_path / condition
        out.mkdir()
        expected += verify_adapter_step(
            {"condition": condition}, inputs={"fingerprint": fingerprint, **inputs}, out_dir=out
        )
    assert fsr_by_set(rows) == fsr_by_set(expected)
    cli_gens = (tmp_path / "a" / "verify_adapter").glob("*/generations.jsonl")
    tokens = {f.read_text() for f in cli_gens}
    assert tokens == {
        (tmp_path / c / "generations.jsonl").read_text()
        for c in ("publish_w_adapter", "tuned_w_adapter")
    }  # the same generations
    again = cli(
        [
            "verify",
            "--model",
            suspect,
            "--fingerprint",
            fingerprint,
            "--publisher",
            fingerprint / "published",
            *store,
        ]
    )
    assert again.exit_code == 0
    assert ResultStore(tmp_path / "r").read("verification").num_rows == len(rows)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--condition", "publish"], "not an adapter condition"),
        (["--condition", "tuned_direct", "--publisher", "x"], "--publisher does not apply"),
        (["--adapter", "{tmp}/adapter.pt"], "pickled adapter"),
    ],
)
def test_cli_verify_adapter_bad_input_exits_2(fingerprint, tmp_path, extra, message):
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    if "--adapter" not in extra:
        extra += ["--adapter", str(fingerprint / "private" / "adapter")]
    out = cli(
        [
            "verify",
            "--model",
            fingerprint / "published",
            "--fingerprint",
            fingerprint,
            *extra,
            "--results",
            tmp_path / "r",
            "--artifacts",
            tmp_path / "a",
        ]
    )
    assert out.exit_code == 2 and message in out.output and "\n" not in out.output.strip()
    assert not (tmp_path / "r").exists()


def test_use_adapter_in_a_plain_verify_step_wraps_the_models_own_embedding(fingerprint, tmp_path):
    from tasks.verify.step import verify_step

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = verify_step(
        {"condition": "tuned_direct", "use_adapter": True},
        inputs={"model": fingerprint, "fingerprint": fingerprint},
        out_dir=tmp_path / "a",
    )
    assembled = verify_adapter_step(
        {"condition": "tuned_direct"},
        inputs={"fingerprint": fingerprint, "suspect": fingerprint},
        out_dir=tmp_path / "b",
    )
    assert fsr_by_set(plain) == fsr_by_set(assembled)
    assert (tmp_path / "a" / "generations.jsonl").read_text() == (
        tmp_path / "b" / "generations.jsonl"
    ).read_text()
