"""Experiment configs: YAML in, frozen pydantic models out.

Imports neither torch nor ray, so ``fprun validate`` answers instantly. Each experiment kind has
its own config model in ``runner/experiments/<kind>.py``; this module only loads YAML, applies
``--set a.b=v`` overrides and turns pydantic's multi-line errors into the one-line errors the CLI
prints (a misspelled key must name the key, the file and the allowed spellings).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from tasks.config import validate
from tasks.errors import ConfigError


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read one YAML mapping, with one-line errors for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist", "check the path (fprun ls configs)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p} is not valid YAML{where}", "fix the YAML syntax") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p} does not hold a mapping", "an experiment YAML starts with 'kind:'")
    return data


def apply_overrides(
    data: Mapping[str, Any], overrides: Iterable[str], origins: dict[str, str] | None = None
) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=value`` overrides applied (values parsed as YAML).

    Lists can be indexed by position (``models.1.ref=...``). Unknown keys are *set*, so the schema
    check that follows reports them as misspellings instead of silently ignoring them. Each key
    set is recorded in ``origins`` as ``--set key=value``, so an error names the override.
    """
    out: dict[str, Any] = _deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"override {item!r} is not key=value", "write e.g. --set train.lr=1e-4"
            )
        value = yaml.safe_load(raw) if raw.strip() else ""
        node: Any = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = _child(node, part, item)
        _assign(node, parts[-1], value, item)
        if origins is not None:
            origins[key.strip()] = f"--set {item}"
    return out


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    return obj


def _child(node: Any, part: str, item: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, item)]
    if not isinstance(node, dict):
        raise ConfigError(f"override {item!r} descends into a scalar", "check the key path")
    return node.setdefault(part, {})


def _assign(node: Any, part: str, value: Any, item: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, item)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ConfigError(f"override {item!r} descends into a scalar", "check the key path")


def _index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(
            f"override {item!r}: {part!r} is not an index of a {len(node)}-item list",
            "use a 0-based position",
        )
    return int(part)


def load_experiment(path: str | os.PathLike, overrides: Iterable[str] = ()) -> BaseModel:
    """Load an experiment YAML, apply overrides, and validate it against its kind's config model."""
    from runner.experiments import get_kind  # local: experiments import this module

    origins: dict[str, str] = {}
    data = apply_overrides(load_yaml(path), overrides, origins)
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(f"{path} has no 'kind:'", "add e.g. 'kind: if_sft' (fprun ls methods)")
    module = get_kind(kind, source=str(path))
    return validate(module.Config, data, str(path), origins)
