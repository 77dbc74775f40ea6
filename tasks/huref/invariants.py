"""HuRef's invariant terms, computed from streamed weights.

For each of the last ``n_layers`` layers, with X the K selected embedding rows and HF ``[out, in]``
weights: ``Ma = X W_q^T W_k X^T``, ``Mb = X W_v^T W_o^T X^T``, ``Mf = X (W_gate^T * W_up^T)
W_down^T X^T`` (``X W_up^T W_down^T X^T`` for a plain MLP; nonlinearities ignored, as the seed),
in the seed's order ``[Ma(L-2), Mb(L-2), Mf(L-2), Ma(L-1), ...]``. GQA: query rows (and W_o
columns) are summed within each KV group, the same matrix as the model's ``repeat_kv`` pairing
without materialising it (the seed tiles K/V, a different pairing; docs/huref.md). Each product
takes its cheaper association; the code runs on numpy (CPU default, no torch) or torch tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import CheckpointError, ConfigError
from tasks.huref import arch as archs
from tasks.models.device import pick_device

DTYPES = ("float32", "bfloat16", "float16")


def sandwich(x: Any, left: Any, right: Any, out: np.ndarray | None = None) -> Any:
    """``x @ left @ right @ x.T`` in the cheaper association.

    Args:
        x: ``[K, d]`` embedding rows.
        left: ``[d, r]``.
        right: ``[r, d]``.
        out: numpy only: a C-contiguous ``[K, K]`` float32 array the last product is written
            into (the same BLAS call, so the same bits), instead of a fresh ``[K, K]`` temporary.
    """
    best = association(x.shape[0], x.shape[1], left.shape[1])
    if best == "factored":
        a, b = x @ left, (x @ right.T).T
    elif best == "core":
        a, b = x @ (left @ right), x.T
    else:
        a, b = (x @ left) @ right, x.T
    return a @ b if out is None else np.matmul(a, b, out=out)


def association(k: int, d: int, r: int) -> str:
    """The cheapest evaluation order of ``x @ left @ right @ x.T`` for x ``[k, d]``, left
    ``[d, r]``: ``factored``, ``core`` or ``chain`` (see :func:`sandwich`)."""
    costs = {
        "factored": 2 * k * d * r + k * k * r,  # (x @ left) @ (x @ right.T).T
        "core": d * r * d + k * d * d + k * k * d,  # (x @ (left @ right)) @ x.T
        "chain": 2 * k * d * r + k * k * d,  # ((x @ left) @ right) @ x.T
    }
    return min(costs, key=costs.get)


def group_sum_rows(w: Any, n_heads: int, n_kv: int, head_dim: int) -> Any:
    """Sum the row blocks of query heads sharing a KV head: ``[H*hd, d] -> [H_kv*hd, d]``."""
    if n_heads == n_kv:
        return w
    return w.reshape(n_kv, n_heads // n_kv, head_dim, -1).sum(axis=1).reshape(n_kv * head_dim, -1)


def group_sum_cols(w: Any, n_heads: int, n_kv: int, head_dim: int) -> Any:
    """Sum the column blocks of W_o per KV group: ``[d, H*hd] -> [d, H_kv*hd]``."""
    if n_heads == n_kv:
        return w
    d = w.shape[0]
    return w.reshape(d, n_kv, n_heads // n_kv, head_dim).sum(axis=2).reshape(d, n_kv * head_dim)


def attention_terms(x: Any, q: Any, k: Any, v: Any, o: Any, a: archs.Arch) -> tuple[Any, Any]:
    """``(Ma, Mb)`` of one layer; K/V are *not* repeated (see the module docstring)."""
    check_groups(a)
    q_g = group_sum_rows(q, a.n_heads, a.n_kv_heads, a.head_dim)
    o_g = group_sum_cols(o, a.n_heads, a.n_kv_heads, a.head_dim)
    return grouped_terms(x, q_g, k, v, o_g)


def check_groups(a: archs.Arch) -> None:
    """Query heads must split evenly into KV groups (GQA)."""
    if a.n_heads % a.n_kv_heads:
        raise CheckpointError(
            f"{a.n_heads} query heads do not split into {a.n_kv_heads} KV groups",
            "check num_key_value_heads in config.json",
        )


def grouped_terms(x: Any, q_g: Any, k: Any, v: Any, o_g: Any) -> tuple[Any, Any]:
    """``(Ma, Mb)`` from the group-summed ``W_q`` rows and ``W_o`` columns."""
    return sandwich(x, q_g.T, k), sandwich(x, v.T, o_g.T)


def mlp_term(x: Any, up: Any, gate: Any | None, down: Any) -> Any:
    """``Mf``: the gate and up weights multiply elementwise (the seed's W_gate^T * W_up^T)."""
    inner = up if gate is None else gate * up
    return sandwich(x, inner.T, down.T)


def resolve_device(device: str, dtype: str) -> str:
    """The compute device (:func:`tasks.models.device.pick_device`), after checking ``dtype``."""
    if dtype not in DTYPES:
        raise ConfigError(f"huref dtype {dtype!r} is unknown", f"use one of {', '.join(DTYPES)}")
    return pick_device(device)


class Computer:
    """Moves weights to the compute backend: numpy fp32 on CPU, torch otherwise."""

    def __init__(self, device: str, dtype: str):
        self.device, self.dtype = device, dtype
        self.torch = device != "cpu" or dtype != "float32"
        if self.torch:
            import torch

            self._t = torch
            self._dt = getattr(torch, dtype)

    def put(self, arr: np.ndarray | None) -> Any:
        if arr is None or not self.torch:
            return arr
        return self._t.from_numpy(arr).to(device=self.device, dtype=self._dt)

    def get(self, arr: Any) -> np.ndarray:
        if not self.torch:
            return np.asarray(arr, dtype=np.float32)
        return arr.float().cpu().numpy()


def last_layers(a: archs.Arch, source: Any, n_layers: int) -> list[int]:
    """Indices of the last ``n_layers`` layers, checking the checkpoint holds all their tensors."""
    if n_layers < 1 or n_layers > a.n_layers_total:
        raise ConfigError(
            f"huref n_layers={n_layers} but the model has {a.n_layers_total} layers",
            "pick 1..number of layers (default 2)",
        )
    layers = list(range(a.n_layers_total - n_layers, a.n_layers_total))
    missing = [key for i in layers for key in a.layer_keys(i) if key not in source]
    if missing:
        bad = sorted({int(k.split(f"{a.layer_word}.")[1].split(".")[0]) for k in missing})
        raise CheckpointError(
            f"{getattr(source, 'folder', 'the checkpoint')} lacks layer(s) {bad} "
            f"({len(missing)} tensors, e.g. {missing[0]}) though config.json says "
            f"{a.n_layers_total} layers",
            "pass a complete checkpoint (all shards)",
        )
    return layers


def embedding_rows(source: Any, a: archs.Arch, token_ids: list[int]) -> np.ndarray:
    """X: the selected input-embedding rows (raw, as the seed; OPT's project_in applied)."""
    vocab = source.info(a.embed_key).shape[0]
    if max(token_ids) >= vocab:
        raise ConfigError(
            f"token id {max(token_ids)} is outside the embedding ({vocab} rows)",
            "the token set does not belong to this model's tokenizer",
        )
    x = source.read_rows(a.embed_key, token_ids)
    if a.embed_proj_key is not None:
        x = x @ source.read(a.embed_proj_key).T
    return np.ascontiguousarray(x, dtype=np.float32)


def compute_invariants(
    source: Any,
    a: archs.Arch,
    token_ids: list[int],
    *,
    n_layers: int = 2,
    dtype: str = "float32",
    device: str = "cpu",
    sink: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray | None:
    """The ``[3 * n_layers, K, K]`` float32 invariants, one layer's weights in memory at a time
    (or, with ``sink``, each ``[K, K]`` matrix handed on as soon as it is finished).

    Args:
        source: Anything with ``read(key)``, ``read_rows(key, ids)``, ``info(key).shape`` and
            ``in`` (a :class:`CheckpointReader`, or :class:`StateDictSource` for a loaded model).
        a: The detected architecture.
        token_ids: K embedding rows, in the token set's order.
        n_layers: How many of the last layers to use.
        dtype: Compute dtype (float32 default; bfloat16/float16 use torch, meant for GPUs).
        device: ``cpu``, ``cuda`` or ``cuda:N`` (already resolved).
        sink: Called as ``sink(i, matrix)`` with each finished ``[K, K]`` float32 matrix, in file
            order (e.g. :meth:`tasks.huref.store.InvariantsWriter.write`). The array may be
            reused once the call returns. With a sink nothing is accumulated and ``None`` is
            returned, so memory holds one ``[K, K]`` matrix instead of the whole result.
    """
    # Over 60 lines on purpose: the six matrices of the paper in their fixed order; long docstring.
    from tasks.huref import streaming  # it builds on this module's formulas

    layers = last_layers(a, source, n_layers)
    comp = Computer(device, dtype)
    x = comp.put(embedding_rows(source, a, token_ids))
    k = len(token_ids)
    result = np.empty((3 * n_layers, k, k), dtype=np.float32) if sink is None else None
    scratch = np.empty((k, k), dtype=np.float32) if result is None else None

    def slot(i: int) -> np.ndarray:  # where matrix i is computed in place
        return scratch if result is None else result[i]

    def emit(i: int, matrix: np.ndarray | None = None) -> None:  # None: it is already in slot(i)
        if result is None:
            sink(i, scratch if matrix is None else matrix)
        elif matrix is not None:
            result[i] = matrix

    # block streaming: numpy fp32 on a reader with row-block reads (a loaded model's state_dict
    # keeps the whole-tensor computation, which the streamed one must equal bit for bit)
    can_stream = not comp.torch and hasattr(source, "read_row_block")
    check_groups(a)
    for j, layer in enumerate(layers):
        stream = can_stream and streaming.streamable(a, source, layer)
        if stream and a.qkv_layout == "separate":  # written straight into the output
            q_g, kk, v, o_g = streaming.grouped_attention(source, a, layer)
            sandwich(x, q_g.T, kk, out=slot(3 * j))
            emit(3 * j)
            sandwich(x, v.T, o_g.T, out=slot(3 * j + 1))
            emit(3 * j + 1)
            del q_g, kk, v, o_g
        else:
            q, kk, v, o = (comp.put(w) for w in archs.attention(source, a, layer))
            ma, mb = attention_terms(x, q, kk, v, o, a)
            del q, kk, v, o
            emit(3 * j, comp.get(ma))
            emit(3 * j + 1, comp.get(mb))
            del ma, mb
        shape = source.info(a.key(layer, "up")).shape
        if stream and association(k, shape[1], shape[0]) == "chain":
            streaming.chain_mlp_into(source, a, layer, x, slot(3 * j + 2))
            emit(3 * j + 2)
        else:
            emit(3 * j + 2, comp.get(_streamed_mlp_term(source, a, layer, x, comp)))
    return result


def _streamed_mlp_term(source: Any, a: archs.Arch, layer: int, x: Any, comp: Computer) -> Any:
    """``Mf`` holding at most two MLP weights at once: gate * up is formed in place, and up is
    freed before down is read (the MLP is the largest part of a layer)."""
    inner = comp.put(archs.mlp_weight(source, a, layer, "up"))
    gate = comp.put(archs.mlp_weight(source, a, layer, "gate"))
    if gate is not None:
        if getattr(source, "fresh_buffers", False):
            gate *= inner  # our own buffer: same values as gate * up, without a third one
            inner = gate
        else:  # e.g. a loaded model's weights: never write into them
            inner = gate * inner
        del gate
    down = comp.put(archs.mlp_weight(source, a, layer, "down"))
    return sandwich(x, inner.T, down.T)


class StateDictSource:
    """A loaded model's ``state_dict`` behind the reader interface (tests, the benchmark baseline).

    It lets the seed's way (instantiate the whole model, then compute) run the *same* formula code,
    so the two paths can be compared bit for bit.
    """

    def __init__(self, state_dict: dict[str, Any], folder: str | os.PathLike = "<state_dict>"):
        self.sd = state_dict
        self.folder = Path(folder)

    def __contains__(self, key: str) -> bool:
        return key in self.sd

    def keys(self) -> list[str]:
        return sorted(self.sd)

    def info(self, key: str) -> Any:
        return _Shape(tuple(self.sd[key].shape))

    fresh_buffers = False  # reads share the model's memory: extraction must not write into them

    def read(self, key: str) -> np.ndarray:
        return self.sd[key].detach().float().cpu().numpy()

    def read_rows(self, key: str, rows: list[int]) -> np.ndarray:
        return self.sd[key][list(rows)].detach().float().cpu().numpy()


class _Shape:
    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape
