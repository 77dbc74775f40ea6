"""The on-disk zoo cache: atomic, locked, checksum-manifested model folders.

Every zoo entry is a folder under ``$FPRUN_CACHE/zoo/`` built by :func:`materialize` into a
temporary sibling under an ``fcntl.flock`` lock, described by a ``fprun-zoo.json`` manifest and
renamed into place, so concurrent processes (pytest workers, Ray tasks) see no folder or a
complete one. Each resolve compares every file's size and ``mtime_ns`` with the manifest (cheap);
only on a difference is the sha256 recomputed, refreshing the mtimes on a match and rebuilding on
a mismatch. Bit rot that keeps size and mtime needs :func:`problems` with ``full=True``
(``tasks.models.zoo.verify_zoo``). A changed recipe (builder + version) rebuilds the entry.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from tasks.files import atomic_write_json, locked, sha256_file

MANIFEST = "fprun-zoo.json"
MANIFEST_FORMAT = 1
_VERSIONED = ("torch", "transformers", "tokenizers", "safetensors", "gguf")

log = logging.getLogger(__name__)


def cache_root(cache_dir: Path | None = None) -> Path:
    """The fprun cache folder: ``cache_dir``, else ``$FPRUN_CACHE``, else ``~/.cache/fprun``.

    Read at call time (not import time) so tests can point it at a temporary folder.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("FPRUN_CACHE") or "~/.cache/fprun").expanduser()


def read_manifest(folder: Path) -> dict | None:
    """The entry's manifest, or None when it is missing or unreadable."""
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def quick_problem(folder: Path, recipe: str) -> str | None:
    """Why ``folder`` cannot be used as-is (stat-only check), or None when it looks intact."""
    manifest = read_manifest(folder)
    if manifest is None:
        return "no readable manifest" if folder.exists() else "not built yet"
    if manifest.get("recipe") != recipe:
        return f"built by recipe {manifest.get('recipe')!r}, now {recipe!r}"
    for rel, rec in manifest["files"].items():
        try:
            st = (folder / rel).stat()
        except OSError:
            return f"{rel} is missing"
        if st.st_size != rec["size"] or st.st_mtime_ns != rec["mtime_ns"]:
            return f"{rel} changed since it was built"
    return None


def problems(folder: Path, *, full: bool) -> list[str]:
    """Files of an entry whose content no longer matches its manifest.

    Args:
        folder: A zoo entry folder.
        full: Hash every file. When False only files whose size or mtime changed are hashed.

    Returns:
        One message per missing or altered file (empty when the entry is intact).
    """
    manifest = read_manifest(folder)
    if manifest is None:
        return [f"{folder / MANIFEST} is missing or unreadable"]
    found = []
    for rel, rec in manifest["files"].items():
        path = folder / rel
        try:
            st = path.stat()
        except OSError:
            found.append(f"{rel} is missing")
            continue
        if st.st_size != rec["size"]:
            found.append(f"{rel} has {st.st_size} bytes, expected {rec['size']}")
        elif (full or st.st_mtime_ns != rec["mtime_ns"]) and sha256_file(path) != rec["sha256"]:
            found.append(f"{rel} does not match its recorded sha256")
    return found


def write_manifest(folder: Path, recipe: str, source: dict) -> dict:
    """Record every file of ``folder`` (size, mtime, sha256) plus provenance, atomically."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        _make_shareable(path)
        st = path.stat()
        files[path.relative_to(folder).as_posix()] = {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": sha256_file(path),
        }
    manifest = {
        "format": MANIFEST_FORMAT,
        "recipe": recipe,
        "source": source,
        "versions": {name: _version(name) for name in _VERSIONED},
        "files": files,
    }
    _atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def materialize(folder: Path, recipe: str, build: Callable[[Path], dict]) -> Path:
    """Return ``folder`` once it holds an intact build of ``recipe``, building it if needed.

    Args:
        folder: Final location of the entry (its parent is created).
        recipe: Identifies the builder and its version; stored in the manifest.
        build: Writes the entry into the empty folder it is given and returns a JSON-able
            description of its source (recorded in the manifest).

    Returns:
        ``folder``.
    """
    if quick_problem(folder, recipe) is None:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with locked(folder.parent / f".{folder.name}.lock"):
        reason = quick_problem(folder, recipe)
        if reason is None:  # another process built it while we waited for the lock
            return folder
        if reason.endswith("changed since it was built") and not problems(folder, full=False):
            _refresh_mtimes(folder)  # same bytes, new mtimes (a copy): hash once, then trust
            return folder
        if folder.exists():
            log.warning("rebuilding zoo entry %s: %s", folder, reason)
        _remove_leftovers(folder)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:
            source = build(tmp)
            write_manifest(tmp, recipe, source)
            _make_shareable(tmp, mode=0o777)  # mkdtemp makes 0700 folders
            _swap_in(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder


def save_model_on_any_rank(model: object, out: Path) -> None:
    """``model.save_pretrained(out)`` that writes on every torch.distributed rank.

    transformers 5 writes weights only on rank 0 once a process group exists
    (``should_save_on_this_rank``) and has no opt-out. A zoo entry is a per-machine cache built
    by whichever process takes its lock first, which under Ray Train is often rank 1: it would
    get a folder with a tokenizer and no model, which every rank then fails to load. The
    override lives on the instance for the one call only.
    """
    model.should_save_on_this_rank = lambda is_main_process: True  # type: ignore[attr-defined]
    try:
        model.save_pretrained(out)  # type: ignore[attr-defined]
    finally:
        del model.should_save_on_this_rank  # type: ignore[attr-defined]
    if not any(out.glob("*.safetensors")):
        raise RuntimeError(f"save_pretrained wrote no weights into {out}")


def _swap_in(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``, moving a previous (broken) entry aside first."""
    old = None
    if folder.exists() or folder.is_symlink():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        os.rename(folder, old)
    os.rename(tmp, folder)
    if old is not None:
        # Readers that still hold files of the old entry open (mmap) keep them until they close.
        shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    """Delete temp/old folders that a killed build left behind (caller holds the lock)."""
    for pattern in (f".{folder.name}.tmp-*", f".{folder.name}.old-*"):
        for stale in folder.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def _refresh_mtimes(folder: Path) -> None:
    manifest = read_manifest(folder)
    assert manifest is not None
    for rel, rec in manifest["files"].items():
        rec["mtime_ns"] = (folder / rel).stat().st_mtime_ns
    _atomic_write_json(folder / MANIFEST, manifest)


def _atomic_write_json(path: Path, data: dict) -> None:
    atomic_write_json(path, data)
    _make_shareable(path)


def _make_shareable(path: Path, mode: int = 0o666) -> None:
    """Give ``path`` the umask's normal mode: mkdtemp and some writers create 0600/0700 entries,
    which would hide a cache shared between users."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
