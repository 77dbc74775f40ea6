"""Ownership verification: query a model with a fingerprint's probes and report FSR rows.

:func:`verify_step` takes one model, one fingerprint and one condition and returns
``verification`` rows: greedy rows per probe set (counted by :mod:`tasks.verify.fsr`); with
``sampling.runs``, a row per seeded run plus a ``<set>:sampled`` aggregate (``sample_idx`` null)
with t-tests and an exact binomial test, whose null rate is by default the 95% Clopper-Pearson
upper bound of the false-trigger rate on unseen random keys; with ``bos_samples``, one row.
Completions go to ``out_dir/generations.jsonl`` without prompts: prompts hold the keys, so they
are written nowhere, and result rows carry ``fingerprint_id`` only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tasks.config import validate
from tasks.errors import ConfigError, FingerprintError
from tasks.fingerprint.artifacts import (
    private_dir,
    published_dir,
    read_meta,
    read_probes,
)
from tasks.models.device import pick_device
from tasks.progress import progress_of
from tasks.verify.config import VerifyConfig
from tasks.verify.verifier import Verifier, write_generations

CODE_VERSION = "1"
log = logging.getLogger(__name__)


def verify_step(
    config: dict, *, inputs: dict[str, Path], out_dir: Path, **hooks: Any
) -> list[dict]:
    """Verify one model against one fingerprint; see the module docstring for the rows.

    Args:
        config: A :class:`tasks.verify.config.VerifyConfig` as a dict.
        inputs: Optional ``model`` (a model folder, or a fingerprint folder whose ``published/``
            is used) and ``fingerprint`` (the fingerprint folder) artifacts.
        out_dir: Where ``generations.jsonl`` goes.

    Returns:
        ``verification`` rows (no provenance; the runner adds it).
    """
    cfg = validate(VerifyConfig, config, "verify step")
    check_probe_sets(cfg)
    fp_dir = _fingerprint_folder(cfg, inputs)
    meta = read_meta(fp_dir)
    probes = read_probes(fp_dir)
    model_dir, model_ref = _model_folder(cfg, inputs)
    model, tokenizer = load_model_for_verification(
        model_dir,
        fingerprint_dir=fp_dir,
        use_adapter=cfg.use_adapter,
        dtype=cfg.dtype,
        device=cfg.device,
    )
    v = Verifier(cfg, meta, model, tokenizer, model_ref, progress_of(hooks))
    rows, records = v.greedy(probes)
    if cfg.sampling.runs:
        more, recs = v.sampled(probes, greedy_rows=rows)
        rows, records = rows + more, records + recs
    if cfg.bos_samples:
        more, recs = v.bos()
        rows, records = rows + more, records + recs
    write_generations(Path(out_dir) / "generations.jsonl", records)
    return rows


def check_probe_sets(cfg: VerifyConfig) -> None:
    """Unknown probe-set names fail before any model loads (ConfigError)."""
    from tasks.verify import fsr

    for name in [*cfg.probe_sets, *cfg.sampling.probe_sets]:
        fsr.members(name)


def load_model_for_verification(
    model_dir: Path,
    *,
    fingerprint_dir: Path,
    use_adapter: bool = False,
    dtype: str = "float32",
    device: str = "auto",
) -> tuple[Any, Any]:
    """Load the model exactly as verification queries it.

    ``use_adapter`` wraps the model's own input embedding with the fingerprint's private
    F-Adapter (the ``tuned_direct`` assembly of
    ``tasks.fingerprint.adapter.verify``, which builds the other adapter conditions).

    Raises:
        FingerprintError: ``use_adapter`` on a fingerprint that has no ``private/adapter/``.
        ArchitectureError: An adapter whose token set or hidden size does not fit the model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if use_adapter:
        from tasks.fingerprint.adapter.verify import load_adapter_model

        if not (private_dir(fingerprint_dir) / "adapter").is_dir():
            raise FingerprintError(
                f"use_adapter is set but {fingerprint_dir} has no private/adapter/ "
                "(verifying an adapter model without its adapter)",
                "pass the IF_adapter fingerprint folder, or set use_adapter: false",
            )
        return load_adapter_model(
            model_dir,
            fingerprint_dir=fingerprint_dir,
            condition="tuned_direct",
            dtype=dtype,
            device=device,
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=getattr(torch, dtype), use_safetensors=True
    )
    return model.to(pick_device(device)).eval(), tokenizer


def _fingerprint_folder(cfg: VerifyConfig, inputs: dict[str, Path]) -> Path:
    if "fingerprint" in inputs:
        return Path(inputs["fingerprint"])
    if cfg.fingerprint:
        return Path(cfg.fingerprint).expanduser()
    raise ConfigError(
        "no fingerprint to verify against",
        "set fingerprint: DIR or wire a fingerprint step as input",
    )


def _model_folder(cfg: VerifyConfig, inputs: dict[str, Path]) -> tuple[Path, str]:
    from tasks.models.zoo import resolve_model

    if "model" in inputs:
        path = Path(inputs["model"])
        if published_dir(path).is_dir() and private_dir(path).is_dir():
            path = published_dir(path)  # a fingerprint step's folder: query what was published
        return resolve_model(path), cfg.model or str(path)
    if cfg.model:
        return resolve_model(cfg.model), cfg.model
    raise ConfigError("no model to verify", "set model: REF or wire a model step as input")
