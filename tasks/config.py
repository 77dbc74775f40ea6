"""The one strict config base and the one validation path for every fprun config.

Experiment YAMLs, step configs and CLI flags all end in :func:`validate`, so a bad value reads the
same wherever it came from: one line that names the value the way the user wrote it (the YAML file
and key, ``--set key=value``, or a flag such as ``--samples``), what is wrong, and what to do,
with a spelling suggestion for an unknown key. Lives in ``tasks`` because step functions validate
their own configs and must not import ``runner``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tasks.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base for every fprun config: immutable, and an unknown key is an error (unlike mergekit)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def validate(
    model: type[M],
    data: Mapping[str, Any],
    source: str,
    origins: Mapping[str, str] | None = None,
) -> M:
    """``model.model_validate(data)``, or the one-line :class:`ConfigError` on failure.

    Args:
        model: The config class.
        data: The raw mapping.
        source: Where ``data`` came from, for keys without an origin (e.g. the YAML path).
        origins: Dotted key -> how the user typed it (``--set train.lr=abc``, ``--samples``); the
            longest matching prefix of a bad key names it in the message.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problem, fix = error_parts(exc, model, source, origins or {})
        raise ConfigError(problem, fix) from exc


def error_parts(
    exc: ValidationError, model: type[BaseModel], source: str, origins: Mapping[str, str]
) -> tuple[str, str]:
    """(problem, fix) for the first error; a misspelling is reported before the missing key.

    A numeric field's fix gives its whole allowed range (pydantic names only the violated bound).
    """
    err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    label = _origin(key, origins)
    where = label or source
    prefix = f"{where}: " if where else ""
    if err["type"] == "extra_forbidden":
        allowed = allowed_keys(model, loc[:-1])
        renamed = getattr(model_at(model, loc[:-1]), "RENAMED", {}).get(str(loc[-1]))
        close = [renamed] if renamed else difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
        return f"{prefix}unknown key {key!r}{more}", hint
    if err["type"] == "missing":
        return f"{prefix}{key} is required{more}", f"add {key}" + (
            f" to {source}" if source else ""
        )
    msg = err["msg"].replace("Input should be", "must be").replace("Value error, ", "")
    got = err.get("input")
    shown = f" (got {got!r})" if isinstance(got, str | int | float) and not label else ""
    # A flag's label already names the key (--samples -1); a --set or YAML key keeps it.
    named = "" if label and not label.startswith("--set") else f"{key}: "
    span = allowed_range(field_at(model, loc))
    if label and label.startswith("--set"):
        fix = f"change {label.split('=')[0]}"
    elif label:
        fix = f"change {label.split(' ')[0]}"  # the flag, without the value typed
    else:
        fix = f"change {key}" + (f" in {source}" if source else "")
    if span:
        fix += f" (allowed: {span})"
    return f"{prefix}{named}{msg}{shown}{more}", fix


def allowed_range(field: Any) -> str:
    """``">= 1"``, ``"64 to 2048"``, ``"> 0 and < 1"``: a numeric field's bounds, else ''."""
    lo = hi = ""
    for m in getattr(field, "metadata", []) or []:
        for attr, sign in (("ge", ">="), ("gt", ">")):
            if getattr(m, attr, None) is not None:
                lo = f"{sign} {getattr(m, attr)}"
        for attr, sign in (("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                hi = f"{sign} {getattr(m, attr)}"
    if lo.startswith(">=") and hi.startswith("<="):
        return f"{lo[3:]} to {hi[3:]}"
    return " and ".join(x for x in (lo, hi) if x)


def model_at(model: type[BaseModel], loc: tuple) -> Any:
    """The config class at ``loc`` inside ``model`` (through nested models and lists), or None."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        current = _model_of(field.annotation) if field is not None else None
    return current


def field_at(model: type[BaseModel], loc: tuple) -> Any:
    """The pydantic ``FieldInfo`` at ``loc`` (None when ``loc`` names no field)."""
    names = [p for p in loc if not isinstance(p, int)]
    if not names:
        return None
    parent = model_at(model, tuple(names[:-1]))
    return getattr(parent, "model_fields", {}).get(names[-1]) if parent is not None else None


def _origin(key: str, origins: Mapping[str, str]) -> str | None:
    """How the user typed ``key`` (or the closest enclosing key), if they typed it."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        label = origins.get(".".join(parts[:n]))
        if label:
            return label
    return None


def allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names allowed at ``loc`` inside ``model`` (through nested models and lists)."""
    current = model_at(model, loc)
    if current is None or not hasattr(current, "model_fields"):
        return []
    return sorted(current.model_fields)


def _model_of(annotation: Any) -> Any:
    """A BaseModel class inside an annotation such as ``list[X]`` or ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None
