"""ICS and PCS (HuRef's similarity scores), for pairs and for N x N matrices with bounded memory.

ICS standardises each K x K matrix ((M - mean) / std, unbiased), flattens them all and takes 100 x
cosine. For N models every file is read once, in lockstep row blocks, and the matrix comes from
accumulated float64 Gram products with the standardisation folded in algebraically (docs/huref.md);
memory is N blocks plus T Gram matrices of N x N. PCS matches tensors by *name* (the seed zips
``parameters()`` in order, pairing unrelated tensors across architectures), skips and counts names
or shapes that differ, and is null across architectures; models with identical tensor signatures
share one lockstep pass, so each checkpoint is read once.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import ConfigError
from tasks.huref.safetensors_io import CheckpointReader
from tasks.huref.store import TENSOR_NAME, load_meta, term_reader


def standardize(m: np.ndarray) -> np.ndarray:
    """(M - mean) / std with the unbiased std, in float64 (the seed's per-matrix step)."""
    m = np.asarray(m, dtype=np.float64)
    return (m - m.mean()) / m.std(ddof=1)


def ics_pair(a: np.ndarray, b: np.ndarray) -> float:
    """ICS of two ``[T, K, K]`` invariant tensors, exactly as the seed computes it (x 100)."""
    if a.shape != b.shape:
        raise ConfigError(
            f"invariants of shapes {a.shape} and {b.shape} cannot be compared",
            "extract both models with the same k and n_layers",
        )
    za = np.concatenate([standardize(t).ravel() for t in a])
    zb = np.concatenate([standardize(t).ravel() for t in b])
    return float(100.0 * za @ zb / (np.linalg.norm(za) * np.linalg.norm(zb)))


def check_compatible(metas: list[dict[str, Any]], names: list[str], *, mixed_tokens: bool) -> bool:
    """Refuse different K or layer counts; different token sets unless ``mixed_tokens``.

    Returns:
        Whether all token sets are identical.
    """
    for field in ("k", "n_layers"):
        values = {int(m[field]) for m in metas}
        if len(values) > 1:
            detail = ", ".join(f"{n}: {m[field]}" for n, m in zip(names, metas, strict=True))
            raise ConfigError(
                f"invariants with different {field} cannot be compared ({detail})",
                f"re-extract all models with the same {field}",
            )
    same = len({m["token_set_hash"] for m in metas}) == 1
    if not same and not mixed_tokens:
        groups = sorted({f"{m['token_set_hash']}" for m in metas})
        raise ConfigError(
            f"the invariants use {len(groups)} different token sets ({', '.join(groups)}); ICS "
            "across token sets does not measure lineage",
            "extract with the same tokenizer / tokens.file, or pass --mixed-tokens for "
            "cross-family controls",
        )
    return same


def ics_matrix(
    paths: list[str | os.PathLike], *, chunk_mb: int = 256, mixed_tokens: bool = False
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """N x N ICS over invariant folders, each file read once in lockstep blocks.

    Args:
        paths: Invariants folders (``huref.json`` + ``invariants.safetensors``).
        chunk_mb: Memory budget of one block over all N models.
        mixed_tokens: Allow different token sets (cross-family controls).

    Returns:
        ``(matrix, metas)``: the symmetric matrix (diagonal 100) and each folder's metadata.
    """
    metas = [load_meta(p) for p in paths]
    check_compatible(metas, [str(p) for p in paths], mixed_tokens=mixed_tokens)
    readers = [term_reader(p, m) for p, m in zip(paths, metas, strict=True)]
    n_models, k = len(paths), int(metas[0]["k"])
    n_terms, n = 3 * int(metas[0]["n_layers"]), k * k
    rows = max(1, min(k, (chunk_mb << 20) // (8 * n_models * k)))
    dots = np.zeros((n_models, n_models))
    buf = np.empty((n_models, rows * k))  # one float64 block, refilled model by model
    for t in range(n_terms):
        gram = np.zeros((n_models, n_models))
        s1, s2, shift = np.zeros(n_models), np.zeros(n_models), None
        for r0 in range(0, k, rows):
            lo, hi = (t * k + r0) * k, (t * k + min(k, r0 + rows)) * k
            block = buf[:, : hi - lo]
            for i, r in enumerate(readers):
                block[i] = r.read_flat(TENSOR_NAME, lo, hi)
            if shift is None:
                shift = block.mean(axis=1, keepdims=True)
            block -= shift
            gram += block @ block.T
            s1 += block.sum(axis=1)
            s2 += np.einsum("ij,ij->i", block, block)
        mean = s1 / n
        std = np.sqrt((s2 - n * mean**2) / (n - 1))
        dots += (gram - n * np.outer(mean, mean)) / np.outer(std, std)
    norms = np.sqrt(np.diag(dots).copy())
    return 100.0 * dots / np.outer(norms, norms), metas


def _signature(reader: CheckpointReader) -> dict[str, tuple[int, ...]]:
    return {k: reader.tensors[k].shape for k in reader.keys()}


def pcs_pair(
    a: CheckpointReader, b: CheckpointReader, *, block: int = 1 << 22
) -> tuple[float, int]:
    """PCS x 100 of two checkpoints, tensors matched by name, streamed block by block.

    Returns:
        ``(pcs, skipped)``: skipped counts names present in only one model plus shape mismatches.
    """
    sa, sb = _signature(a), _signature(b)
    common = sorted(n for n in sa.keys() & sb.keys() if sa[n] == sb[n])
    skipped = len(sa.keys() ^ sb.keys()) + sum(1 for n in sa.keys() & sb.keys() if sa[n] != sb[n])
    dot = na = nb = 0.0
    for name in common:
        size = int(np.prod(sa[name], dtype=np.int64))
        for lo in range(0, size, block):
            x = a.read_flat(name, lo, min(size, lo + block)).astype(np.float64)
            y = b.read_flat(name, lo, min(size, lo + block)).astype(np.float64)
            dot, na, nb = dot + x @ y, na + x @ x, nb + y @ y
    return 100.0 * dot / np.sqrt(na * nb), skipped


def pcs_group(readers: list[CheckpointReader], *, chunk_mb: int = 256) -> np.ndarray:
    """PCS x 100 among models with identical tensor signatures, reading each once (lockstep)."""
    names = readers[0].keys()
    gram = np.zeros((len(readers), len(readers)))
    step = max(1, (chunk_mb << 20) // (8 * len(readers)))
    for name in names:
        size = int(np.prod(readers[0].tensors[name].shape, dtype=np.int64))
        for lo in range(0, size, step):
            hi = min(size, lo + step)
            blk = np.stack([r.read_flat(name, lo, hi) for r in readers]).astype(np.float64)
            gram += blk @ blk.T
    norms = np.sqrt(np.diag(gram).copy())
    return 100.0 * gram / np.outer(norms, norms)


def pcs_matrix(
    model_dirs: list[str | os.PathLike], *, chunk_mb: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """N x N PCS (NaN across architectures) and skipped-tensor counts (-1 where not computed)."""
    from tasks.huref.arch import read_config

    readers = [CheckpointReader(d) for d in model_dirs]
    types = [str(read_config(Path(d)).get("model_type")) for d in model_dirs]
    sigs = [tuple(sorted(_signature(r).items())) for r in readers]
    n = len(readers)
    pcs, skipped = np.full((n, n), np.nan), np.full((n, n), -1, dtype=np.int64)
    groups: dict[tuple, list[int]] = {}
    for i, sig in enumerate(sigs):
        groups.setdefault((types[i], sig), []).append(i)
    for idx in groups.values():
        sub = pcs_group([readers[i] for i in idx], chunk_mb=chunk_mb)
        pcs[np.ix_(idx, idx)] = sub
        skipped[np.ix_(idx, idx)] = 0
    for i, j in itertools.combinations(range(n), 2):
        if skipped[i, j] < 0 and types[i] == types[j]:
            pcs[i, j], skipped[i, j] = pcs_pair(readers[i], readers[j])
            pcs[j, i], skipped[j, i] = pcs[i, j], skipped[i, j]
    return pcs, skipped
