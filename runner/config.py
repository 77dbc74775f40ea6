"""Experiment configs: YAML in, frozen pydantic models out.

Imports neither torch nor ray, so ``fprun validate`` answers instantly. Each experiment kind has
its own config model in ``runner/experiments/<kind>.py``; this module only loads YAML, applies
``--set a.b=v`` overrides and turns pydantic's multi-line errors into the one-line errors the CLI
prints (a misspelled key must name the key, the file and the allowed spellings).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from tasks.config import validate
from tasks.errors import ConfigError
from tasks.readers import read_yaml


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read one YAML mapping, with one-line errors for a missing or malformed file."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise ConfigError(f"config file {p} does not exist", "check the path (fprun ls configs)")
    data = read_yaml(p, what="config file")
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
        value = parse_value(raw, item)
        node: Any = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = _child(node, part, item)
        _assign(node, parts[-1], value, item)
        if origins is not None:
            origins[key.strip()] = f"--set {item}"
    return out


def parse_value(raw: str, item: str) -> Any:
    """The YAML value of one ``--set key=value`` (an empty value is the empty string)."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(
            f"--set {item}: the value is not valid YAML ({problem})",
            "quote it, e.g. --set 'key=\"text\"', or write a list as [a, b]",
        ) from exc


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


def load_experiment(
    path: str | os.PathLike,
    overrides: Iterable[str] = (),
    flags: Mapping[str, tuple[str, Any]] | None = None,
) -> BaseModel:
    """Load an experiment YAML, apply overrides, and validate it against its kind's config model.

    ``flags`` (dotted key -> (flag, value), e.g. ``{"model": ("--model", "tiny-llama")}``) are
    the values a verb's own options set, applied before ``--set`` and named by their flag in
    errors.
    """
    from runner.experiments import get_kind  # local: experiments import this module

    origins: dict[str, str] = {}
    data = load_yaml(path)
    for key, (flag, value) in (flags or {}).items():
        data = apply_overrides(data, [f"{key}={json.dumps(value)}"])
        origins[key] = f"{flag} {value}"
    data = apply_overrides(data, overrides, origins)
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(f"{path} has no 'kind:'", "add e.g. 'kind: if_sft' (fprun ls methods)")
    module = get_kind(kind, source=str(path))
    return validate(module.Config, data, str(path), origins)
