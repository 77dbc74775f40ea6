"""Which weights are W_q, W_k, W_v, W_o, W_gate, W_up, W_down: detected from keys and config.json.

The seed picks an architecture branch from lists of model *names*, so a renamed fine-tune falls
through; here the layout comes from the state-dict key patterns, and ``config.json`` supplies only
head counts and the fused-QKV variant. Every family is returned as HF ``nn.Linear`` ``[out, in]``:
``q`` ``[H*hd, d]``, ``k``/``v`` ``[H_kv*hd, d]`` (not repeated), ``o`` ``[d, H*hd]``,
``up``/``gate`` ``[I, d]``, ``down`` ``[d, I]``. Fused QKV layouts (GPT-NeoX/Pythia, BLOOM, Falcon
multi-head, multi-query and GQA, GPT-2 ``Conv1D``) are split as the transformers forward that
consumes them does (the seed's "split in thirds" mixes heads); docs/huref.md lists them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import ArchitectureError, CheckpointError
from tasks.huref.safetensors_io import CheckpointReader

# layout name -> (regex finding a layer's anchor key, role -> key suffix alternatives)
LAYOUTS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "separate_qkv": (
        r"^(?P<p>.*?)layers\.(?P<i>\d+)\.self_attn\.q_proj\.weight$",
        {
            "q": ("self_attn.q_proj.weight",),
            "k": ("self_attn.k_proj.weight",),
            "v": ("self_attn.v_proj.weight",),
            "o": ("self_attn.o_proj.weight", "self_attn.out_proj.weight"),
            "gate": ("mlp.gate_proj.weight",),
            "up": ("mlp.up_proj.weight", "fc1.weight", "mlp.fc1.weight"),
            "down": ("mlp.down_proj.weight", "fc2.weight", "mlp.fc2.weight"),
        },
    ),
    "neox": (
        r"^(?P<p>.*?)layers\.(?P<i>\d+)\.attention\.query_key_value\.weight$",
        {
            "qkv": ("attention.query_key_value.weight",),
            "o": ("attention.dense.weight",),
            "up": ("mlp.dense_h_to_4h.weight",),
            "down": ("mlp.dense_4h_to_h.weight",),
        },
    ),
    "falcon": (
        r"^(?P<p>.*?)h\.(?P<i>\d+)\.self_attention\.query_key_value\.weight$",
        {
            "qkv": ("self_attention.query_key_value.weight",),
            "o": ("self_attention.dense.weight",),
            "up": ("mlp.dense_h_to_4h.weight",),
            "down": ("mlp.dense_4h_to_h.weight",),
        },
    ),
    "gpt2": (
        r"^(?P<p>.*?)h\.(?P<i>\d+)\.attn\.c_attn\.weight$",
        {
            "qkv": ("attn.c_attn.weight",),
            "o": ("attn.c_proj.weight",),
            "up": ("mlp.c_fc.weight",),
            "down": ("mlp.c_proj.weight",),
        },
    ),
}
EMBED_NAMES = ("embed_tokens.weight", "embed_in.weight", "word_embeddings.weight", "wte.weight")


@dataclass(frozen=True)
class Arch:
    """Everything extraction needs to know about a checkpoint's layout."""

    layout: str  # separate_qkv | neox | falcon | gpt2
    model_type: str  # config.json's model_type (recorded; e.g. llama, qwen2, gemma3_text)
    prefix: str  # key prefix of the layer stack, e.g. "model." or "gpt_neox."
    layer_word: str  # "layers" or "h"
    keys: dict[str, str]  # role -> suffix present in this checkpoint
    embed_key: str
    embed_proj_key: str | None  # OPT's project_in when word_embed_proj_dim != hidden_size
    n_layers_total: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    qkv_layout: str  # separate | per_head | multi_query | grouped | thirds
    gated: bool

    def key(self, layer: int, role: str) -> str:
        """Full tensor name of ``role`` in ``layer``."""
        return f"{self.prefix}{self.layer_word}.{layer}.{self.keys[role]}"

    def layer_keys(self, layer: int) -> list[str]:
        """Every tensor extraction reads for ``layer``."""
        return [self.key(layer, r) for r in self.keys]

    def describe(self) -> str:
        """Short label for rows and logs, e.g. ``llama (separate_qkv, GQA 9/3)``."""
        heads = (
            f"GQA {self.n_heads}/{self.n_kv_heads}"
            if self.n_kv_heads != self.n_heads
            else f"MHA {self.n_heads}"
        )
        return f"{self.model_type} ({self.layout}, {heads}{', gated' if self.gated else ''})"


