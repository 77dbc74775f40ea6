"""``fprun huref image``: invariant folders -> one PNG per model plus a contact sheet.

Each folder's invariants are reduced to a 512-vector (mean pooling by default, or a trained CNN
encoder), rendered by the built-in coordinate network (or a user's StyleGAN2), and the pictures are
laid out on one sheet whose titles give each model's feature cosine and, where all models share K,
layers and token set, ICS to the first model, so a reader can check the pictures against numbers.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import ConfigError, DataError
from tasks.huref.compare import check_invariants
from tasks.huref.encoder.image import (
    DEFAULT_SIZE,
    GENERATOR_SEED,
    CoordinateNet,
    StyleGAN2Generator,
    contact_sheet,
    save_png,
)

SHEET_FILE = "contact_sheet.png"
MANIFEST_FILE = "images.json"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._") or "model"


def _names(metas: list[dict[str, Any]], dirs: list[Path]) -> list[str]:
    """Display names: the model ref's last component, made unique with the folder name."""
    names = [
        str(m.get("model_ref") or d.name).rstrip("/").split("/")[-1] or d.name
        for m, d in zip(metas, dirs, strict=True)
    ]
    if len(set(names)) != len(names):
        names = [f"{n} [{d.name}]" for n, d in zip(names, dirs, strict=True)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    return out


def feature_vectors(
    dirs: list[Path], *, encoder: str | os.PathLike | None = None, allow_pickle: bool = False
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The 512-vector of each invariants folder (one tensor in memory at a time).

    Raises:
        CheckpointError: missing or corrupt invariants, or an unusable encoder.
    """
    from tasks.huref.encoder.model import encode_cnn, load_encoder, mean_pool
    from tasks.huref.store import load_invariants, load_meta

    metas = [load_meta(d) for d in dirs]  # fail on a missing folder before any heavy work
    enc = load_encoder(encoder, allow_pickle=allow_pickle) if encoder is not None else None
    vecs = []
    for d in dirs:
        tensor, _ = load_invariants(d)
        vec = mean_pool(tensor) if enc is None else encode_cnn(enc, tensor)
        vecs.append(vec.numpy().astype(np.float64))
        del tensor
    return np.stack(vecs), metas


def _cosines(vecs: np.ndarray) -> np.ndarray:
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    return unit @ unit.T


def _ics_to_first(dirs: list[Path], metas: list[dict[str, Any]]) -> list[float | None] | None:
    """ICS of each model to the first, for the models sharing its K, layers and token set.

    ICS across token sets does not measure lineage (docs/huref.md), so those models get None.
    """
    from tasks.huref.similarity import ics_matrix

    key = [(int(m["k"]), int(m["n_layers"]), m["token_set_hash"]) for m in metas]
    same = [i for i, k in enumerate(key) if k == key[0]]
    if len(same) < 2:
        return None
    mat, _ = ics_matrix([dirs[i] for i in same])
    out: list[float | None] = [None] * len(dirs)
    for j, i in enumerate(same):
        out[i] = float(mat[0, j])
    return out


def render_family(
    dirs: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    encoder: str | os.PathLike | None = None,
    allow_pickle: bool = False,
    stylegan: str | os.PathLike | None = None,
    size: int = DEFAULT_SIZE,
    ics: bool = True,
) -> dict[str, Any]:
    """Write ``<name>.png`` per model, ``contact_sheet.png`` and ``images.json`` into ``out``.

    Args:
        dirs: Invariant folders (``fprun huref extract`` outputs).
        out: Output folder.
        encoder: A trained CNN encoder folder (default: mean pooling).
        allow_pickle: Allow pickled encoders / StyleGAN2 generators.
        stylegan: An NVIDIA StyleGAN2 network pickle instead of the built-in generator.
        size: Side of the built-in generator's pictures in pixels.
        ics: Put ICS to the first model in the titles (reads each file once more).

    Returns:
        The manifest written to ``images.json``.
    """
    # Over 60 lines on purpose: each picture, its title and its manifest entry are made in one loop.
    if not dirs:
        raise DataError("no invariant folders given", "pass 'fprun huref extract' outputs")
    if size < 8:
        raise ConfigError(f"--size {size} is too small to see anything", "use 8 to 2048")
    paths = [Path(d) for d in dirs]
    check_invariants(paths, mixed_tokens=True)  # one K and layer count, or the pictures lie
    gen = (
        StyleGAN2Generator.from_pickle(stylegan, allow_pickle=allow_pickle)
        if stylegan is not None
        else CoordinateNet()
    )
    vecs, metas = feature_vectors(paths, encoder=encoder, allow_pickle=allow_pickle)
    names = _names(metas, paths)
    cos = _cosines(vecs)
    ics_first = _ics_to_first(paths, metas) if ics else None
    out_dir = Path(out)
    images, titles, models = [], [], []
    for i, (name, path, meta) in enumerate(zip(names, paths, metas, strict=True)):
        img = gen(vecs[i], size)
        png = save_png(img, out_dir / f"{_safe_name(name)}.png")
        images.append(img)
        titles.append(_title(i, name, names[0], cos, ics_first))
        models.append(
            {
                "name": name,
                "invariants": str(path),
                "png": png.name,
                "k": meta.get("k"),
                "n_layers": meta.get("n_layers"),
                "token_set_hash": meta.get("token_set_hash"),
                "feature_cos_to_first": round(float(cos[0, i]), 6),
                "ics_to_first": _round(ics_first, i),
            }
        )
    method = "mean_pool" if encoder is None else f"cnn:{encoder}"
    generator = (
        f"stylegan2:{stylegan}" if stylegan is not None else f"fprun-cppn(seed={GENERATOR_SEED})"
    )
    contact_sheet(
        images,
        titles,
        out_dir / SHEET_FILE,
        heading=f"HuRef fingerprints ({method}, {generator.split('(')[0]})",
    )
    manifest = {
        "method": method,
        "generator": generator,
        "models": models,
        "feature_cosine": np.round(cos, 6).tolist(),
        "sheet": SHEET_FILE,
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


CODE_VERSION = "1"


def image_step(
    config: dict[str, Any], *, inputs: dict[str, Path], out_dir: Path, **hooks: Any
) -> list[dict[str, Any]]:
    """Step function of the huref kind's picture step: the wired extract folders, in input-name
    order (the experiment's model order), drawn into ``out_dir``; one ``huref_image`` row each.

    ``config``: ``size`` (pixels) and ``ics`` (ICS to the first model in the titles).
    """
    dirs = [inputs[k] for k in sorted(inputs)]
    manifest = render_family(
        dirs, out_dir, size=int(config.get("size", DEFAULT_SIZE)), ics=bool(config.get("ics", True))
    )
    sheet = str(Path(out_dir) / SHEET_FILE)
    return [
        {
            "model": m["name"],
            "png": str(Path(out_dir) / m["png"]),
            "sheet": sheet,
            "method": manifest["method"],
            "generator": manifest["generator"],
            "feature_cos_to_first": m["feature_cos_to_first"],
            "ics_to_first": m["ics_to_first"],
            "k": m["k"],
            "token_set_hash": m["token_set_hash"],
        }
        for m in manifest["models"]
    ]


def _round(ics: list[float | None] | None, i: int) -> float | None:
    return None if ics is None or ics[i] is None else round(ics[i], 4)


def _title(i: int, name: str, first: str, cos: np.ndarray, ics: list[float | None] | None) -> str:
    if i == 0:
        return f"{name}\n(reference)"
    line = f"cos {cos[0, i]:.3f}"
    if ics is not None:
        line += f", ICS {ics[i]:.1f}" if ics[i] is not None else ", other token set"
    return f"{name}\n{line} vs {first}"
