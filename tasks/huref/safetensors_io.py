"""Selective reads from safetensors checkpoints: whole tensors or chosen rows, nothing else.

HuRef needs about 4% of a model's weights (a few thousand embedding rows and the last layers), so
this reader finds each tensor through ``model.safetensors.index.json`` (or the shard headers) and
reads exactly its bytes or requested rows, with positioned reads into a preallocated buffer. Not
``safe_open(...).get_slice``: it memory-maps whole shards, so scattered row reads inflate resident
memory, and its numpy framework has no bfloat16. Headers are validated strictly, so a corrupt or
truncated file is a :class:`~tasks.errors.CheckpointError`, never a crash or a garbage tensor.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from tasks.errors import CheckpointError

INDEX = "model.safetensors.index.json"
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # read raw, widened to float32 by _to_float
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_FIX = "re-download or re-save the checkpoint (safetensors)"


class TensorInfo:
    """Where one tensor's bytes sit inside a shard."""

    __slots__ = ("file", "dtype", "shape", "start", "end")

    def __init__(self, file: Path, dtype: str, shape: tuple[int, ...], start: int, end: int):
        self.file, self.dtype, self.shape, self.start, self.end = file, dtype, shape, start, end

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(file: Path) -> dict[str, TensorInfo]:
    """Parse and validate one shard's header; offsets become absolute file positions.

    Raises:
        CheckpointError: Truncated, not JSON, or offsets that do not fit the file or the shapes.
    """
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n <= 0 or n > _MAX_HEADER or 8 + n > size:
                raise CheckpointError(f"{file} is not a safetensors file (bad header length)", _FIX)
            raw = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file} has an unreadable safetensors header ({exc})", _FIX) from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file} has a malformed safetensors header", _FIX)
    base, out = 8 + n, {}
    for name, entry in raw.items():
        if name == "__metadata__":
            continue
        out[name] = _entry(file, name, entry, base, size)
    return out


