"""The merge-grid cell: merge, measure, delete, and one ``merge_cell`` row, whatever happens.

:func:`merge_cell_step` merges the fingerprinted model and the other expert over the base with
mergekit into node-local scratch (:mod:`tasks.scratch`), then measures it: HuRef invariants, ICS
(and PCS) to each parent; the model loaded once for IF verification (keys, unseen keys, normal
prompts), refusal and math; the IF_adapter conditions for an adapter fingerprint. The weights are
deleted unless ``keep``. A merge or measurement that raises becomes ``status: failed`` with the
error, so the grid goes on; bad input (parents that cannot be merged, a missing dataset) raises.
``parent`` makes the cell a parent's baseline (no merge). Keys never reach the row.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from tasks.config import validate
from tasks.errors import ConfigError, FprunError
from tasks.fingerprint.artifacts import published_dir, read_meta, read_probes
from tasks.merge.config import CellConfig, cell_summary, mergekit_config
from tasks.merge.measure import (
    PLAIN,
    fsr_columns,
    huref_columns,
    utility_columns,
    verify_adapter,
    verify_loaded,
)
from tasks.merge.preflight import preflight, resolve_ref
from tasks.progress import progress_of
from tasks.scratch import scratch_dir

CODE_VERSION = "1"
log = logging.getLogger(__name__)


def parent_folders(cfg: CellConfig, inputs: dict[str, Path]) -> dict[str, Path]:
    """role -> model folder: the fingerprint's published model, the expert, the base."""
    if "fingerprint" not in inputs:
        raise ConfigError("a merge cell needs its fingerprint step", "wire inputs['fingerprint']")
    expert = inputs.get("expert")
    if expert is None and not cfg.expert:
        raise ConfigError("a merge cell needs the other expert", "set expert or wire the step")
    return {
        "fingerprinted": published_dir(Path(inputs["fingerprint"])).resolve(),
        "expert": Path(expert).resolve() if expert else resolve_ref(cfg.expert or ""),
        "base": resolve_ref(cfg.base),
    }


def merge_cell_step(
    config: dict[str, Any], *, inputs: dict[str, Path], out_dir: Path, **hooks: Any
) -> list[dict]:
    """One cell of a merge grid (see the module docstring); one ``merge_cell`` row.

    Args:
        config: A :class:`tasks.merge.config.CellConfig` as a dict.
        inputs: ``fingerprint`` (IF_SFT or IF_adapter folder), ``expert`` (a model folder, or
            ``config.expert``), and ``inv_base``/``inv_fingerprinted``/``inv_expert`` (the parents'
            HuRef invariants; HuRef is skipped without them).
        out_dir: The step's artifact folder (generations without prompts, eval responses).

    Raises:
        FprunError: Bad input (preflight, a missing fingerprint, a missing dataset).
    """
    cfg: CellConfig = validate(CellConfig, config, "merge cell step")
    fp_dir = Path(inputs["fingerprint"]) if "fingerprint" in inputs else None
    folders = parent_folders(cfg, inputs)
    preflight(folders)
    meta = read_meta(fp_dir)
    probes = read_probes(fp_dir)
    row = base_row(cfg, folders, meta)
    progress = progress_of(hooks)
    progress("cell stages (merge, measure)", 0, 2)  # marks the real start: the cell may have queued
    with scratch_dir(Path(out_dir).name, cfg.scratch) as scratch:
        try:
            model_dir = _model(cfg, folders, scratch, row)
            progress("cell stages (merge, measure)", 1, 2)
            row.update(
                _measure(cfg, model_dir, folders, inputs, scratch, Path(out_dir), meta, probes)
            )
            progress("cell stages (merge, measure)", 2, 2)
            if cfg.keep and cfg.cell is not None:
                row["merged_ref"] = str(_keep(model_dir, scratch, Path(out_dir)))
        except FprunError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed cell is a row, the grid goes on
            log.warning("merge cell failed: %s: %s", type(exc).__name__, exc)
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
    return [row]


