"""Control models made from a base without training: noise, random init, permutation, rotation.

HuRef's claims need controls on both sides: same lineage (the base plus relative noise), no lineage
(fresh random weights of the same shapes), and function-preserving rearrangements that defeat PCS
but must leave ICS at ~100: ``permute`` (a random permutation of the residual stream and of each
MLP's hidden units) and ``rotate_heads`` (per KV group, a rotation of q and k inside each RoPE plane
and an orthogonal map on v undone in o; Llama-family models without q/k norms). A residual-stream
rotation is not offered: it changes M_f of a gated MLP (the elementwise product does not commute).
Only separate q/k/v layouts (Llama, Mistral, Qwen2, Gemma) are transformed; output is fp32.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import ArchitectureError
from tasks.huref import arch as archs
from tasks.huref.config import DeriveConfig
from tasks.huref.safetensors_io import CheckpointReader

CODE_VERSION = "1"
_COPY = re.compile(r".*\.(json|jinja|model|txt|tiktoken)$")
_IN_COLS = re.compile(
    r"(q_proj|k_proj|v_proj|gate_proj|up_proj)\.weight$|embed_tokens\.weight$"
    r"|^lm_head\.weight$"
)
_OUT_ROWS = re.compile(r"(o_proj|down_proj)\.(weight|bias)$")
_RESID_NORM = re.compile(r"(layernorm|(^|\.)norm)\.weight$")


def derive(base_dir: str | Path, out: str | Path, cfg: DeriveConfig) -> Path:
    """Write the control model described by ``cfg`` into ``out`` (a model folder).

    Args:
        base_dir: Resolved safetensors folder of the base model.
        out: Destination folder.
        cfg: Mode, noise level and seed.
    """
    base, out = Path(base_dir), Path(out)
    reader = CheckpointReader(base)
    rng = np.random.default_rng(cfg.seed)
    tensors = {k: reader.read(k) for k in reader.keys()}
    if cfg.mode == "noise":
        tensors = {
            k: v + cfg.noise * v.std() * rng.standard_normal(v.shape, dtype=np.float32)
            for k, v in tensors.items()
        }
    elif cfg.mode == "random_init":
        tensors = _random_init(tensors, archs.read_config(base), rng)
    else:
        a = archs.detect(base, reader)
        if a.layout != "separate_qkv":
            raise ArchitectureError(
                f"mode {cfg.mode} supports the Llama-family layout, not "
                f"{a.layout} ({a.model_type})",
                "use noise or random_init",
            )
        if cfg.mode in ("permute", "permute_rotate"):
            tensors = permute(tensors, a, rng)
        if cfg.mode in ("rotate_heads", "permute_rotate"):
            tensors = rotate_heads(tensors, a, rng)
    _save(base, out, tensors, cfg)
    return out


def _random_init(
    tensors: dict[str, np.ndarray], cfg: dict[str, Any], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """transformers' default init: N(0, initializer_range) matrices, unit norms, zero biases."""
    std = float(cfg.get("initializer_range", 0.02))
    out = {}
    for k, v in tensors.items():
        if v.ndim >= 2:
            out[k] = std * rng.standard_normal(v.shape, dtype=np.float32)
        elif k.endswith("bias"):
            out[k] = np.zeros_like(v)
        else:
            out[k] = np.ones_like(v)
    return out


