"""Block-streamed weights for HuRef extraction: peak memory bounded by a few small buffers.

Whole-tensor reads hold a layer's largest weights at once, most of the peak RSS on larger models.
Here the large weights are read in row blocks through one reused buffer and the same products are
formed block by block: the attention group sums (``invariants.group_sum_*``) and the MLP chain
``((X inner^T) W_down^T) X^T``, with X's K rows taken in slices when ``A = X inner^T`` would
exceed :data:`A_BUDGET`. Blocking splits only output rows or columns, never the summed dimension,
in whole 16-row multiples, so the result is bit-identical to the whole-tensor computation (a test
checks it). Hand-written: no library streams a safetensors tensor into a sandwich product.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from tasks.huref import arch as archs
from tasks.huref.invariants import group_sum_cols, group_sum_rows

BLOCK_BYTES = 1024 * 1024  # one weight block (a few rows of a large matrix) ...
MIN_ROWS = 64  # ... but never fewer rows than this (thin blocks make slow matrix products)
# Blocks of W_down are 4x larger: each one is multiplied by the whole [K_slice, I] intermediate,
# which BLAS re-packs on every call, so fewer, larger blocks mean fewer re-packs.
DOWN_FACTOR = 4
# The [K_slice, I] intermediate X inner^T. Every further slice of X's rows re-reads the layer's
# MLP weights, so this is the one large buffer: on a 1B Llama at K = 1024 it holds all of A
# (22 MiB, one slice), which measured faster than the whole-tensor path (0.74-0.87 s vs 0.95 s of
# work) at a peak of 50-54 MiB; at 12 MiB (two slices) the peak is 46 MiB but the work 0.99 s.
A_BUDGET = 24 * 1024 * 1024
# Blocks are cut at multiples of 16 rows: OpenBLAS then runs the same kernels on each block as on
# the whole matrix (an odd 21-row block rounded differently in a test; 16..256 were exact).
ROW_MULTIPLE = 16


def row_blocks(
    n_rows: int, row_bytes: int, budget: int | None = None, multiple: int = 1
) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges covering ``n_rows``, each about ``budget`` bytes (default
    :data:`BLOCK_BYTES`), cut at a multiple of ``multiple`` rows (a head group), never empty."""
    budget = BLOCK_BYTES if budget is None else budget
    multiple = math.lcm(multiple, ROW_MULTIPLE)
    step = max(multiple, (max(MIN_ROWS, budget // max(1, row_bytes))) // multiple * multiple)
    return [(s, min(s + step, n_rows)) for s in range(0, n_rows, step)]


def streamable(a: archs.Arch, source: Any, layer: int) -> bool:
    """Stream ``layer`` when its MLP weights exceed ``$FPRUN_HUREF_STREAM_MIB`` (default 64:
    1B-class models and up) and its matrices are nn.Linear ``[out, in]`` rows (not GPT-2's
    Conv1D). Smaller layers are read whole: there the weights are a few MiB, and blocking only
    adds matrix-product calls. On a 1B Llama streaming is both lighter and faster than whole
    tensors (see :data:`A_BUDGET`; figures in docs/huref.md). The result is the same to fp32
    rounding either way (bitwise where the BLAS kernels' summation order does not depend on the
    matrix shapes), so the switch is in no config.
    """
    if a.layout == "gpt2":
        return False
    limit = float(os.environ.get("FPRUN_HUREF_STREAM_MIB", "64")) * 1024 * 1024
    roles = ("up", "down", "gate") if a.gated else ("up", "down")
    return sum(source.info(a.key(layer, r)).nbytes for r in roles) > limit


def grouped_attention(source: Any, a: archs.Arch, layer: int) -> tuple[np.ndarray, ...]:
    """``(q_g, k, v, o_g)``: W_q rows and W_o columns summed per KV group, read in blocks.

    Separate-QKV layouts only (fused QKV matrices are read whole by ``arch.attention``).
    """
    h, kv, hd = a.n_heads, a.n_kv_heads, a.head_dim
    k, v = (source.read(a.key(layer, r)) for r in ("k", "v"))
    q_key, o_key = a.key(layer, "q"), a.key(layer, "o")
    if h == kv:  # nothing to sum: the whole matrices are the result
        return source.read(q_key), k, v, source.read(o_key)
    rep = h // kv
    d = source.info(q_key).shape[1]
    q_g = np.empty((kv * hd, d), dtype=np.float32)
    blocks = row_blocks(h * hd, 4 * d, multiple=rep * hd)
    buf = np.empty((blocks[0][1] - blocks[0][0], d), dtype=np.float32)
    for s, e in blocks:
        w = source.read_row_block(q_key, s, e, out=buf)
        q_g[s // rep : e // rep] = group_sum_rows(w, (e - s) // hd, (e - s) // (rep * hd), hd)
    o_shape = source.info(o_key).shape
    o_g = np.empty((o_shape[0], kv * hd), dtype=np.float32)
    blocks = row_blocks(o_shape[0], 4 * o_shape[1])
    buf = np.empty((blocks[0][1] - blocks[0][0], o_shape[1]), dtype=np.float32)
    for s, e in blocks:
        o_g[s:e] = group_sum_cols(source.read_row_block(o_key, s, e, out=buf), h, kv, hd)
    return q_g, k, v, o_g


def chain_mlp_into(source: Any, a: archs.Arch, layer: int, x: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = ((x @ inner.T) @ down.T) @ x.T`` with inner = gate * up (or up), streamed."""
    up_key, down_key = a.key(layer, "up"), a.key(layer, "down")
    gate_key = a.key(layer, "gate") if a.gated else None
    n_inner, d = source.info(up_key).shape
    k = x.shape[0]
    in_blocks = row_blocks(n_inner, 4 * d)
    down_blocks = row_blocks(d, 4 * n_inner, budget=DOWN_FACTOR * BLOCK_BYTES)
    rows_in = in_blocks[0][1] - in_blocks[0][0]
    up_buf = np.empty((rows_in, d), dtype=np.float32)
    gate_buf = np.empty((rows_in, d), dtype=np.float32) if gate_key else None
    down_buf = np.empty((down_blocks[0][1] - down_blocks[0][0], n_inner), dtype=np.float32)
    n_slices = max(1, math.ceil(k * n_inner * 4 / A_BUDGET))
    step = math.ceil(k / n_slices)
    for k0 in range(0, k, step):
        xs = x[k0 : k0 + step]
        inner_x = np.empty((len(xs), n_inner), dtype=np.float32)  # A = X inner^T
        for s, e in in_blocks:
            inner = source.read_row_block(up_key, s, e, out=up_buf)
            if gate_key:
                gate = source.read_row_block(gate_key, s, e, out=gate_buf)
                gate *= inner  # gate * up, as the whole-tensor path forms it
                inner = gate
            inner_x[:, s:e] = xs @ inner.T
        y = np.empty((len(xs), d), dtype=np.float32)  # Y = A down^T
        for s, e in down_blocks:
            y[:, s:e] = inner_x @ source.read_row_block(down_key, s, e, out=down_buf).T
        del inner_x
        np.matmul(y, x.T, out=out[k0 : k0 + step])
