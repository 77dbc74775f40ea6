"""``fprun merge CONFIG.yml --out DIR``: a mergekit YAML, verbatim, merged in-process.

:func:`resolve_yaml` fills the ``${name}`` placeholders, resolves every model reference to an
absolute folder (:func:`tasks.merge.preflight.resolve_ref`: no hub call for a missing path, no
``+``/``@`` misreading) and preflights the models, before any work. :func:`merge_yaml_step` is the
one-step plan's step: mergekit's own result, tied heads fixed, plus a ``merge_cell`` row (method,
seed, device, bytes, seconds).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tasks.config import validate
from tasks.errors import ConfigError
from tasks.merge.config import MergeYamlConfig
from tasks.merge.preflight import preflight, resolve_ref

CODE_VERSION = "1"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill_placeholders(text: str, models: dict[str, str], source: str) -> str:
    """Replace ``${name}`` by ``models[name]``; every placeholder must be given."""
    missing = sorted({m for m in PLACEHOLDER.findall(text) if m not in models})
    if missing:
        raise ConfigError(
            f"{source} has placeholders {', '.join(missing)} with no model",
            " ".join(f"--model {m}=REF" for m in missing),
        )
    return PLACEHOLDER.sub(lambda m: models[m[1]], text)


def _refs(data: dict[str, Any]) -> list[tuple[dict, str]]:
    """(holder, key) of every model reference in a mergekit configuration."""
    found: list[tuple[dict, str]] = []
    if data.get("base_model") is not None:
        found.append((data, "base_model"))
    for entry in data.get("models") or []:
        found.append((entry, "model"))
    for sl in data.get("slices") or []:
        if sl.get("base_model") is not None:
            found.append((sl, "base_model"))
        found += [(src, "model") for src in sl.get("sources") or []]
    return found


def resolve_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[str, Path]]:
    """The configuration with every model as an absolute ``{"model": {"path": ...}}`` and the
    folders by reference, preflighted (ConfigError, ModelRefError, CheckpointError,
    ArchitectureError: exit 2 before any work)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML ({exc})", "fix the file") from exc
    if not isinstance(data, dict) or "merge_method" not in data:
        raise ConfigError(f"{source} is not a mergekit configuration", "add merge_method")
    if data.get("modules") or data.get("tokenizer") or data.get("tokenizer_source"):
        raise ConfigError(
            f"{source}: modules and tokenizer surgery are not supported here",
            "merge models that share the base's tokenizer, with models: or slices:",
        )
    folders: dict[str, Path] = {}
    for holder, key in _refs(data):
        ref = holder[key]
        if not isinstance(ref, str):
            raise ConfigError(f"{source}: model {ref!r} is not a reference", "give a path or name")
        folders.setdefault(ref, resolve_ref(ref))
        holder[key] = {"model": {"path": str(folders[ref])}}
    if not folders:
        raise ConfigError(f"{source} names no models", "list models: or slices:")
    preflight({ref: f for ref, f in folders.items()})
    return data, folders


def merge_yaml_step(
    config: dict[str, Any], *, inputs: dict[str, Path], out_dir: Path, **hooks: Any
) -> list[dict]:
    """Merge the configuration into ``out_dir/merged``; one ``merge_cell`` row."""
    from tasks.merge.mergekit_run import run_mergekit

    cfg: MergeYamlConfig = validate(MergeYamlConfig, config, "merge step")
    data, _ = resolve_yaml(cfg.yaml, "merge step")
    done = run_mergekit(
        data,
        Path(out_dir) / "merged",
        seed=cfg.seed,
        device=cfg.device,
        shard_bytes=cfg.shard_mb << 20,
        copy_tokenizer=cfg.copy_tokenizer,
        source_text=cfg.yaml,
    )
    return [
        {
            "role": "merged",
            "merge_method": str(data["merge_method"]),
            "params": json.dumps(data, sort_keys=True),
            "seed": cfg.seed,
            "merge_device": cfg.device,
            "status": "ok",
            "merged_ref": str(done.path),
            "merged_bytes": done.bytes,
            "merge_seconds": done.seconds,
            "untied_head": done.untied_head,
        }
    ]
