"""Checks before any merge work, without torch: can these model folders be merged?

mergekit itself compares only architecture names, treats a local path that does not exist as a
hub id (a network call) and reads ``+`` in a reference as a LoRA and ``@`` as a revision. So every
reference is resolved here first (:func:`resolve_ref`: an existing folder, a zoo name, or a hub
id; a missing path is an error at once), every folder must hold safetensors only, and
:func:`preflight` refuses parents whose architecture, hidden size, layer count, vocabulary or
tokenizer differ, one line each (exit 2). It also reports which parents have an untied output
head, which :mod:`tasks.merge.mergekit_run` needs to write a config transformers loads correctly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import ArchitectureError, ConfigError, ModelRefError
from tasks.huref.safetensors_io import read_header
from tasks.models.local import INDEX, check_model_folder

SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
HEAD = "lm_head.weight"


@dataclass(frozen=True)
class Parent:
    """One model of a merge as preflight saw it."""

    role: str
    path: Path
    arch: str
    shape: dict[str, Any]
    tokenizer: str  # hash of the token table
    tied: bool  # config ties the output head to the input embedding
    has_head: bool  # the checkpoint stores lm_head.weight


def resolve_ref(ref: str, *, allow_hub: bool = True) -> Path:
    """A model reference as an absolute folder, refusing what mergekit would misread.

    An existing path is taken as a path, whatever characters it holds (the merge passes it to
    mergekit as ``{"path": ...}``). Otherwise a zoo name or, with ``allow_hub``, a hub id.

    Raises:
        ModelRefError: A path that does not exist (no hub call is made), a LoRA ``+`` or a hub
            revision ``@`` reference.
        CheckpointError: A folder holding pickle weights.
    """
    path = Path(ref).expanduser()
    if path.exists():
        return check_model_folder(path.resolve(), allow_pickle=False, cache=None)
    if "+" in ref:
        raise ModelRefError(
            f"model {ref} is not a folder; mergekit would read '+' as base+LoRA",
            "merge the LoRA into its base first (fprun finetune --lora does) and pass the folder",
        )
    from tasks.models.zoo import resolve_model, zoo_names

    is_zoo = ref.partition("@")[0].partition(":")[0] in zoo_names()
    if "@" in ref and not is_zoo:
        raise ModelRefError(
            f"model {ref} is not a folder; '@' would be read as a hub revision",
            "download that revision and pass its folder",
        )
    looks_like_path = ref.startswith((".", "/", "~")) or ref.count("/") > 1 or ref.endswith("/")
    if looks_like_path or not (is_zoo or allow_hub):
        raise ModelRefError(
            f"model path {ref} does not exist (mergekit would have asked the hub for it)",
            "pass an existing model folder, a zoo name (fprun ls models) or a hub id",
        )
    return resolve_model(ref).resolve()


def tensor_names(folder: Path) -> set[str]:
    """Names of the tensors a safetensors checkpoint holds (headers only)."""
    index = folder / INDEX
    if index.is_file():
        return set(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
    return {n for f in sorted(folder.glob("*.safetensors")) for n in read_header(f)}


def token_table_hash(folder: Path) -> str:
    """Hash of what maps text to ids: tokenizer.json's vocabulary, merges and added tokens
    (formatting and chat templates may differ), else the SentencePiece model file."""
    tok = folder / "tokenizer.json"
    if tok.is_file():
        data = json.loads(tok.read_text(encoding="utf-8"))
        model = data.get("model") or {}
        added = sorted((t.get("id"), t.get("content")) for t in data.get("added_tokens") or [])
        table = [model.get("type"), model.get("vocab"), model.get("merges"), added]
        blob = json.dumps(table, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
    spm = folder / "tokenizer.model"
    if spm.is_file():
        return hashlib.sha256(spm.read_bytes()).hexdigest()[:16]
    raise ModelRefError(
        f"{folder} has no tokenizer (tokenizer.json or tokenizer.model)",
        "save the tokenizer next to the weights",
    )


def inspect(role: str, folder: Path) -> Parent:
    """Read one parent's config, tensor names and token table (no weights)."""
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    text = cfg.get("text_config") or cfg
    shape = {k: text.get(k, cfg.get(k)) for k in SHAPE_KEYS}
    return Parent(
        role=role,
        path=folder,
        arch=",".join(cfg.get("architectures") or [str(cfg.get("model_type"))]),
        shape=shape,
        tokenizer=token_table_hash(folder),
        tied=bool(text.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
        has_head=HEAD in tensor_names(folder),
    )


def preflight(folders: dict[str, Path]) -> dict[str, Parent]:
    """Refuse parents that cannot be merged into one loadable model; role -> :class:`Parent`.

    Raises:
        ArchitectureError: Architecture, hidden size, layer count, vocabulary or tokenizer
            differ between the parents (mergekit 0.1.5 checks only the architecture name).
    """
    if not folders:
        raise ConfigError("a merge needs models", "list the models to merge")
    parents = {role: inspect(role, Path(f)) for role, f in folders.items()}
    first = next(iter(parents.values()))
    for p in parents.values():
        if p.arch != first.arch:
            raise ArchitectureError(
                f"{p.role} is {p.arch} but {first.role} is {first.arch}",
                "merge models of one architecture (mergekit's allow_crimes is not offered)",
            )
        for key in SHAPE_KEYS:
            if p.shape[key] != first.shape[key]:
                raise ArchitectureError(
                    f"{key} differs: {p.role} has {p.shape[key]}, {first.role} {first.shape[key]}",
                    "merge fine-tunes of one base model (same shapes and vocabulary)",
                )
        if p.tokenizer != first.tokenizer:
            raise ArchitectureError(
                f"the tokenizers of {p.role} and {first.role} differ (token tables "
                f"{p.tokenizer} vs {first.tokenizer}), so their embedding rows mean other tokens",
                "merge models that share the base's tokenizer",
            )
    return parents


def untied_head(parents: dict[str, Parent]) -> bool:
    """Whether a merge of these parents gets its own output head (any parent stores one that
    its config does not tie): mergekit then writes ``lm_head.weight`` next to the base's config."""
    return any(p.has_head and not p.tied for p in parents.values())
