"""The F-Adapter of IF_adapter: an embedding-only adapter for a token set T.

:class:`InstructionFingerprint` replaces a causal LM's input embedding: for ``t`` in T,
``out = R[t] + B(A(trainable_emb[slot(t)]))``, else the frozen ``orig_emb[t]``. A and B are
``nn.Linear`` with bias; ``R`` is ``orig_emb`` (the seed's forward, the default) or
``trainable_emb`` (``residual="trainable"``; docs/seed_fixes.md says why it is not the default).
Not peft: its embedding LoRA updates the weight matrix for every token, while the F-Adapter is an
MLP on the embedding vectors of T only. :func:`unwrap_adapter` merges the trained rows into the
published embedding; A, B and T's rows are saved as safetensors + JSON, never as a pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tasks.errors import ArchitectureError, CheckpointError, FingerprintError

ADAPTER_FILE = "adapter.safetensors"
META_FILE = "adapter.json"
FORMAT_VERSION = 1
TENSOR_NAMES = ("trainable_emb", "A.weight", "A.bias", "B.weight", "B.bias")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


class InstructionFingerprint(nn.Module):
    """The F-Adapter module (drop-in for ``model.get_input_embeddings()``).

    Args:
        emb: The model's input embedding; kept (frozen) as ``orig_emb``.
        token_ids: The token set T (deduplicated and sorted, so slots are reproducible).
        dim: Inner dimension r.
        init: ``lora`` (A kaiming-uniform as ``nn.Linear``/peft's LoRA A, B zero) or ``seed``
            (A and B all zero, as the seed's code).
        residual: ``trainable`` or ``orig`` (see the module docstring).
        init_seed: Seed of A's random init, independent of the global RNG.
    """

    def __init__(
        self,
        emb: nn.Embedding,
        token_ids: Sequence[int],
        dim: int,
        *,
        init: str = "lora",
        residual: str = "orig",
        init_seed: int = 0,
    ):
        super().__init__()
        vocab, hidden = emb.weight.shape
        ids = sorted({int(t) for t in token_ids})
        if not ids or ids[0] < 0 or ids[-1] >= vocab:
            raise ArchitectureError(
                f"the adapter's token set spans ids {ids[:1]}..{ids[-1:]} but the model's "
                f"embedding has {vocab} rows",
                "build the adapter with this model's tokenizer",
            )
        if residual not in ("orig", "trainable"):
            raise ValueError(f"residual must be orig or trainable, not {residual!r}")
        self.orig_emb = emb
        self.token_ids = ids
        self.residual = residual
        self.init_mode = init
        self.trainable_emb = nn.Embedding(len(ids), hidden)
        self.A = nn.Linear(hidden, dim)
        self.B = nn.Linear(dim, hidden)
        slot = torch.full((vocab,), -1, dtype=torch.long)
        slot[torch.tensor(ids)] = torch.arange(len(ids))
        self.register_buffer("slot", slot, persistent=False)  # token id -> row of trainable_emb
        self._initialise(init, init_seed)
        self.to(device=emb.weight.device, dtype=emb.weight.dtype)  # the seed's cast_dtype

    @torch.no_grad()
    def _initialise(self, init: str, seed: int) -> None:
        self.trainable_emb.weight.copy_(self.orig_emb.weight[self.token_ids].float())
        for p in (self.A.weight, self.A.bias, self.B.weight, self.B.bias):
            p.zero_()
        if init == "lora":  # the init nn.Linear and peft's LoRA A use; B stays zero
            gen = torch.Generator().manual_seed(seed)
            nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5), generator=gen)
        elif init != "seed":
            raise ValueError(f"init must be lora or seed, not {init!r}")

    @property
    def weight(self) -> nn.Parameter:
        """The original embedding matrix, so HF's tied-weight and resize code keeps working."""
        return self.orig_emb.weight

    @property
    def num_embeddings(self) -> int:
        return self.orig_emb.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.orig_emb.embedding_dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        base = self.orig_emb(input_ids)
        slot = self.slot[input_ids]
        in_t = slot >= 0
        # Computed at every position and selected by torch.where: no data-dependent shapes
        # (compile- and DeepSpeed-friendly); A/B cost 2*d*r per token, negligible next to a layer.
        rows = self.trainable_emb(slot.clamp(min=0))
        delta = self.B(self.A(rows))
        resid = rows if self.residual == "trainable" else base
        return torch.where(in_t.unsqueeze(-1), resid + delta, base)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """``orig_emb`` with its T rows replaced by ``trainable_emb`` (the published embedding)."""
        out = self.orig_emb.weight.detach().clone()
        out[self.token_ids] = self.trainable_emb.weight.detach().to(out.dtype)
        return out

    def adapter_parameters(self) -> list[nn.Parameter]:
        """What the adapter trains: T's rows, A and B (never ``orig_emb``)."""
        return [self.trainable_emb.weight, self.A.weight, self.A.bias, self.B.weight, self.B.bias]


def input_embedding(model: Any) -> nn.Embedding:
    """The model's input embedding, refusing what the F-Adapter cannot wrap."""
    if getattr(model.config, "is_encoder_decoder", False):
        raise ArchitectureError(
            f"{type(model).__name__} is an encoder-decoder model",
            "IF_adapter here supports decoder-only causal LMs (the seed's mT5 path is not in "
            "its repository either)",
        )
    emb = model.get_input_embeddings()
    if isinstance(emb, InstructionFingerprint):
        raise FingerprintError(
            "the model already carries an F-Adapter",
            "unwrap it first (tasks.fingerprint.adapter.module.unwrap_adapter)",
        )
    if not isinstance(emb, nn.Embedding):
        raise ArchitectureError(
            f"the input embedding of {type(model).__name__} is a "
            f"{type(emb).__name__}, not nn.Embedding",
            "use a model whose get_input_embeddings() is an nn.Embedding",
        )
    return emb


def inject_adapter(model: Any, adapter: InstructionFingerprint) -> InstructionFingerprint:
    """Freeze every model weight and put ``adapter`` in place of the input embedding.

    Only the adapter's own parameters (T's rows, A, B) are left trainable, as the seed's
    ``inject_adapter_to`` does.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    model.set_input_embeddings(adapter)
    for p in adapter.adapter_parameters():
        p.requires_grad_(True)
    return adapter


@dataclass(frozen=True)
class UnwrapInfo:
    """What :func:`unwrap_adapter` changed in the model."""

    rows_changed: int  # rows of T whose published value differs from the original
    untied: bool  # the LM head was given its own copy of the original embedding


def unwrap_adapter(model: Any) -> tuple[Any, InstructionFingerprint, UnwrapInfo]:
    """Merge ``trainable_emb`` into the embedding and restore the plain ``nn.Embedding``.

    A model whose LM head shares the input embedding (SmolLM2, Gemma) would otherwise publish
    the merged rows as *output* rows too, which the adapter never trained (the seed's models are
    untied); such a head gets its own copy of the original matrix first, and the config says
    ``tie_word_embeddings: false``. Nothing is untied when no row changed (``init: seed``).
    """
    adapter = model.get_input_embeddings()
    if not isinstance(adapter, InstructionFingerprint):
        raise FingerprintError(
            "the model carries no F-Adapter to unwrap",
            "call unwrap_adapter on a model built by inject_adapter",
        )
    emb = adapter.orig_emb
    merged = adapter.merged_weight()
    changed = int((merged[adapter.token_ids] != emb.weight[adapter.token_ids]).any(-1).sum())
    head = model.get_output_embeddings()
    untied = bool(changed and head is not None and head.weight is emb.weight)
    if untied:
        head.weight = nn.Parameter(emb.weight.detach().clone(), requires_grad=False)
        for cfg in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
            cfg.tie_word_embeddings = False
    with torch.no_grad():
        emb.weight.copy_(merged)
    model.set_input_embeddings(emb)
    return model, adapter, UnwrapInfo(changed, untied)


def token_strings_hash(tokenizer: Any, token_ids: Sequence[int]) -> str:
    """sha256 of T's token strings: the same ids mean the same tokens only under one vocabulary."""
    strings = tokenizer.convert_ids_to_tokens([int(t) for t in token_ids])
    return hashlib.sha256("\x00".join(map(str, strings)).encode("utf-8")).hexdigest()[:16]


def save_adapter(
    adapter: InstructionFingerprint,
    folder: Path,
    *,
    tokenizer: Any,
    base_model: str,
    base_identity: str | None = None,
) -> dict:
    """Write ``adapter.safetensors`` + ``adapter.json`` to ``folder``; return the metadata."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params = dict(zip(TENSOR_NAMES, adapter.adapter_parameters(), strict=True))
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in params.items()},
        str(folder / ADAPTER_FILE),
        metadata={"format": "fprun-f-adapter"},
    )
    hidden = adapter.embedding_dim
    meta = {
        "format_version": FORMAT_VERSION,
        "token_ids": adapter.token_ids,
        "n_tokens": len(adapter.token_ids),
        "dim": adapter.A.out_features,
        "hidden_size": hidden,
        "vocab_size": adapter.num_embeddings,
        "init": adapter.init_mode,
        "residual": adapter.residual,
        "dtype": str(adapter.A.weight.dtype).removeprefix("torch."),
        "token_strings_sha256": token_strings_hash(tokenizer, adapter.token_ids),
        "base_model": base_model,
        "base_model_identity": base_identity,
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return meta


@dataclass(frozen=True)
class SavedAdapter:
    """A loaded ``private/adapter/`` folder: metadata and tensors (CPU)."""

    meta: dict
    tensors: dict[str, torch.Tensor]


def load_adapter(path: Path) -> SavedAdapter:
    """Read an adapter folder (or its ``adapter.safetensors``); pickles are refused.

    Raises:
        CheckpointError: A pickle (e.g. the seed's ``instruction_emb.pt``), or a corrupt or
            incomplete file.
        FingerprintError: No adapter at ``path``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES or (
        path.is_dir() and not (path / ADAPTER_FILE).exists() and any(path.glob("*.pt"))
    ):
        raise CheckpointError(
            f"{path} is a pickled adapter (torch.save), which can run code when loaded",
            "pass an fprun adapter folder (adapter.safetensors "
            "+ adapter.json); fprun never unpickles adapters",
        )
    folder = path.parent if path.name == ADAPTER_FILE else path
    if not (folder / ADAPTER_FILE).is_file() or not (folder / META_FILE).is_file():
        raise FingerprintError(
            f"{folder} holds no {ADAPTER_FILE} + {META_FILE}",
            "pass the private/adapter/ folder written by IF_adapter",
        )
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / ADAPTER_FILE))
    except (json.JSONDecodeError, SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{folder} holds a corrupt adapter ({exc})", "re-run the IF_adapter fingerprint step"
        ) from exc
    missing = [n for n in TENSOR_NAMES if n not in tensors]
    if missing or tensors["trainable_emb"].shape[0] != len(meta.get("token_ids", [])):
        raise CheckpointError(
            f"{folder} is incomplete (missing {missing or 'token rows'})",
            "re-run the IF_adapter fingerprint step",
        )
    return SavedAdapter(meta, tensors)


def check_compatible(saved: SavedAdapter, emb: nn.Embedding, tokenizer: Any | None) -> None:
    """Refuse a model the adapter was not built for (hidden size, vocabulary, token strings).

    Raises:
        ArchitectureError: With what differs and what to pass instead.
    """
    vocab, hidden = emb.weight.shape
    meta = saved.meta
    fix = f"verify with the adapter of a model built from {meta.get('base_model')!r}"
    if meta["hidden_size"] != hidden:
        raise ArchitectureError(
            f"the adapter was built for hidden size {meta['hidden_size']} "
            f"but the model's embedding has {hidden}",
            fix,
        )
    if meta["vocab_size"] != vocab or max(meta["token_ids"]) >= vocab:
        raise ArchitectureError(
            f"the adapter's token set was built for a {meta['vocab_size']}-"
            f"token vocabulary but the model's embedding has {vocab} rows",
            fix,
        )
    if tokenizer is not None:
        got = token_strings_hash(tokenizer, meta["token_ids"])
        if got != meta["token_strings_sha256"]:
            raise ArchitectureError(
                "the adapter's token set T names other tokens under this "
                "model's tokenizer (token-string hash differs)",
                fix,
            )


def adapter_from_saved(
    emb: nn.Embedding,
    saved: SavedAdapter,
    *,
    tokenizer: Any | None = None,
    rows: torch.Tensor | None = None,
) -> InstructionFingerprint:
    """Rebuild the trained adapter around ``emb``.

    Args:
        emb: The embedding to wrap (becomes ``orig_emb``).
        saved: From :func:`load_adapter`.
        tokenizer: The model's tokenizer, to check that T names the same tokens.
        rows: Values for ``trainable_emb`` instead of the saved ones (the ownership check puts
            the suspect model's own T rows there).
    """
    check_compatible(saved, emb, tokenizer)
    meta = saved.meta
    adapter = InstructionFingerprint(
        emb, meta["token_ids"], meta["dim"], init="seed", residual=meta["residual"]
    )
    adapter.init_mode = meta["init"]
    state = dict(saved.tensors)
    if rows is not None:
        state["trainable_emb"] = rows
    with torch.no_grad():
        for name, param in zip(TENSOR_NAMES, adapter.adapter_parameters(), strict=True):
            if tuple(state[name].shape) != tuple(param.shape):
                raise ArchitectureError(
                    f"adapter tensor {name} has shape "
                    f"{tuple(state[name].shape)}, expected "
                    f"{tuple(param.shape)}",
                    "re-run the fingerprint step",
                )
            param.copy_(state[name].to(param.dtype))
    return adapter
