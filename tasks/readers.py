"""Readers for every file fprun reads from the user: text, YAML, JSON and JSON lines.

A file that is missing, a folder, not UTF-8 or not parseable becomes the one-line
:class:`tasks.errors.FprunError` (file and line, what to do) instead of a traceback, whichever
verb or step reads it. The caller picks the error family (a config is a ConfigError, a dataset a
DataError, an artifact a CheckpointError) and names what the file is for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError, FprunError


def read_text(
    path: str | os.PathLike, *, error: type[FprunError] = ConfigError, what: str = "file"
) -> str:
    """The file's text, decoded as UTF-8 (a BOM is dropped)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise error(f"{what} {p} is a folder, not a file", "pass the file itself")
    if not p.is_file():
        raise error(f"{what} {p} does not exist", "check the path")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {p} ({exc.strerror})", "check its permissions") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(
            f"{what} {p} is not valid UTF-8 (line {line}, byte {exc.start})",
            "save it as UTF-8",
        ) from exc


def read_yaml(
    path: str | os.PathLike, *, error: type[FprunError] = ConfigError, what: str = "config file"
) -> Any:
    """The YAML document of a file (``None`` for an empty one)."""
    import yaml

    text = read_text(path, error=error, what=what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise error(f"{path} is not valid YAML{where} ({problem})", "fix the YAML syntax") from exc


def read_json(
    path: str | os.PathLike, *, error: type[FprunError] = ConfigError, what: str = "file"
) -> Any:
    """The JSON document of a file."""
    text = read_text(path, error=error, what=what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(
            f"{what} {path} is not valid JSON (line {exc.lineno}: {exc.msg})", "fix the JSON"
        ) from exc


def parse_jsonl(text: str, path: Any, *, error: type[FprunError], what: str) -> list[Any]:
    """One JSON value per non-blank line of ``text`` (read from ``path``)."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise error(
                    f"{what} {path} line {n} is not JSON ({exc.msg})",
                    "write one JSON object per line",
                ) from exc
    return rows


def read_jsonl(
    path: str | os.PathLike, *, error: type[FprunError] = ConfigError, what: str = "file"
) -> list[Any]:
    """One JSON value per non-blank line."""
    return parse_jsonl(read_text(path, error=error, what=what), path, error=error, what=what)


def read_json_rows(
    path: str | os.PathLike, *, error: type[FprunError] = ConfigError, what: str = "file"
) -> list[Any]:
    """A JSON list, or JSON lines (whichever the file holds): the rows of a data file."""
    text = read_text(path, error=error, what=what)
    if not text.strip():
        return []
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise error(
                f"{what} {path} is not valid JSON (line {exc.lineno}: {exc.msg})", "fix the JSON"
            ) from exc
        if isinstance(data, list):
            return data
    return parse_jsonl(text, path, error=error, what=what)
