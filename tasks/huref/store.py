"""On-disk format of a model's HuRef invariants, shared by extraction, compare and the encoder.

    <out>/invariants.safetensors   one fp32 tensor "invariants", shape [3 * n_layers, K, K], in
                                   the seed's order [Ma(L-2), Mb(L-2), Mf(L-2), Ma(L-1), ...]
    <out>/huref.json               model ref, arch, K, n_layers, token strategy and strings, ...

safetensors, not the seed's ``.npy``: it cannot execute code on load and can be read lazily
(``compare`` streams matrices from hundreds of files). The JSON sits beside it, not in the
header, so tools read it without touching the large tensor file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.errors import CheckpointError
from tasks.files import atomic_path, atomic_write_json, temp_beside
from tasks.readers import read_json

TENSOR_FILE = "invariants.safetensors"
META_FILE = "huref.json"
TENSOR_NAME = "invariants"
FORMAT_VERSION = 1
FILE_METADATA = {"format": "fprun-huref"}
TERMS = ("Ma", "Mb", "Mf")  # per layer, in the seed's order
REQUIRED_META = (
    "model_ref",
    "arch",
    "k",
    "n_layers",
    "token_strategy",
    "token_set_hash",
    "dtype",
    "hidden_size",
)


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
        raise ValueError(
            f"invariants have shape {tuple(tensor.shape)}, expected {(3 * n_layers, k, k)}"
        )
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(tensor, "detach"):  # torch, without importing it for numpy callers
        tensor = tensor.detach().float().cpu().numpy()
    data = np.ascontiguousarray(tensor, dtype=np.float32)
    with atomic_path(folder / TENSOR_FILE) as tmp:
        save_file({TENSOR_NAME: data}, str(tmp), metadata=FILE_METADATA)
    _write_meta(folder, meta, n_layers)
    return folder


def _write_meta(folder: Path, meta: dict[str, Any], n_layers: int) -> None:
    full = {**meta, "format": FORMAT_VERSION, "terms": term_names(n_layers)}
    atomic_write_json(folder / META_FILE, full)


class InvariantsWriter:
    """Writes ``invariants.safetensors`` one ``[K, K]`` matrix at a time, then ``huref.json``.

    Extraction hands each finished matrix here (``compute_invariants(..., sink=writer.write)``),
    so it never holds the whole ``[3 * n_layers, K, K]`` result: 384 MiB at the seed's K = 4096,
    more than everything else extraction keeps. Hand-written because the safetensors library
    only serialises whole in-memory tensors; the bytes are exactly what its ``save_file`` writes
    (a test compares them). As in :func:`save_invariants`, the tensor goes to a temporary name
    and the JSON is written last; leaving the ``with`` block early deletes the temporary file,
    so no half-written result is ever visible.
    """

    def __init__(self, out: str | os.PathLike, k: int, n_layers: int):
        self.folder, self.k, self.n = Path(out), int(k), 3 * int(n_layers)
        self.n_layers, self.written = int(n_layers), 0
        nbytes = 4 * self.n * self.k * self.k
        header = json.dumps(
            {
                "__metadata__": FILE_METADATA,
                TENSOR_NAME: {
                    "dtype": "F32",
                    "shape": [self.n, self.k, self.k],
                    "data_offsets": [0, nbytes],
                },
            },
            separators=(",", ":"),
        ).encode()
        header += b" " * (-len(header) % 8)  # safetensors pads the header to 8 bytes
        self._header = len(header).to_bytes(8, "little") + header
        self.tmp = temp_beside(self.folder / TENSOR_FILE)
        self._fh: Any = None  # opened by the first matrix: bad input fails before any file exists
        self._made_folder = self._published = False

    def _open(self) -> None:
        self._made_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.tmp, "wb")  # noqa: SIM115 -- closed in finish() or abort()
        self._fh.write(self._header)

    def write(self, index: int, matrix: Any) -> None:
        """Append matrix ``index`` (numpy ``[K, K]``); matrices must come in file order."""
        import numpy as np

        if index != self.written or self.written >= self.n:
            raise ValueError(f"invariant matrix {index} out of order (expected {self.written})")
        arr = np.ascontiguousarray(matrix, dtype="<f4")
        if arr.shape != (self.k, self.k):
            raise ValueError(f"invariant matrix has shape {arr.shape}, expected {(self.k, self.k)}")
        if self._fh is None:
            self._open()
        self._fh.write(memoryview(arr).cast("B"))
        self.written += 1

    def finish(self, meta: dict[str, Any]) -> Path:
        """Check that every matrix came, publish the tensor file, then write ``meta``."""
        missing = [k for k in REQUIRED_META if k not in meta]
        if (
            missing
            or self.written != self.n
            or (int(meta["k"]), 3 * int(meta["n_layers"])) != (self.k, self.n)
        ):
            self.abort()
            raise ValueError(
                f"invariants incomplete or mislabelled: {self.written}/{self.n} "
                f"matrices of K={self.k}; metadata lacks {missing} or disagrees"
            )
        self._fh.close()
        os.replace(self.tmp, self.folder / TENSOR_FILE)
        _write_meta(self.folder, meta, self.n_layers)
        self._published = True
        return self.folder

    def abort(self) -> None:
        """Drop what was written; a folder this writer created goes too if left empty."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.tmp.unlink(missing_ok=True)
        if self._made_folder and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def __enter__(self) -> InvariantsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._published:
            self.abort()


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``huref.json`` of an invariants folder (or of the folder holding the given file)."""
    folder = _folder(path)
    meta_path = folder / META_FILE
    if not meta_path.is_file() or not (folder / TENSOR_FILE).is_file():
        raise CheckpointError(
            f"{folder} holds no HuRef invariants ({META_FILE} + {TENSOR_FILE})",
            "run 'fprun huref extract --model REF --out DIR' first",
        )
    meta = read_json(meta_path, error=CheckpointError, what="HuRef metadata")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path} holds no JSON object", "re-run the extraction")
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
        raise CheckpointError(
            f"{file} is not a readable safetensors file ({exc})", "re-run the extraction"
        ) from exc


def _check_shape(shape: tuple, meta: dict[str, Any], path: str | os.PathLike) -> None:
    k, n = int(meta["k"]), int(meta["n_layers"])
    if shape != (3 * n, k, k):
        raise CheckpointError(
            f"{path}: invariants have shape {shape}, its {META_FILE} says {(3 * n, k, k)}",
            "re-run the extraction",
        )
