"""The independent pool of the provenance benchmark: models not derived from the owner's.

A detector's false-positive rate is calibrated on these, so the pool mixes real unrelated models
(a zoo name, hub id or folder) with random inits: the owner's architecture re-initialised
(:func:`tasks.huref.controls.derive` mode ``random_init``) or a tiny family from
:mod:`tasks.models.tiny`, by default with the owner's tokenizer so it shares the owner's tokens.
:func:`expand` turns the config's entries into one item per model; :func:`build_pool_model`
materialises an item (random inits are written, references are only resolved).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tasks.config import Strict
from tasks.errors import ConfigError
from tasks.files import atomic_path, check_out
from tasks.models.zoo import TINY_MODELS

TINY_FAMILIES = [name.removeprefix("tiny-") for name in TINY_MODELS]
# Added to a tiny member's seed before torch.manual_seed, so pool member "llama" seed 0 is never
# the zoo's tiny-llama (seed 0), the usual test owner.
POOL_SEED_OFFSET = 1_000_003


class PoolEntry(Strict):
    """One line of the pool: a reference, or random inits over several seeds."""

    ref: str | None = Field(None, description="zoo name, hub id or local folder")
    random_init: Literal["owner"] | str | None = Field(
        None,
        description="'owner' (the owner's architecture re-initialised) or a tiny family: "
        + ", ".join(TINY_FAMILIES),
    )
    seeds: list[int] = Field([0], min_length=1, description="random_init: one model per seed")
    label: str | None = Field(None, description="name in tables (default: ref or family)")

    @model_validator(mode="after")
    def _one_source(self) -> PoolEntry:
        if (self.ref is None) == (self.random_init is None):
            raise ValueError("a pool entry takes exactly one of ref and random_init")
        if self.random_init not in (None, "owner", *TINY_FAMILIES):
            raise ValueError(
                f"random_init {self.random_init!r} is not 'owner' or a tiny family "
                f"({', '.join(TINY_FAMILIES)})"
            )
        if self.ref is not None and "seeds" in self.model_fields_set:
            raise ValueError(f"seeds apply to random_init entries, not to ref {self.ref}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        return self


def expand(entries: list[PoolEntry]) -> list[dict[str, Any]]:
    """One item per pool model: ``{"label", "ref", "random_init", "seed"}`` (unused ones None).

    Raises:
        ConfigError: Two items would share a label.
    """
    items = []
    for entry in entries:
        if entry.ref is not None:
            items.append(
                {
                    "label": entry.label or entry.ref,
                    "ref": entry.ref,
                    "random_init": None,
                    "seed": None,
                }
            )
            continue
        name = entry.label or f"random-init {entry.random_init}"
        items += [
            {"label": f"{name} s{s}", "ref": None, "random_init": entry.random_init, "seed": s}
            for s in entry.seeds
        ]
    labels = [item["label"] for item in items]
    repeated = sorted({lab for lab in labels if labels.count(lab) > 1})
    if repeated:
        raise ConfigError(
            f"pool labels repeat: {', '.join(repeated)}", "give the entries distinct labels"
        )
    return items


def build_pool_model(
    item: dict[str, Any], owner_dir: Path, out: Path, tokenizer_dir: Path | None = None
) -> Path:
    """The folder of one pool model: a reference resolved, or a random init written to ``out``.

    Args:
        item: One of :func:`expand`'s items.
        owner_dir: The owner's model folder (architecture for ``owner``, default tokenizer).
        out: New or empty folder for a random init (unused for a reference).
        tokenizer_dir: Tokenizer of a tiny-family member; default the owner's.

    Raises:
        ModelRefError, CheckpointError: A reference that does not resolve to a safetensors folder.
    """
    if item.get("ref"):
        from tasks.merge.preflight import resolve_ref

        return resolve_ref(item["ref"])
    out = Path(out)
    check_out(out, flag="pool model output")
    with atomic_path(out) as tmp:
        if item["random_init"] == "owner":
            from tasks.huref.config import DeriveConfig
            from tasks.huref.controls import derive

            cfg = DeriveConfig(base=str(owner_dir), mode="random_init", seed=item["seed"])
            derive(Path(owner_dir), tmp, cfg)
        else:
            tiny_random_init(
                item["random_init"], item["seed"], Path(tokenizer_dir or owner_dir), tmp
            )
    return out


def tiny_random_init(family: str, seed: int, tokenizer_dir: Path, out: Path) -> None:
    """A tiny-family model (tasks.models.tiny's config) sized to ``tokenizer_dir``'s vocabulary.

    Not ``build_tiny_model``: that reads the shared tiny tokenizer's special tokens only.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from tasks.models.cache import save_model_on_any_rank
    from tasks.models.tiny import TinyVocab
    from tasks.provenance.transforms import copy_tokenizer_files

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    eos = tok.eos_token_id if tok.eos_token_id is not None else 0
    bos = tok.bos_token_id if tok.bos_token_id is not None else eos
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    vocab = TinyVocab(size=len(tok), bos_id=bos, eos_id=eos, pad_id=pad)
    module, _, func = TINY_MODELS[f"tiny-{family}"].partition(":")
    config = getattr(importlib.import_module(module), func)(vocab)
    torch.manual_seed(POOL_SEED_OFFSET + seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    save_model_on_any_rank(model, out)
    copy_tokenizer_files(tokenizer_dir, out)
