"""``fprun huref compare`` and the huref kind's compare step: N invariant folders -> ICS/PCS.

Writes ``similarity.json`` (names, both matrices, what was compared) and ``ics.csv`` to the output
folder and returns one ``similarity`` row per unordered pair.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import CheckpointError, ConfigError, DataError
from tasks.huref.config import CompareConfig
from tasks.huref.similarity import check_compatible, ics_matrix, pcs_matrix

CODE_VERSION = "1"


def compare(
    paths: list[str | os.PathLike], cfg: CompareConfig, out: str | os.PathLike | None = None
) -> dict[str, Any]:
    """ICS (and PCS) matrices over invariant folders.

    Args:
        paths: Two or more folders written by ``fprun huref extract``.
        cfg: PCS on/off, mixed token sets, memory budget.
        out: Folder for ``similarity.json`` and ``ics.csv`` (nothing written when None).

    Returns:
        ``{"names", "ics", "pcs", "pcs_skipped", "rows", "tokens_match"}``.
    """
    if len(paths) < 2:
        raise ConfigError("compare needs at least two invariants folders", "pass two or more")
    ics, metas = ics_matrix(paths, chunk_mb=cfg.chunk_mb, mixed_tokens=cfg.mixed_tokens)
    names = _names(metas, paths)
    same_tokens = check_compatible(metas, names, mixed_tokens=True)
    n = len(paths)
    pcs, skipped = np.full((n, n), np.nan), np.full((n, n), -1)
    if cfg.pcs:
        pcs, skipped = pcs_matrix(
            [_model_path(m, p) for m, p in zip(metas, paths, strict=True)], chunk_mb=cfg.chunk_mb
        )
    rows = []
    for i in range(n):
        for j in range(i + 1, n):
            match = metas[i]["token_set_hash"] == metas[j]["token_set_hash"]
            rows.append(
                {
                    "model_a": names[i],
                    "model_b": names[j],
                    "ics": float(ics[i, j]),
                    "pcs": None if math.isnan(pcs[i, j]) else float(pcs[i, j]),
                    "pcs_skipped": None if skipped[i, j] < 0 else int(skipped[i, j]),
                    "k": int(metas[i]["k"]),
                    "token_set_hash": metas[i]["token_set_hash"] if match else None,
                    "tokens_match": match,
                }
            )
    result = {
        "names": names,
        "ics": ics,
        "pcs": pcs,
        "pcs_skipped": skipped,
        "rows": rows,
        "tokens_match": same_tokens,
    }
    if out is not None:
        _write(Path(out), result, metas)
    return result


def check_invariants(
    paths: list[str | os.PathLike], *, mixed_tokens: bool, pcs: bool = False
) -> list[dict[str, Any]]:
    """What compare and the pictures need, checked before any work (exit 2, nothing written):
    readable metadata, an intact tensor of the recorded shape in every folder, one K and one
    layer count (one token set unless ``mixed_tokens``), and for PCS the source checkpoints."""
    from tasks.huref.store import load_meta, term_reader

    if not paths:
        raise DataError("no invariants folders given", "pass fprun huref extract outputs")
    metas = [load_meta(p) for p in paths]
    for p, meta in zip(paths, metas, strict=True):
        try:
            term_reader(p, meta)  # header and shape: a truncated file fails here
        except CheckpointError as exc:
            raise CheckpointError(exc.problem, "re-run fprun huref extract for it") from None
    check_compatible(metas, [str(p) for p in paths], mixed_tokens=mixed_tokens)
    if pcs:
        for meta, p in zip(metas, paths, strict=True):
            _model_path(meta, p)
    return metas


def _names(metas: list[dict[str, Any]], paths: list) -> list[str]:
    names = [str(m.get("model_ref") or p) for m, p in zip(metas, paths, strict=True)]
    if len(set(names)) != len(names):  # same ref twice (e.g. two K): fall back to the folders
        names = [f"{n} [{Path(p).name}]" for n, p in zip(names, paths, strict=True)]
    if len(set(names)) != len(names):
        raise ConfigError("two compared folders carry the same name", "pass each folder once")
    return names


def _model_path(meta: dict[str, Any], path: Any) -> str:
    model = meta.get("model_path")
    if not model or not Path(model).is_dir():
        raise CheckpointError(
            f"{path}: the checkpoint it was extracted from ({model}) is gone, "
            "so PCS cannot be computed",
            "pass --no-pcs or restore the model",
        )
    return model


def _write(out: Path, result: dict[str, Any], metas: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = result["names"]
    with open(out / "ics.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["model", *names])
        for name, row in zip(names, result["ics"], strict=True):
            w.writerow([name, *(f"{v:.4f}" for v in row)])
    doc = {
        "names": names,
        "ics": np.round(result["ics"], 6).tolist(),
        "pcs": [
            [None if math.isnan(v) else round(float(v), 6) for v in row] for row in result["pcs"]
        ],
        "models": [
            {
                k: m.get(k)
                for k in (
                    "model_ref",
                    "model_path",
                    "arch",
                    "k",
                    "n_layers",
                    "token_strategy",
                    "token_set_hash",
                )
            }
            for m in metas
        ],
        "tokens_match": result["tokens_match"],
    }
    (out / "similarity.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def format_matrix(names: list[str], mat: np.ndarray, title: str) -> str:
    """A plain-text matrix with short column labels (2 decimals, as the seed's tables)."""
    width = max(8, *(len(n) for n in names))
    head = f"{title:<{width}} " + " ".join(f"{i:>8}" for i in range(len(names)))
    lines = [head]
    for i, (name, row) in enumerate(zip(names, mat, strict=True)):
        cells = " ".join("     n/a" if math.isnan(v) else f"{v:8.2f}" for v in row)
        lines.append(f"{name:<{width}} {cells}  [{i}]")
    return "\n".join(lines)


def compare_step(
    config: dict[str, Any], *, inputs: dict[str, Path], out_dir: Path, **hooks: Any
) -> list[dict[str, Any]]:
    """Step function: compares every wired extract step's folder, in input-name order."""
    cfg = CompareConfig.model_validate(config)
    paths = [inputs[k] for k in sorted(inputs)]
    return compare(paths, cfg, out_dir)["rows"]


def compare_identity(paths: list[str | os.PathLike]) -> list[str]:
    """Per folder, a hash of its metadata plus the tensor file's size and mtime.

    Goes into the step config of ``fprun huref compare`` so a re-run with the same folders is
    skipped but a re-extraction into one of them is noticed.
    """
    import hashlib

    from tasks.huref.store import META_FILE, TENSOR_FILE, load_meta

    out = []
    for p in paths:
        load_meta(p)  # one-line CheckpointError for a folder that holds no invariants
        folder = Path(p)
        st = (folder / TENSOR_FILE).stat()
        blob = (folder / META_FILE).read_bytes() + f"{st.st_size}:{st.st_mtime_ns}".encode()
        out.append(hashlib.sha256(blob).hexdigest()[:16])
    return out


def compare_paths_step(
    config: dict[str, Any], *, inputs: dict[str, Path], out_dir: Path, **hooks: Any
) -> list[dict[str, Any]]:
    """Step function of ``fprun huref compare``: folders named in the config, not wired steps."""
    rest = {k: v for k, v in config.items() if k not in ("paths", "identity")}
    return compare(list(config["paths"]), CompareConfig.model_validate(rest), out_dir)["rows"]
