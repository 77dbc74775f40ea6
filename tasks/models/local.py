"""Local model folders: validation, opt-in pickle conversion, and a cheap content identity.

fprun loads safetensors only: a pickle checkpoint can execute code when it is
unpickled, so a folder holding only ``pytorch_model*.bin``/``*.pt`` is refused unless the user
passes ``--allow-pickle``. Even then it is loaded once (transformers' ``weights_only`` loader) and
rewritten as safetensors in the cache, so every later step sees the same safe format.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from tasks.errors import CheckpointError, ModelRefError
from tasks.models.cache import MANIFEST, materialize, save_model_on_any_rank
from tasks.readers import read_json

PICKLE_GLOBS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
INDEX = "model.safetensors.index.json"
# Files whose bytes decide what a model computes (weights, config, tokenizer, chat template).
_IDENTITY_SUFFIXES = {".safetensors", ".json", ".jinja", ".model", ".txt", ".tiktoken"}
_CHUNK = 1 << 20


def check_model_folder(path: Path, *, allow_pickle: bool, cache: Path | None) -> Path:
    """Return ``path`` if it is a usable safetensors model folder (or its converted copy).

    Args:
        path: An existing path.
        allow_pickle: Convert a pickle-only checkpoint instead of refusing it.
        cache: fprun cache root for converted pickles; None to check without converting
            (plans; hub snapshots are fetched without pickles).

    Raises:
        ModelRefError: Not a folder, or no ``config.json``.
        CheckpointError: A pickle checkpoint (without ``allow_pickle``), missing shards, or
            no weights at all.
    """
    if not path.is_dir():
        raise ModelRefError(
            f"model path {path} is a file, not a model folder",
            "pass the folder that holds config.json and the weights",
        )
    if not (path / "config.json").is_file():
        raise ModelRefError(
            f"{path} has no config.json, so it is not a Hugging Face model folder",
            "pass a folder written by save_pretrained, or a zoo name",
        )
    read_json(path / "config.json", error=CheckpointError, what="model config")
    if (path / INDEX).is_file():
        _check_shards(path)
        check_headers(path)
        return path
    if any(path.glob("*.safetensors")):
        check_headers(path)
        return path
    pickles = sorted({p.name for pattern in PICKLE_GLOBS for p in path.glob(pattern)})
    if not pickles:
        raise CheckpointError(
            f"{path} holds no weights (no *.safetensors)", "pass a complete model folder"
        )
    if not allow_pickle:
        raise CheckpointError(
            f"{path} is a pickle checkpoint ({', '.join(pickles)}), which can run code on load",
            "convert it to safetensors, or pass --allow-pickle if you trust it (fprun "
            "fingerprint, finetune, verify, eval and huref extract convert it once)",
        )
    if cache is None:  # a check only (plans, fprun validate): conversion happens on use
        return path
    folder = cache / "converted" / f"{path.name}-{model_identity(path)}"
    return materialize(
        folder,
        "tasks.models.local:pickle_to_safetensors/1",
        lambda out: pickle_to_safetensors(path, out),
    )


def check_headers(path: Path) -> None:
    """Parse every shard's safetensors header: a truncated or corrupt file fails here, in
    milliseconds, instead of minutes later inside a step (CheckpointError)."""
    from tasks.huref.safetensors_io import read_header  # local: numpy, only for local folders

    for shard in sorted(path.glob("*.safetensors")):
        read_header(shard)


def _check_shards(path: Path) -> None:
    index = read_json(path / INDEX, error=CheckpointError, what="shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{path / INDEX} has no weight_map", "re-save the checkpoint")
    missing = sorted({f for f in weight_map.values() if not (path / f).is_file()})
    if missing:
        raise CheckpointError(
            f"{path} lacks shards listed in {INDEX}: {', '.join(missing)}",
            "copy the complete checkpoint",
        )


def pickle_to_safetensors(src: Path, out: Path) -> dict:
    """Load a pickle checkpoint once (``weights_only``) and save it as safetensors in ``out``.

    Returns:
        The source description for the cache manifest.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype="auto", use_safetensors=False)
    save_model_on_any_rank(model, out)
    for item in src.iterdir():  # tokenizer and other small files; never the pickles themselves
        skip = any(item.match(p) for p in PICKLE_GLOBS) or item.name == MANIFEST
        if item.is_file() and not skip and not (out / item.name).exists():
            shutil.copy2(item, out / item.name)
    return {"kind": "pickle", "path": str(src.resolve())}


def model_identity(path: Path) -> str:
    """A short hash of what a model folder computes, cheap enough to take on every run.

    Step IDs depend on *which* weights a local path holds, not on the path, but hashing GBs of
    weights per run would dominate small steps. So: small files (config, tokenizer, chat
    template; up to 3 MiB) are hashed in full; each larger file contributes its size and its
    first, middle and last MiB (the first holds the safetensors header: tensor names, shapes,
    dtypes and offsets). Trade-off: an edit that keeps the file size and touches none of the
    sampled bytes goes unseen; training, merging or casting rewrite the whole file, so they are
    seen. The hash depends on content only, so a copy of a folder has the same identity.

    Args:
        path: A model folder (``resolve_model``'s result).

    Returns:
        16 hex characters.
    """
    digest = hashlib.sha256()
    for item in sorted(path.iterdir()):
        chosen = item.suffix in _IDENTITY_SUFFIXES or any(item.match(p) for p in PICKLE_GLOBS)
        if not item.is_file() or item.name == MANIFEST or item.name.startswith(".") or not chosen:
            continue
        size = item.stat().st_size
        digest.update(f"{item.name}\0{size}\0".encode())
        with open(item, "rb") as f:
            if size <= 3 * _CHUNK:
                digest.update(f.read())
                continue
            for offset in (0, size // 2 - _CHUNK // 2, size - _CHUNK):
                f.seek(offset)
                digest.update(f.read(_CHUNK))
    return digest.hexdigest()[:16]
