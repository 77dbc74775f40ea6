"""Atomic writes, file locks and JSON of result rows: the one copy every module uses.

A reader (another step, another node, a re-run after a crash) must see a whole file or none, so
every file fprun writes goes to a temporary name beside its target and is renamed over it. Locks
are ``fcntl.flock``: the kernel releases them when the holder dies, so a killed process never
leaves a stale lock (the standard library has no portable lock object; the Linux nodes Ray runs on
all have flock).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def temp_beside(path: Path, suffix: str = "") -> Path:
    """A unique hidden name in ``path``'s folder (same filesystem, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path; rename it over ``path`` when the body succeeds, else remove it.

    ``suffix`` keeps an extension for writers that choose a format by it (``.png``).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(final, suffix)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 1) -> Path:
    """Write JSON atomically (sorted keys, non-ASCII kept, numpy/torch scalars unwrapped)."""
    text = json.dumps(data, indent=indent, sort_keys=True, ensure_ascii=False, default=json_default)
    return atomic_write_text(path, text + "\n")


def atomic_copytree(src: Path, out: Path, *, hardlink: bool = False) -> Path:
    """Copy (or hard-link, falling back to copies across filesystems) a folder into place whole."""

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    copy: Callable[[str, str], Any] = link_or_copy if hardlink else shutil.copy2
    with atomic_path(out) as tmp:
        shutil.copytree(src, tmp, copy_function=copy)  # copy2 keeps mtimes (zoo manifests)
    return out


@contextlib.contextmanager
def locked(lock_file: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created if needed) for the ``with`` body."""
    path = Path(lock_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, streamed so multi-GB weights never sit in memory."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback for result rows: numpy/torch scalars and datetimes."""
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"result rows hold a {type(obj).__name__}, which is not JSON")


def unwritable(path: str | os.PathLike, *, folder: bool = False) -> str | None:
    """Why ``path`` (a file or folder to be created or replaced) cannot be written, else None.

    Checks the nearest existing ancestor: it must be a folder where a file can be created (a
    probe file, removed at once, catches read-only mounts and permissions, root's included).
    Creates nothing that stays, so a verb can check its outputs before any work starts.
    ``folder``: ``path`` is a folder to write into (an existing file there is a problem).
    """
    target = Path(path).expanduser().absolute()
    if folder and target.exists() and not target.is_dir():
        return f"{target} is a file, not a folder"
    here = target if target.is_dir() else target.parent
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        return f"{here} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".fprun-probe-", dir=here)
    except OSError as exc:
        return f"{here} is not writable ({exc.strerror})"
    os.close(fd)
    os.unlink(probe)
    return None


def check_out(
    out: str | os.PathLike, *, force: bool = False, file: bool = False, flag: str = "--out"
) -> None:
    """The one ``--out`` rule of every verb: a new path or an empty folder, anything else only
    with ``force``, and a place that can be written; ``file``: the output is one file.

    Raises:
        StoreError: the rule is broken, before any work starts.
    """
    from tasks.errors import StoreError

    out = Path(out).expanduser()
    if file and out.is_dir() and not out.is_symlink():
        raise StoreError(f"{flag} {out} is a folder", "pass a file path, e.g. DIR/name.ext")
    exists = out.exists() or out.is_symlink()
    taken = exists and (file or out.is_symlink() or not out.is_dir() or any(out.iterdir()))
    if taken and not force:
        what = "already exists" if file or not out.is_dir() else "already exists and is not empty"
        raise StoreError(f"{flag} {out} {what}", "pass a new path, or --force to replace it")
    problem = unwritable(out)
    if problem:
        raise StoreError(f"cannot write {flag} {out}: {problem}", "pass a writable path")
