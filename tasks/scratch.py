"""Node-local scratch folders for steps whose big intermediates must never reach shared storage.

A merge cell writes a multi-GB merged model, measures it and deletes it; on a cluster that belongs
on the node's own disk, not on the shared artifacts filesystem. Each folder is named
``<name>.<pid>`` under :func:`scratch_root` (``$FPRUN_SCRATCH``, else ``<tmp>/fprun-scratch``) and
removed when its ``with`` block ends; :func:`clean_stale` removes folders whose process is gone
(a killed worker), which actor pools call when they start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

ENV = "FPRUN_SCRATCH"


def scratch_root(root: str | os.PathLike | None = None) -> Path:
    """The scratch root: ``root``, else ``$FPRUN_SCRATCH``, else ``<tmp>/fprun-scratch``."""
    chosen = root or os.environ.get(ENV) or Path(tempfile.gettempdir()) / "fprun-scratch"
    return Path(chosen).expanduser().resolve()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove scratch folders left by processes that no longer run on this node; returns them."""
    base = scratch_root(root)
    removed = []
    for item in sorted(base.glob("*.*")) if base.is_dir() else []:
        pid = item.name.rpartition(".")[2]
        if item.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(item, ignore_errors=True)
            removed.append(item)
    return removed


@contextlib.contextmanager
def scratch_dir(name: str, root: str | os.PathLike | None = None) -> Iterator[Path]:
    """A fresh ``<root>/<name>.<pid>`` folder for the ``with`` body, removed afterwards."""
    folder = scratch_root(root) / f"{name}.{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def folder_bytes(folder: str | os.PathLike) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