def permute(
    tensors: dict[str, np.ndarray], a: archs.Arch, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Residual-stream permutation plus an MLP hidden-unit permutation per layer."""
    d = a.hidden_size
    p = rng.permutation(d)
    out = {}
    for k, v in tensors.items():
        if _IN_COLS.search(k) and v.ndim == 2 and v.shape[1] == d:
            v = v[:, p]
        elif _OUT_ROWS.search(k) and v.shape[0] == d:
            v = v[p]
        elif _RESID_NORM.search(k) and v.shape == (d,):
            v = v[p]
        out[k] = v
    for layer in range(a.n_layers_total):
        keys = [a.key(layer, r) for r in ("up", "gate", "down") if r in a.keys]
        if not all(k in out for k in keys):
            continue
        hidden = rng.permutation(out[a.key(layer, "up")].shape[0])
        for k in keys:
            out[k] = out[k][:, hidden] if k == a.key(layer, "down") else out[k][hidden]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def rotate_heads(
    tensors: dict[str, np.ndarray], a: archs.Arch, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Per KV group: RoPE-plane rotations of q and k, an orthogonal map on v undone in o."""
    out = dict(tensors)
    h, kv, hd = a.n_heads, a.n_kv_heads, a.head_dim
    rep = h // kv
    for layer in range(a.n_layers_total):
        names = {r: a.key(layer, r) for r in ("q", "k", "v", "o")}
        if not all(n in out for n in names.values()):
            continue
        q = out[names["q"]].reshape(kv, rep, hd, -1).copy()
        k = out[names["k"]].reshape(kv, hd, -1).copy()
        v = out[names["v"]].reshape(kv, hd, -1).copy()
        o = out[names["o"]].reshape(-1, kv, rep, hd).copy()
        qb, kb, vb = (
            out.get(n.replace(".weight", ".bias")) for n in (names["q"], names["k"], names["v"])
        )
        for g in range(kv):
            rot = _rope_plane_rotation(hd, rng)
            orth = np.linalg.qr(rng.standard_normal((hd, hd)))[0].astype(np.float32)
            q[g] = rot @ q[g]
            k[g] = rot @ k[g]
            v[g] = orth @ v[g]
            o[:, g] = o[:, g] @ orth.T
            for bias, mat in ((qb, rot), (kb, rot), (vb, orth)):
                if bias is not None:
                    _rotate_bias(bias, g, mat, hd, rep if bias is qb else 1)
        out[names["q"]], out[names["k"]] = q.reshape(h * hd, -1), k.reshape(kv * hd, -1)
        out[names["v"]], out[names["o"]] = v.reshape(kv * hd, -1), o.reshape(-1, h * hd)
    return out


def _rotate_bias(bias: np.ndarray, group: int, mat: np.ndarray, hd: int, rep: int) -> None:
    blocks = bias.reshape(-1, rep, hd)
    blocks[group] = blocks[group] @ mat.T


def _rope_plane_rotation(hd: int, rng: np.random.Generator) -> np.ndarray:
    """Rotation by a random angle in each plane (i, i + hd/2): commutes with rotate_half RoPE."""
    half = hd // 2
    theta = rng.uniform(0, 2 * np.pi, half)
    c, s = np.cos(theta), np.sin(theta)
    r = np.zeros((hd, hd))
    idx = np.arange(half)
    r[idx, idx], r[idx + half, idx + half] = c, c
    r[idx, idx + half], r[idx + half, idx] = -s, s
    return r.astype(np.float32)


def _save(base: Path, out: Path, tensors: dict[str, np.ndarray], cfg: DeriveConfig) -> None:
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    for f in base.iterdir():
        if f.is_file() and _COPY.match(f.name) and not f.name.startswith(("fprun-", "model.")):
            shutil.copy2(f, out / f.name)
    config = json.loads((base / "config.json").read_text())
    config["dtype"] = "float32"
    config.pop("torch_dtype", None)
    config["fprun_derived"] = {"base": str(base), **cfg.model_dump()}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )


def derive_step(
    config: dict[str, Any], *, inputs: dict[str, Path], out_dir: Path, **hooks: Any
) -> list[dict[str, Any]]:
    """Step function: builds the control model in ``out_dir``; it has no result rows."""
    from tasks.models.zoo import resolve_model

    cfg = DeriveConfig.model_validate(config)
    base = Path(inputs["base"]) if "base" in inputs else resolve_model(cfg.base)
    derive(base, out_dir, cfg)
    return []
