"""One in-process mergekit merge with explicit options, safe to repeat in a long-lived worker.

``MergeOptions`` are built here: the seed (always), the device, ``out_shard_size`` in bytes (a
whole shard is buffered in RAM, so it bounds memory), the base's tokenizer copied. mergekit's
``apply_global_options`` is never called (logging and torch's interop threads: once per process);
its class-level ``LoaderCache`` is emptied after each merge. The output is renamed into place, so a
failed merge leaves nothing. A parent with an untied ``lm_head`` (IF_adapter) makes mergekit write
a merged head under the base's tied config, which transformers would silently drop:
:func:`untie_written_head` sets ``tie_word_embeddings: false`` whenever a head was written.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError
from tasks.files import atomic_path, atomic_write_json
from tasks.merge.preflight import HEAD, tensor_names


@dataclass(frozen=True)
class MergeOutcome:
    """What one merge wrote: folder, bytes on disk, wall time, whether the head was untied."""

    path: Path
    bytes: int
    seconds: float
    untied_head: bool


def parse_merge_config(data: dict[str, Any], source: str) -> Any:
    """mergekit's ``MergeConfiguration`` from a dict, or a one-line ConfigError."""
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    try:
        return MergeConfiguration.model_validate(data)
    except (ValidationError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(
            f"{source}: mergekit rejects the configuration ({' '.join(first[:3])[:300]})",
            "fix the merge configuration (mergekit's YAML schema)",
        ) from exc


def merge_options(*, seed: int, device: str, shard_bytes: int, copy_tokenizer: bool = True) -> Any:
    """Explicit ``MergeOptions``: never mergekit's process-global defaults."""
    from mergekit.options import MergeOptions

    return MergeOptions(
        random_seed=seed,
        device=device,
        out_shard_size=int(shard_bytes),
        copy_tokenizer=copy_tokenizer,
        quiet=True,
        lazy_unpickle=False,
        trust_remote_code=False,
        safe_serialization=True,
    )


def release_loaders() -> None:
    """Empty mergekit's class-level loader cache (it holds an open shard per model ever merged)."""
    from mergekit.io.tasks import LoaderCache

    LoaderCache().flush_all()
    LoaderCache.loaders.clear()


def untie_written_head(folder: Path) -> bool:
    """Set ``tie_word_embeddings: false`` when the merge wrote its own ``lm_head.weight``.

    Returns:
        Whether the config was changed.
    """
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if HEAD not in tensor_names(folder) or cfg.get("tie_word_embeddings") is False:
        return False
    cfg["tie_word_embeddings"] = False
    if isinstance(cfg.get("text_config"), dict):
        cfg["text_config"]["tie_word_embeddings"] = False
    atomic_write_json(cfg_path, cfg, indent=2)
    return True


def run_mergekit(
    config: dict[str, Any],
    out: Path,
    *,
    seed: int,
    device: str = "cpu",
    shard_bytes: int = 1 << 30,
    copy_tokenizer: bool = True,
    source_text: str | None = None,
) -> MergeOutcome:
    """Merge into ``out`` (which must not exist) through ``mergekit.merge.run_merge``.

    Args:
        config: A mergekit configuration whose models are absolute folders (preflighted).
        out: Destination folder, created whole or not at all.
        seed: ``random_seed``; passed for every method so nothing is left to chance.
        device: mergekit's math device (CPU and CUDA draw different DARE masks for one seed).
        shard_bytes: ``out_shard_size``: bytes per output shard, buffered in RAM while written.
        copy_tokenizer: Copy the base model's tokenizer into ``out``.
        source_text: The configuration as the user wrote it (mergekit_config.yml, README.md).

    Raises:
        ConfigError: mergekit rejects the configuration. Errors raised inside the merge itself
            propagate unchanged (a grid turns them into a failed row).
    """
    from mergekit.merge import run_merge

    merge_config = parse_merge_config(config, "merge")
    options = merge_options(
        seed=seed, device=device, shard_bytes=shard_bytes, copy_tokenizer=copy_tokenizer
    )
    t0 = time.perf_counter()
    with atomic_path(out) as tmp:
        tmp.mkdir()
        try:
            run_merge(merge_config, str(tmp), options=options, config_source=source_text)
        finally:
            release_loaders()
        untied = untie_written_head(tmp)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return MergeOutcome(out, size, time.perf_counter() - t0, untied)
