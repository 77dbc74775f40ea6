"""Experiment configs: YAML in, frozen pydantic models out.

Imports neither torch nor ray, so ``fprun validate`` answers instantly. Each experiment kind has
its own config model in ``runner/experiments/<kind>.py``; this module only loads YAML, applies
``--set a.b=v`` overrides and turns pydantic's multi-line errors into the one-line errors the CLI
prints (a misspelled key must name the key, the file and the allowed spellings).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from tasks.errors import ConfigError


class Strict(BaseModel):
    """Base for every fprun config: immutable, and an unknown key is an error (unlike mergekit)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


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


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=value`` overrides applied (values parsed as YAML).

    Lists can be indexed by position (``models.1.ref=...``). Unknown keys are *set*, so the schema
    check that follows reports them as misspellings instead of silently ignoring them.
    """
    out: dict[str, Any] = _deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value",
                              "write e.g. --set train.lr=1e-4")
        value = yaml.safe_load(raw) if raw.strip() else ""
        node: Any = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = _child(node, part, item)
        _assign(node, parts[-1], value, item)
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


def validation_error_line(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """Condense a pydantic error to '<source>: <where>: <what>' with a spelling suggestion."""
    # a misspelling shows up as both "extra key" and "missing key": report the spelling first
    err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, err["loc"][:-1])
        bad = str(err["loc"][-1])
        close = difflib.get_close_matches(bad, allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
        return f"{source}: unknown key {loc!r}{more}; {hint}"
    return f"{source}: {loc}: {err['msg']}{more}; fix the value"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Walk ``loc`` through nested models to list the field names allowed at that level."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        current = _model_of(field.annotation) if field is not None else None
    if current is None or not hasattr(current, "model_fields"):
        return []
    return sorted(current.model_fields)


def _model_of(annotation: Any) -> Any:
    """Find a BaseModel class inside an annotation such as ``list[X]`` or ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def validate_as(model: type[BaseModel], data: Mapping[str, Any], source: str) -> BaseModel:
    """``model.model_validate(data)`` with the one-line ConfigError on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        line = validation_error_line(exc, model, source)
        problem, _, fix = line.rpartition("; ")
        raise ConfigError(problem, fix) from exc


def load_experiment(path: str | os.PathLike, overrides: Iterable[str] = ()) -> BaseModel:
    """Load an experiment YAML, apply overrides, and validate it against its kind's config model."""
    from runner.experiments import get_kind  # local: experiments import this module

    data = apply_overrides(load_yaml(path), overrides)
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(f"{path} has no 'kind:'", "add e.g. 'kind: if_sft' (fprun ls methods)")
    module = get_kind(kind, source=str(path))
    cfg = validate_as(module.Config, data, str(path))
    return cfg