def _entry(file: Path, name: str, entry: object, base: int, size: int) -> TensorInfo:
    try:
        dtype, shape = entry["dtype"], tuple(int(s) for s in entry["shape"])  # type: ignore[index]
        start, end = (int(v) for v in entry["data_offsets"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{file}: header entry {name!r} is malformed", _FIX) from exc
    itemsize = DTYPES[dtype].itemsize if dtype in DTYPES else 1
    want = int(np.prod(shape, dtype=np.int64)) * itemsize
    if not 0 <= start <= end or base + end > size or (dtype in DTYPES and end - start != want):
        raise CheckpointError(
            f"{file}: tensor {name!r} does not fit the file (truncated or corrupt)", _FIX
        )
    return TensorInfo(file, dtype, shape, base + start, base + end)


class CheckpointReader:
    """Index of every tensor in a safetensors model folder, with byte-exact reads.

    Args:
        folder: A model folder with ``model.safetensors``, or shards plus
            ``model.safetensors.index.json``, or shards alone; or one ``.safetensors`` file.
    """

    fresh_buffers = True  # every read returns a new array the caller may modify in place

    def __init__(self, folder: str | os.PathLike):
        t0 = time.perf_counter()
        self.folder = Path(folder)
        self.bytes_read = 0
        self.read_seconds = 0.0  # time spent parsing headers and reading bytes (benchmarks)
        self.tensors: dict[str, TensorInfo] = {}
        for shard in self._shards():
            self.tensors.update(read_header(shard))
        if not self.tensors:
            raise CheckpointError(
                f"{self.folder} holds no safetensors tensors",
                "pass a model folder saved with safetensors",
            )
        self.read_seconds += time.perf_counter() - t0

    def _shards(self) -> list[Path]:
        if self.folder.is_file():
            return [self.folder]
        index = self.folder / INDEX
        if index.is_file():
            try:
                files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, AttributeError) as exc:
                raise CheckpointError(f"{index} is unreadable ({exc})", _FIX) from exc
            missing = [f for f in files if not (self.folder / f).is_file()]
            if missing:
                raise CheckpointError(f"{self.folder} lacks shards {missing}", _FIX)
            return [self.folder / f for f in files]
        shards = sorted(self.folder.glob("*.safetensors"))
        if not shards:
            raise CheckpointError(
                f"{self.folder} has no *.safetensors weights",
                "pass a safetensors model folder (pickles are refused)",
            )
        return shards

    def keys(self) -> list[str]:
        """All tensor names, sorted."""
        return sorted(self.tensors)

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def info(self, key: str) -> TensorInfo:
        """Location, dtype and shape of ``key`` (CheckpointError naming the key if absent)."""
        try:
            return self.tensors[key]
        except KeyError:
            raise CheckpointError(
                f"{self.folder} lacks tensor {key!r}",
                "pass a complete checkpoint of the same architecture",
            ) from None

    def read(self, key: str, *, as_float: bool = True) -> np.ndarray:
        """Read one whole tensor (float32 unless ``as_float`` is False or it is float64)."""
        info = self.info(key)
        buf = np.empty(info.shape, dtype=_np_dtype(info, key))
        self._fill(info.file, [(info.start, buf.reshape(-1).view(np.uint8))])
        return _to_float(buf, info.dtype) if as_float else buf

    def read_rows(self, key: str, rows: Sequence[int]) -> np.ndarray:
        """Read only the given rows (dim 0) of a tensor, in the given order, as float32.

        Rows are sorted and merged into contiguous runs, so K scattered rows cost at most K reads
        and adjacent rows cost one.
        """
        info = self.info(key)
        if not info.shape:
            raise CheckpointError(f"{key} is a scalar, not a matrix", _FIX)
        idx = np.asarray(rows, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= info.shape[0]):
            raise CheckpointError(
                f"row ids outside 0..{info.shape[0] - 1} for {key}",
                "the token ids do not fit this model's embedding",
            )
        uniq, inverse = np.unique(idx, return_inverse=True)
        buf = np.empty((len(uniq), *info.shape[1:]), dtype=_np_dtype(info, key))
        row_bytes = buf[0].nbytes if len(uniq) else 0
        flat = buf.reshape(len(uniq), -1).view(np.uint8)
        jobs = [
            (info.start + int(uniq[a]) * row_bytes, flat[a:b].reshape(-1)) for a, b in _runs(uniq)
        ]
        self._fill(info.file, jobs)
        return _to_float(buf, info.dtype)[inverse]

    def read_row_block(
        self, key: str, start: int, stop: int, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Rows ``[start, stop)`` (dim 0) of a tensor as float32, with one positioned read.

        ``out`` (float32, at least ``stop - start`` rows of the right shape) is filled and a view
        of it returned, so a caller streaming a large tensor block by block reuses one buffer
        instead of faulting in fresh pages for every block.
        """
        info = self.info(key)
        if not 0 <= start <= stop <= (info.shape[0] if info.shape else 0):
            raise ValueError(f"rows {start}:{stop} outside {key} {info.shape}")
        dt = _np_dtype(info, key)
        shape = (stop - start, *info.shape[1:])
        row_bytes = int(np.prod(info.shape[1:], dtype=np.int64)) * dt.itemsize
        if out is not None and not out.flags.c_contiguous:
            raise ValueError("read_row_block needs a C-contiguous out buffer")
        direct = out is not None and dt == np.float32
        buf = out[: stop - start] if direct else np.empty(shape, dtype=dt)
        self._fill(info.file, [(info.start + start * row_bytes, buf.reshape(-1).view(np.uint8))])
        if direct:
            return buf
        wide = _to_float(buf, info.dtype)
        if out is None:
            return wide
        out[: stop - start] = wide
        return out[: stop - start]

    def read_flat(self, key: str, start: int, stop: int) -> np.ndarray:
        """Elements ``[start, stop)`` of the flattened tensor, as float32 (float64 stays).

        Lets comparisons walk many files in lockstep, block by block, with bounded memory.
        """
        info = self.info(key)
        dt = _np_dtype(info, key)
        n = info.nbytes // dt.itemsize
        if not 0 <= start <= stop <= n:
            raise ValueError(f"range {start}:{stop} outside {key} ({n} elements)")
        buf = np.empty(stop - start, dtype=dt)
        self._fill(info.file, [(info.start + start * dt.itemsize, buf.view(np.uint8))])
        return _to_float(buf, info.dtype)

    def _fill(self, file: Path, jobs: Iterable[tuple[int, np.ndarray]]) -> None:
        t0 = time.perf_counter()
        try:
            with open(file, "rb", buffering=0) as fh:
                for offset, target in jobs:
                    fh.seek(offset)
                    got = fh.readinto(memoryview(target))
                    if got != target.nbytes:
                        raise CheckpointError(f"{file} ended early (truncated)", _FIX)
                    self.bytes_read += got
        except OSError as exc:
            raise CheckpointError(f"cannot read {file}: {exc}", _FIX) from exc
        self.read_seconds += time.perf_counter() - t0


def _np_dtype(info: TensorInfo, key: str) -> np.dtype:
    if info.dtype not in DTYPES:
        raise CheckpointError(
            f"tensor {key} has dtype {info.dtype}, which HuRef cannot read",
            "convert the checkpoint to float32, bfloat16 or float16",
        )
    return DTYPES[info.dtype]


def _to_float(buf: np.ndarray, dtype: str) -> np.ndarray:
    """Widen to float32 exactly (bfloat16 is the top half of a float32)."""
    if dtype == "BF16":
        return (buf.astype(np.uint32) << 16).view(np.float32)
    if dtype == "F64":
        return buf
    return buf.astype(np.float32, copy=False)


def _runs(sorted_ids: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges [a, b) of consecutive ids in a sorted unique array."""
    if not len(sorted_ids):
        return []
    breaks = np.flatnonzero(np.diff(sorted_ids) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(sorted_ids)]])
    return list(zip(starts.tolist(), ends.tolist(), strict=True))
