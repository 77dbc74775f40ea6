"""``fprun huref extract`` and the huref kind's extract step: one model -> its invariants folder.

Never instantiates the model: the tokenizer file picks the tokens (cached), the safetensors reader
reads K embedding rows and the last layers' tensors, and :mod:`tasks.huref.invariants` computes the
terms. The result is written in the shared format of :mod:`tasks.huref.store`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tasks.huref import arch as archs
from tasks.huref.config import ExtractConfig
from tasks.huref.invariants import compute_invariants, resolve_device
from tasks.huref.safetensors_io import CheckpointReader
from tasks.huref.store import TENSOR_FILE, InvariantsWriter
from tasks.huref.tokens import select_tokens
from tasks.progress import ProgressFn, no_progress, progress_of

CODE_VERSION = "1"


def extract(
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    cfg: ExtractConfig,
    *,
    model_ref: str | None = None,
    cache_dir: Path | None = None,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    """Compute and save one model's invariants; return its ``huref`` result row.

    Args:
        model_dir: A resolved safetensors model folder.
        out: Folder receiving ``invariants.safetensors`` and ``huref.json``.
        cfg: K, layers, token strategy, dtype, device.
        model_ref: Label for rows (default ``cfg.name`` or ``cfg.model`` or the folder).
        cache_dir: fprun cache root for the token-selection cache.
        progress: Hears of each finished invariant matrix (3 per layer).

    Raises:
        ArchitectureError, CheckpointError, ConfigError, DataError: bad input (exit 2 in the CLI).
    """
    t0 = time.perf_counter()
    folder = Path(model_dir)
    label = model_ref or cfg.name or cfg.model or str(folder)
    reader = CheckpointReader(folder)
    arch = archs.detect(folder, reader)
    tokens = select_tokens(folder, cfg.tokens, cfg.k, cache_dir=cache_dir)
    device = resolve_device(cfg.device, cfg.dtype)
    with InvariantsWriter(out, len(tokens.ids), cfg.n_layers) as writer:

        def sink(i: int, matrix: Any) -> None:
            writer.write(i, matrix)
            progress("invariant matrices", i + 1, 3 * cfg.n_layers)

        # each matrix goes to disk as it is finished: the whole result is never in memory
        compute_invariants(
            reader,
            arch,
            list(tokens.ids),
            n_layers=cfg.n_layers,
            dtype=cfg.dtype,
            device=device,
            sink=sink,
        )
        writer.finish(_meta(cfg, folder, label, arch, tokens, device))
    return {
        "model_ref": label,
        "artifact": str(Path(out).resolve() / TENSOR_FILE),
        "arch": arch.describe(),
        "k": cfg.k,
        "n_layers": cfg.n_layers,
        "token_strategy": tokens.strategy,
        "token_set_hash": tokens.hash,
        "dtype": cfg.dtype,
        "hidden_size": arch.hidden_size,
        "bytes_read": reader.bytes_read,
        "seconds": time.perf_counter() - t0,
        "datasets": _datasets(cfg),
    }


def _meta(
    cfg: ExtractConfig, folder: Path, label: str, arch: archs.Arch, tokens: Any, device: str
) -> dict[str, Any]:
    """What ``huref.json`` records about the extraction."""
    return {
        "model_ref": label,
        "model_path": str(folder.resolve()),
        "arch": arch.describe(),
        "model_type": arch.model_type,
        "layout": arch.layout,
        "k": cfg.k,
        "n_layers": cfg.n_layers,
        "layers": list(range(arch.n_layers_total - cfg.n_layers, arch.n_layers_total)),
        "token_strategy": tokens.strategy,
        "token_source": tokens.source,
        "token_set_hash": tokens.hash,
        "tokens": list(tokens.tokens),
        "token_ids": list(tokens.ids),
        "dtype": cfg.dtype,
        "device": device,
        "hidden_size": arch.hidden_size,
    }


def _datasets(cfg: ExtractConfig) -> list[str]:
    if cfg.tokens.strategy == "corpus":
        return [f"huref-tokens:{c}" for c in cfg.tokens.corpus]
    return []


def extract_step(
    config: dict[str, Any], *, inputs: dict[str, Path], out_dir: Path, **hooks: Any
) -> list[dict[str, Any]]:
    """Step function of the huref kind: the model is ``inputs['model']`` or ``config['model']``."""
    from tasks.models.zoo import resolve_model

    cfg = ExtractConfig.model_validate(config)
    if "model" in inputs:
        folder = Path(inputs["model"])
        if (folder / "published").is_dir():  # a fingerprint folder: its published model
            folder = folder / "published"
    elif cfg.model:
        folder = resolve_model(cfg.model)
    else:
        from tasks.errors import ConfigError

        raise ConfigError("huref extract step has no model", "set model: REF")
    return [extract(folder, out_dir, cfg, progress=progress_of(hooks))]