def base_row(cfg: CellConfig, folders: dict[str, Path], meta: Any) -> dict[str, Any]:
    """The columns known before any work: parents, method and parameters, seed."""
    import json

    labels = {r: cfg.labels.get(r, str(f)) for r, f in folders.items()}
    cell = cfg.cell
    summary = cell_summary(cell) if cell else _parent_summary(cfg.parent)
    return {
        "pair": cfg.pair,
        "role": "merged" if cell else cfg.parent,
        "model_a": labels["fingerprinted"],
        "model_b": labels["expert"],
        "base_model": labels["base"],
        "fingerprint_id": meta.fingerprint_id,
        "fingerprint_method": meta.method,
        "merge_method": cell["method"] if cell else "none",
        "params": json.dumps(cell, sort_keys=True) if cell else None,
        "seed": cell["seed"] if cell else None,
        "merge_device": cell["device"] if cell else None,
        **summary,
        "status": "ok",
        "error": None,
        "merged_ref": None,
    }


def _parent_summary(parent: str | None) -> dict[str, Any]:
    share = {"fingerprinted": 1.0, "expert": 0.0}.get(parent or "")
    return {"weights": None, "densities": None, "weight_fingerprinted": share}


def _model(cfg: CellConfig, folders: dict[str, Path], scratch: Path, row: dict) -> Path:
    """The model to measure: a parent (baseline) or a fresh merge in ``scratch``."""
    if cfg.cell is None:
        return folders[cfg.parent or "base"]
    from tasks.merge.mergekit_run import run_mergekit

    cell = cfg.cell
    done = run_mergekit(
        mergekit_config(cell, {r: str(f) for r, f in folders.items()}),
        scratch / "merged",
        seed=cell["seed"] if cell["seed"] is not None else 0,
        device=cell["device"],
        shard_bytes=cfg.shard_mb << 20,
    )
    row.update(merge_seconds=done.seconds, merged_bytes=done.bytes, untied_head=done.untied_head)
    return done.path


def _measure(
    cfg: CellConfig,
    model_dir: Path,
    folders: dict[str, Path],
    inputs: dict[str, Path],
    scratch: Path,
    out_dir: Path,
    meta: Any,
    probes: list,
) -> dict[str, Any]:
    """HuRef, verification and utility columns of ``model_dir`` (timed)."""
    from tasks.verify.step import load_model_for_verification
    from tasks.verify.verifier import write_generations

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    invariants = {r: inputs.get(f"inv_{r}") for r in folders}
    if all(invariants.values()):
        parents = {r: (Path(invariants[r]), folders[r]) for r in folders}
        out.update(huref_columns(cfg, model_dir, scratch, parents))
    t1 = time.perf_counter()
    fp_dir = Path(inputs["fingerprint"])
    model, tok = load_model_for_verification(
        model_dir, fingerprint_dir=fp_dir, dtype=cfg.verify.dtype, device=cfg.verify.device
    )
    label = "merged" if cfg.cell else cfg.labels.get(cfg.parent or "", str(model_dir))
    rows, records = verify_loaded(cfg, meta, probes, model, tok, label)
    utility = utility_columns(cfg, model, tok, out_dir)
    del model
    primary = PLAIN
    if meta.method == "if_adapter":
        more, recs = verify_adapter(cfg, meta, probes, model_dir, fp_dir)
        rows, records, primary = rows + more, records + recs, "tuned_w_adapter"
    write_generations(out_dir / "generations.jsonl", records)
    probe_data = sorted({d for r in rows for d in r.get("datasets") or []})
    out.update(fsr_columns(rows, primary))
    out.update(utility, datasets=[*utility["datasets"], *probe_data])
    out.update(huref_seconds=t1 - t0, eval_seconds=time.perf_counter() - t1)
    return out


def _keep(model_dir: Path, scratch: Path, out_dir: Path) -> Path:
    """Move the merged weights (and their invariants) out of scratch into the artifact folder."""
    dest = out_dir / "merged"
    shutil.move(str(model_dir), dest)
    if (scratch / "huref").is_dir():
        shutil.move(str(scratch / "huref"), out_dir / "huref")
    return dest


__all__ = ["CODE_VERSION", "merge_cell_step"]
