"""The models behind IF_adapter's adapter conditions: whose weights, embedding and T rows each uses.

* ``publish_w_adapter``: published weights, published embedding, the saved rows;
* ``tuned_w_adapter``: published weights, the user model's embedding and rows (the seed kept the
  publisher's merged rows in ``orig_emb``; docs/seed_fixes.md);
* ``tuned_direct``: the user model's weights, embedding and rows (the seed's pickled adapter
  brought the publisher's embedding with it);
* ``vanilla_w_adapter``: published weights, the base model's embedding and rows; fprun's control,
  not the seed's: if it fires, the adapter proves lineage from the base, not ownership.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tasks.config import validate
from tasks.errors import ArchitectureError, ConfigError, FingerprintError
from tasks.fingerprint.adapter.config import AdapterVerifyConfig
from tasks.fingerprint.adapter.module import (
    SavedAdapter,
    adapter_from_saved,
    input_embedding,
    load_adapter,
)
from tasks.fingerprint.artifacts import private_dir, published_dir, read_meta, read_probes

CODE_VERSION = "1"
SUSPECT_CONDITIONS = ("tuned_w_adapter", "tuned_direct", "vanilla_w_adapter")


def adapter_folder(fingerprint_dir: Path) -> Path:
    """``private/adapter/`` of a fingerprint folder, or a FingerprintError naming the problem."""
    folder = private_dir(fingerprint_dir) / "adapter"
    if not folder.is_dir():
        raise FingerprintError(
            f"{fingerprint_dir} has no private/adapter/, so an adapter condition cannot be "
            "verified (verifying an adapter model without its adapter)",
            "pass the fingerprint folder of an IF_adapter run, or verify a plain condition",
        )
    return folder


def load_adapter_model(
    model_dir: Path,
    *,
    fingerprint_dir: Path,
    condition: str = "tuned_direct",
    publisher_dir: Path | None = None,
    adapter_dir: Path | None = None,
    dtype: str = "float32",
    device: str = "auto",
) -> tuple[Any, Any]:
    """Assemble the model of one adapter condition, in eval mode, with its tokenizer.

    Args:
        model_dir: The model the condition is about: the published model
            (``publish_w_adapter``), or the suspect (user or base) model.
        fingerprint_dir: The IF_adapter fingerprint folder (for ``private/adapter/`` and, when
            ``publisher_dir`` is not given, ``published/``).
        condition: A row of the table in the module docstring.
        publisher_dir: The publisher's model for ``tuned_w_adapter``/``vanilla_w_adapter``
            (default: the fingerprint's ``published/``).
        adapter_dir: An adapter folder other than the fingerprint's own.
        dtype, device: As in verification.

    Raises:
        FingerprintError: No adapter in the fingerprint folder.
        ArchitectureError: Adapter, model and publisher do not fit together.
        CheckpointError: A pickled or corrupt adapter.
    """
    from tasks.models.device import pick_device

    saved = load_adapter(adapter_dir or adapter_folder(fingerprint_dir))
    publisher = Path(publisher_dir) if publisher_dir else published_dir(fingerprint_dir)
    if condition == "publish_w_adapter":
        model, tokenizer = _load(model_dir, dtype)
        _wrap(model, tokenizer, saved, own_rows=False)
    elif condition in ("tuned_w_adapter", "vanilla_w_adapter"):
        model, tokenizer = _load(publisher, dtype)
        suspect, _ = _load(model_dir, dtype)
        copy_input_embedding(suspect, model)
        del suspect
        _wrap(model, tokenizer, saved, own_rows=True)
    elif condition == "tuned_direct":
        model, tokenizer = _load(model_dir, dtype)
        _wrap(model, tokenizer, saved, own_rows=True)
    else:
        raise ConfigError(
            f"unknown adapter condition {condition!r}",
            "use publish_w_adapter, tuned_w_adapter, tuned_direct or vanilla_w_adapter",
        )
    return model.to(pick_device(device)).eval(), tokenizer


def _load(folder: Path, dtype: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=getattr(torch, dtype), use_safetensors=True
    )
    return model, tokenizer


def _wrap(model: Any, tokenizer: Any, saved: SavedAdapter, *, own_rows: bool) -> None:
    emb = input_embedding(model)
    rows = emb.weight.detach()[saved.meta["token_ids"]].clone() if own_rows else None
    adapter = adapter_from_saved(emb, saved, tokenizer=tokenizer, rows=rows)
    for p in adapter.parameters():
        p.requires_grad_(False)
    model.set_input_embeddings(adapter)


def copy_input_embedding(src: Any, dst: Any) -> None:
    """Overwrite ``dst``'s input embedding with ``src``'s (the rows of ``dst``'s vocabulary).

    A user model may have grown its vocabulary (a pad token added for fine-tuning); its first
    rows still mean the publisher's tokens, so those are taken. The published model's LM head
    is a separate tensor (IF_adapter unties it), so only the input side changes.

    Raises:
        ArchitectureError: Different hidden size, or a smaller vocabulary than the publisher's.
    """
    import torch

    s, d = input_embedding(src).weight, input_embedding(dst).weight
    if s.shape[1] != d.shape[1] or s.shape[0] < d.shape[0]:
        raise ArchitectureError(
            f"the suspect model's embedding is {tuple(s.shape)} but the publisher's is "
            f"{tuple(d.shape)}",
            "verify a model fine-tuned from this fingerprint's published "
            "model (same architecture and tokenizer)",
        )
    head = dst.get_output_embeddings()
    if head is not None and head.weight is d:  # a tied head must keep the publisher's rows
        head.weight = torch.nn.Parameter(d.detach().clone(), requires_grad=False)
    with torch.no_grad():
        d.copy_(s[: d.shape[0]].to(d.dtype))


def verify_adapter_step(
    config: dict, *, inputs: dict[str, Path], out_dir: Path, **hooks: Any
) -> list[dict]:
    """Verify one adapter condition; ``verification`` rows like ``tasks.verify.step:verify_step``.

    Args:
        config: An :class:`tasks.fingerprint.adapter.config.AdapterVerifyConfig` as a dict.
        inputs: ``fingerprint`` (the IF_adapter fingerprint folder) and, for the suspect
            conditions, ``suspect`` (a model folder, e.g. the user fine-tune's).
        out_dir: Where ``generations.jsonl`` goes (no prompts: they hold the keys).

    Raises:
        FingerprintError: No fingerprint folder, or one without an adapter.
        ConfigError: A suspect condition with no suspect model.
    """
    from tasks.progress import progress_of
    from tasks.verify.config import VerifyConfig
    from tasks.verify.verifier import Verifier

    cfg: AdapterVerifyConfig = validate(AdapterVerifyConfig, config, "adapter verification step")
    vcfg = validate(
        VerifyConfig,
        {**cfg.verify, "condition": cfg.condition, "use_adapter": True},
        "adapter verification step: verify",
    )
    fp_dir = _fingerprint(inputs, vcfg.fingerprint)
    adapter_dir = Path(cfg.adapter).expanduser() if cfg.adapter else adapter_folder(fp_dir)
    load_adapter(adapter_dir)  # the one-line error before any model loads
    meta = read_meta(fp_dir)
    probes = read_probes(fp_dir)
    model_dir, model_ref = _condition_model(cfg, fp_dir, inputs)
    publisher = model_folder(cfg.publisher) if cfg.publisher else None
    model, tokenizer = load_adapter_model(
        model_dir,
        fingerprint_dir=fp_dir,
        condition=cfg.condition,
        publisher_dir=publisher,
        adapter_dir=adapter_dir,
        dtype=vcfg.dtype,
        device=vcfg.device,
    )
    verifier = Verifier(vcfg, meta, model, tokenizer, model_ref, progress_of(hooks))
    rows, records = verifier.greedy(probes)
    if vcfg.sampling.runs:
        more, recs = verifier.sampled(probes, greedy_rows=rows)
        rows, records = rows + more, records + recs
    with (Path(out_dir) / "generations.jsonl").open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
    return rows


def _fingerprint(inputs: dict[str, Path], ref: str | None) -> Path:
    if "fingerprint" in inputs:
        return Path(inputs["fingerprint"])
    if ref:
        return Path(ref).expanduser()
    raise FingerprintError(
        "no fingerprint folder to verify against",
        "set verify.fingerprint or wire the IF_adapter step as input",
    )


def _condition_model(
    cfg: AdapterVerifyConfig, fp_dir: Path, inputs: dict[str, Path]
) -> tuple[Path, str]:
    """The folder named by the condition (published or suspect) and its label for the rows."""
    if cfg.condition == "publish_w_adapter":
        ref = cfg.verify.get("model")  # fprun verify --model; the plans leave it unset
        return (model_folder(ref) if ref else published_dir(fp_dir)), ref or str(
            published_dir(fp_dir)
        )
    if "suspect" in inputs:
        folder = Path(inputs["suspect"])
        return model_folder(folder), cfg.suspect or str(folder)
    if cfg.suspect:
        return model_folder(cfg.suspect), cfg.suspect
    raise ConfigError(
        f"condition {cfg.condition} needs a suspect model",
        "set suspect: REF or wire the user fine-tune step as input 'suspect'",
    )


def model_folder(ref: str | Path) -> Path:
    """A model reference as a folder; a fingerprint folder stands for its ``published/``."""
    from tasks.models.zoo import resolve_model

    local = Path(ref).expanduser()
    if published_dir(local).is_dir():
        return published_dir(local)
    return resolve_model(ref)