def read_config(folder: Path) -> dict[str, Any]:
    """config.json of a model folder (the text config of a multimodal one)."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{folder}/config.json is missing or unreadable ({exc})",
            "pass a Hugging Face model folder",
        ) from exc
    return {**cfg, **cfg.get("text_config", {})}


def _get(cfg: dict[str, Any], *names: str) -> Any:
    for n in names:
        if cfg.get(n) is not None:
            return cfg[n]
    return None


def detect(folder: Path, reader: CheckpointReader) -> Arch:
    """Recognise the layout of a checkpoint from its tensor names, with head counts from config.

    Raises:
        ArchitectureError: No known layout matches (the message names model_type and sample keys).
        CheckpointError: A layout matches but the embedding or a needed role is missing.
    """
    cfg = read_config(folder)
    model_type = str(cfg.get("model_type", "unknown"))
    keys = reader.keys()
    for layout, (pattern, roles) in LAYOUTS.items():
        rx = re.compile(pattern)
        hits = [m for m in map(rx.match, keys) if m]
        if not hits:
            continue
        prefix = hits[0].group("p")
        layer0 = int(hits[0].group("i"))
        present = _roles(reader, prefix, _layer_word(layout), layer0, roles)
        if present is None:
            continue
        return _build(layout, model_type, prefix, present, cfg, reader, hits)
    sample = ", ".join(keys[:6])
    raise ArchitectureError(
        f"unknown architecture: model_type={model_type!r}, "
        f"architectures={cfg.get('architectures')}, keys like [{sample}]",
        "HuRef supports Llama/Mistral/Qwen2/Gemma, GPT-NeoX, GPT-2, OPT, Falcon and BLOOM layouts; "
        "add a layout to tasks/huref/arch.py LAYOUTS",
    )


def _layer_word(layout: str) -> str:
    return "layers" if layout in ("separate_qkv", "neox") else "h"


def _roles(
    reader: CheckpointReader, prefix: str, word: str, layer: int, roles: dict[str, tuple[str, ...]]
) -> dict[str, str] | None:
    """Pick the present suffix for each role; None when an attention/MLP role is absent."""
    out = {}
    for role, options in roles.items():
        found = [s for s in options if f"{prefix}{word}.{layer}.{s}" in reader]
        if found:
            out[role] = found[0]
        elif role != "gate":  # gate is optional: its absence means a plain (non-gated) MLP
            return None
    return out


def _build(
    layout: str,
    model_type: str,
    prefix: str,
    present: dict[str, str],
    cfg: dict[str, Any],
    reader: CheckpointReader,
    hits: list,
) -> Arch:
    embed_key = next((prefix + n for n in EMBED_NAMES if prefix + n in reader), None)
    if embed_key is None:
        raise CheckpointError(
            f"{reader.folder} has layers under {prefix!r} but no input "
            f"embedding ({' / '.join(prefix + n for n in EMBED_NAMES)})",
            "pass a complete checkpoint",
        )
    proj = prefix + "project_in.weight"
    word, layer0 = _layer_word(layout), int(hits[0].group("i"))
    o_shape = reader.info(f"{prefix}{word}.{layer0}.{present['o']}").shape
    d = int(o_shape[1] if layout == "gpt2" else o_shape[0])  # robust to config spellings
    n_heads = int(_get(cfg, "num_attention_heads", "n_head", "num_heads") or 0)
    if n_heads <= 0:
        raise ArchitectureError(
            f"config.json of {reader.folder} gives no attention head count",
            "add num_attention_heads to config.json",
        )
    head_dim = int(_get(cfg, "head_dim") or d // n_heads)
    n_total = _get(cfg, "num_hidden_layers", "n_layer", "num_layers")
    n_total = int(n_total) if n_total else 1 + max(int(m.group("i")) for m in hits)
    qkv_layout, n_kv = _qkv_layout(
        layout, model_type, cfg, present, prefix, word, reader, layer0, n_heads, head_dim
    )
    return Arch(
        layout=layout,
        model_type=model_type,
        prefix=prefix,
        layer_word=word,
        keys=present,
        embed_key=embed_key,
        embed_proj_key=proj if proj in reader else None,
        n_layers_total=n_total,
        hidden_size=d,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        qkv_layout=qkv_layout,
        gated="gate" in present,
    )


def _qkv_layout(
    layout: str,
    model_type: str,
    cfg: dict[str, Any],
    present: dict[str, str],
    prefix: str,
    word: str,
    reader: CheckpointReader,
    layer: int,
    n_heads: int,
    head_dim: int,
) -> tuple[str, int]:
    """Name the QKV layout and the number of KV heads, checked against the stored shapes."""
    if layout == "separate_qkv":
        rows = reader.info(f"{prefix}{word}.{layer}.{present['k']}").shape[0]
        return "separate", _divide(rows, head_dim, "k_proj rows", reader)
    if layout == "gpt2":
        return "thirds", n_heads
    rows = reader.info(f"{prefix}{word}.{layer}.{present['qkv']}").shape[0]
    if model_type == "falcon" and cfg.get("new_decoder_architecture"):
        n_kv = int(_get(cfg, "num_kv_heads") or n_heads)
        layout_name = "grouped"
    elif model_type == "falcon" and cfg.get("multi_query", True):
        n_kv, layout_name = 1, "multi_query"
    else:
        n_kv, layout_name = n_heads, "per_head"
    if rows != (n_heads + 2 * n_kv) * head_dim:
        raise ArchitectureError(
            f"fused query_key_value of {reader.folder} has {rows} rows, expected "
            f"{(n_heads + 2 * n_kv) * head_dim} for layout {layout_name} "
            f"({n_heads} heads, {n_kv} KV heads, head_dim {head_dim})",
            "check config.json (num_attention_heads, num_kv_heads, new_decoder_architecture)",
        )
    return layout_name, n_kv


def _divide(rows: int, head_dim: int, what: str, reader: CheckpointReader) -> int:
    if rows % head_dim:
        raise ArchitectureError(
            f"{what} ({rows}) of {reader.folder} is not a multiple of head_dim {head_dim}",
            "check head_dim in config.json",
        )
    return rows // head_dim


def attention(reader: CheckpointReader, arch: Arch, layer: int) -> tuple[np.ndarray, ...]:
    """``(q, k, v, o)`` of one layer as float32, in nn.Linear convention, K/V not repeated."""
    o = reader.read(arch.key(layer, "o"))
    if arch.qkv_layout == "separate":
        q, k, v = (reader.read(arch.key(layer, r)) for r in ("q", "k", "v"))
        return q, k, v, o
    w = reader.read(arch.key(layer, "qkv"))
    h, kv, hd = arch.n_heads, arch.n_kv_heads, arch.head_dim
    if arch.qkv_layout == "thirds":  # GPT-2 Conv1D: [d, 3d] -> [3d, d], then contiguous q|k|v
        w, o = w.T, o.T
        q, k, v = np.split(w, 3, axis=0)
    elif arch.qkv_layout == "per_head":
        blocks = w.reshape(h, 3, hd, -1)
        q, k, v = (blocks[:, j].reshape(h * hd, -1) for j in range(3))
    elif arch.qkv_layout == "multi_query":
        q, k, v = w[: h * hd], w[h * hd : (h + 1) * hd], w[(h + 1) * hd :]
    else:  # grouped: per KV group [q x rep, k, v]
        blocks = w.reshape(kv, h // kv + 2, hd, -1)
        q = blocks[:, :-2].reshape(h * hd, -1)
        k, v = blocks[:, -2].reshape(kv * hd, -1), blocks[:, -1].reshape(kv * hd, -1)
    return (
        np.ascontiguousarray(q),
        np.ascontiguousarray(k),
        np.ascontiguousarray(v),
        np.ascontiguousarray(o),
    )


def mlp_weight(reader: CheckpointReader, arch: Arch, layer: int, role: str) -> np.ndarray | None:
    """One MLP weight (``up``, ``gate`` or ``down``) as float32 nn.Linear ``[out, in]``; None for
    the gate of a plain MLP. Read one at a time so extraction can free each as soon as it can."""
    if role == "gate" and not arch.gated:
        return None
    w = reader.read(arch.key(layer, role))
    return np.ascontiguousarray(w.T) if arch.layout == "gpt2" else w  # Conv1D stores [in, out]


def mlp(reader: CheckpointReader, arch: Arch, layer: int) -> tuple[np.ndarray | None, ...]:
    """``(up, gate, down)`` of one layer as float32 nn.Linear weights (gate None if not gated)."""
    return tuple(mlp_weight(reader, arch, layer, r) for r in ("up", "gate", "down"))
