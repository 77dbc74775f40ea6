"""The provenance pair: build one suspect in scratch, run every detector on it, one row.

The suspect is the owner's published model under a weight transformation
(:mod:`tasks.provenance.transforms`), a user fine-tune of it (an upstream ``finetune`` step), a
mergekit merge of it with another expert, or a model of the independent pool
(:mod:`tasks.provenance.pool`). It is built in node-local scratch and deleted. A transformation
the library cannot do here, or a build that raises, is a ``failed`` row with the reason, so the
grid goes on; bad input (no fingerprint, a missing upstream folder) raises. The row is also
written as ``pair.json`` for the scoring step. Keys never reach the row.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from tasks.config import validate
from tasks.errors import ConfigError, FprunError
from tasks.fingerprint.artifacts import published_dir, read_meta, read_probes
from tasks.progress import progress_of
from tasks.provenance.config import DETECTORS, PairConfig
from tasks.provenance.detectors import huref_scores, if_scores
from tasks.scratch import scratch_dir

CODE_VERSION = "1"
STAGES = "pair stages (build, huref, verify)"
log = logging.getLogger(__name__)


def provenance_pair_step(
    config: dict[str, Any], *, inputs: dict[str, Path], out_dir: Path, **hooks: Any
) -> list[dict]:
    """One (owner, suspect) pair; one ``provenance_pair`` row (see the module docstring).

    Args:
        config: A :class:`tasks.provenance.config.PairConfig` as a dict.
        inputs: ``fingerprint`` (the owner's IF folder), ``inv_owner`` (HuRef invariants of the
            owner's published model), and ``model`` (family finetune) or ``expert`` (merge).
        out_dir: The step's artifact folder (``pair.json``, generations without prompts).
    """
    cfg: PairConfig = validate(PairConfig, config, "provenance pair step")
    for need in ("fingerprint", "inv_owner"):
        if need not in inputs:
            raise ConfigError(f"a provenance pair needs inputs[{need!r}]", "wire the step")
    fp_dir = Path(inputs["fingerprint"])
    meta, probes = read_meta(fp_dir), read_probes(fp_dir)
    owner_model = published_dir(fp_dir).resolve()
    row = base_row(cfg, meta)
    progress = progress_of(hooks)
    progress(STAGES, 0, 3)
    out_dir = Path(out_dir)
    with scratch_dir(out_dir.name, cfg.scratch) as scratch:
        try:
            t0 = time.perf_counter()
            model_dir = build_suspect(cfg, owner_model, inputs, scratch, row)
            row["build_seconds"] = time.perf_counter() - t0
            progress(STAGES, 1, 3)
            white = huref_scores(cfg, model_dir, Path(inputs["inv_owner"]), owner_model, scratch)
            progress(STAGES, 2, 3)
            black, records = if_scores(cfg, model_dir, fp_dir, meta, probes)
            progress(STAGES, 3, 3)
            _merge_scores(row, white, black)
            if records:
                from tasks.verify.verifier import write_generations

                write_generations(out_dir / "generations.jsonl", records)
        except FprunError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed pair is a row, the grid goes on
            log.warning("provenance pair failed: %s: %s", type(exc).__name__, exc)
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
    (out_dir / "pair.json").write_text(json.dumps(row, sort_keys=True, default=str), "utf-8")
    return [row]


def base_row(cfg: PairConfig, meta: Any) -> dict[str, Any]:
    """The columns known before any work."""
    s = cfg.suspect
    detail = s.transform or s.cell or s.pool
    return {
        "owner": cfg.owner,
        "owner_model": cfg.owner_label,
        "fingerprint_id": meta.fingerprint_id,
        "fingerprint_method": meta.method,
        "suspect": s.label,
        "relation": s.relation,
        "family": s.family,
        "strength": s.strength,
        "seed": s.seed,
        "params": json.dumps(detail, sort_keys=True) if detail else None,
        "status": "ok",
        "error": None,
        "not_applicable": None,
    }


def build_suspect(
    cfg: PairConfig, owner_model: Path, inputs: dict[str, Path], scratch: Path, row: dict
) -> Path:
    """The suspect's model folder (in ``scratch`` unless it is an upstream step's output)."""
    s = cfg.suspect
    if s.family == "finetune":
        if "model" not in inputs:
            raise ConfigError("a finetune suspect needs inputs['model']", "wire the finetune step")
        return Path(inputs["model"]).resolve()
    if s.family == "merge":
        return _merge(cfg, owner_model, inputs, scratch, row)
    if s.family == "independent":
        from tasks.provenance.pool import build_pool_model

        return build_pool_model(dict(s.pool or {}), owner_model, scratch / "suspect")
    from tasks.provenance.transforms import TransformSpec, apply_transform

    spec = validate(TransformSpec, s.transform or {"family": s.family}, "provenance transform")
    meta = apply_transform(owner_model, scratch / "suspect", spec, device=cfg.device)
    row["transform_library"] = meta.get("library")
    return scratch / "suspect"


def _merge(cfg: PairConfig, owner: Path, inputs: dict[str, Path], scratch: Path, row: dict):
    from tasks.merge.config import mergekit_config
    from tasks.merge.mergekit_run import run_mergekit
    from tasks.merge.preflight import preflight, resolve_ref

    if "expert" not in inputs or not cfg.base:
        raise ConfigError("a merge suspect needs inputs['expert'] and base", "wire the expert")
    folders = {
        "fingerprinted": owner,
        "expert": Path(inputs["expert"]).resolve(),
        "base": resolve_ref(cfg.base),
    }
    preflight(folders)
    cell = dict(cfg.suspect.cell or {})
    done = run_mergekit(
        mergekit_config(cell, {r: str(f) for r, f in folders.items()}),
        scratch / "merged",
        seed=cell.get("seed") or 0,
        device=cell.get("device", "cpu"),
        shard_bytes=cfg.shard_mb << 20,
    )
    row["transform_library"] = f"mergekit {cell.get('mergekit')}"
    return done.path


def _merge_scores(row: dict, white: dict, black: dict) -> None:
    na = {**white.pop("na"), **black.pop("na")}
    row.update(white)
    row.update(black)
    row["not_applicable"] = json.dumps({d: na[d] for d in DETECTORS if d in na}) if na else None


__all__ = ["CODE_VERSION", "base_row", "build_suspect", "provenance_pair_step"]
