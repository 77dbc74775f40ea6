"""On-disk format of a model's HuRef invariants, shared by extraction, compare and the encoder.

A model's invariants live in one folder::

    <out>/invariants.safetensors   one fp32 tensor "invariants", shape [3 * n_layers, K, K], in the
                                   seed's order [Ma(L-2), Mb(L-2), Mf(L-2), Ma(L-1), Mb(L-1), ...]
    <out>/huref.json               what was extracted: model ref, arch, K, n_layers, token strategy,
                                   token_set_hash, the token strings, dtype, hidden size

safetensors (not the seed's ``.npy``) because it cannot execute code on load and can be read lazily
(``compare`` streams matrices from hundreds of files without holding any of them whole). The JSON
sits next to it, not inside the safetensors header, so tools can read it without touching the
multi-hundred-MB tensor file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.errors import CheckpointError

TENSOR_FILE = "invariants.safetensors"
META_FILE = "huref.json"
TENSOR_NAME = "invariants"
FORMAT_VERSION = 1
TERMS = ("Ma", "Mb", "Mf")  # per layer, in the seed's order
REQUIRED_META = ("model_ref", "arch", "k", "n_layers", "token_strategy", "token_set_hash",
                 "dtype", "hidden_size")


def term_names(n_layers: int) -> list[str]:
    """Labels of the matrices in file order, e.g. ``['Ma(L-2)', 'Mb(L-2)', ..., 'Mf(L-1)']``."""
    return [f"{t}(L-{n_layers - i})" for i in range(n_layers) for t in TERMS]


def _folder(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.parent if p.name in (TENSOR_FILE, META_FILE) else p


def save_invariants(out: str | os.PathLike, tensor: Any, meta: dict[str, Any]) -> Path:
    """Write ``tensor`` (numpy array or torch tensor, saved as fp32) and ``meta`` to ``out``.

    Both files are written to temporary names and renamed, the JSON last, so a reader that finds
    ``huref.json`` always finds a complete tensor file.

    Args:
        out: Folder to create or reuse.
        tensor: Array of shape ``[3 * n_layers, K, K]`` (numpy, or torch on any device).
        meta: At least the keys of ``REQUIRED_META``; ``n_terms`` and ``format`` are added.

    Returns:
        The folder.
    """
    import numpy as np
    from safetensors.numpy import save_file

    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"invariant metadata lacks {missing}")
    k, n_layers = int(meta["k"]), int(meta["n_layers"])
    if tuple(tensor.shape) != (3 * n_layers, k, k):
        raise ValueError(f"invariants have shape {tuple(tensor.shape)}, "
                         f"expected {(3 * n_layers, k, k)}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(tensor, "detach"):  # torch, without importing it for numpy callers
        tensor = tensor.detach().float().cpu().numpy()
    data = np.ascontiguousarray(tensor, dtype=np.float32)
    tmp = folder / f".{TENSOR_FILE}.{os.getpid()}.tmp"
    save_file({TENSOR_NAME: data}, str(tmp), metadata={"format": "fprun-huref"})
    os.replace(tmp, folder / TENSOR_FILE)
    full = {**meta, "format": FORMAT_VERSION, "terms": term_names(n_layers)}
    tmpj = folder / f".{META_FILE}.{os.getpid()}.tmp"
    tmpj.write_text(json.dumps(full, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmpj, folder / META_FILE)
    return folder


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``huref.json`` of an invariants folder (or of the folder holding the given file)."""
    folder = _folder(path)
    meta_path = folder / META_FILE
    if not meta_path.is_file() or not (folder / TENSOR_FILE).is_file():
        raise CheckpointError(f"{folder} holds no HuRef invariants ({META_FILE} + {TENSOR_FILE})",
                              "run 'fprun huref extract --model REF --out DIR' first")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON", "re-run the extraction") from exc
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"{meta_path} lacks {missing}", "re-run the extraction")
    return meta


def load_invariants(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """Load the whole ``[3 * n_layers, K, K]`` fp32 tensor and its metadata.

    Args:
        path: The invariants folder, or its ``invariants.safetensors`` / ``huref.json``.

    Returns:
        ``(tensor, meta)``; the tensor is a CPU float32 torch tensor.
    """
    meta = load_meta(path)
    with open_invariants(path) as handle:
        tensor = handle.get_tensor(TENSOR_NAME)
    _check_shape(tuple(tensor.shape), meta, path)
    return tensor, meta


def iter_terms(path: str | os.PathLike) -> Iterator[Any]:
    """Yield the ``[K, K]`` float32 numpy matrices one at a time (memory: one matrix)."""
    meta = load_meta(path)
    reader = term_reader(path, meta)
    for i in range(3 * int(meta["n_layers"])):
        yield reader.read_rows(TENSOR_NAME, [i])[0]


def term_reader(path: str | os.PathLike, meta: dict[str, Any] | None = None):
    """A :class:`~tasks.huref.safetensors_io.CheckpointReader` on the tensor file, shape-checked.

    ``compare`` uses it to read row blocks of every model's matrices in lockstep.
    """
    from tasks.huref.safetensors_io import CheckpointReader

    meta = meta if meta is not None else load_meta(path)
    reader = CheckpointReader(_folder(path) / TENSOR_FILE)
    _check_shape(tuple(reader.info(TENSOR_NAME).shape), meta, path)
    return reader


def open_invariants(path: str | os.PathLike):
    """``safe_open`` the tensor file, turning a corrupt header into a CheckpointError."""
    from safetensors import SafetensorError, safe_open

    file = _folder(path) / TENSOR_FILE
    try:
        return safe_open(str(file), framework="pt")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{file} is not a readable safetensors file ({exc})",
                              "re-run the extraction") from exc


def _check_shape(shape: tuple, meta: dict[str, Any], path: str | os.PathLike) -> None:
    k, n = int(meta["k"]), int(meta["n_layers"])
    if shape != (3 * n, k, k):
        raise CheckpointError(f"{path}: invariants have shape {shape}, its {META_FILE} says "
                              f"{(3 * n, k, k)}", "re-run the extraction")
