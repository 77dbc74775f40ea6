"""Configs of HuRef's steps: invariant extraction, derived control models, comparison.

Torch-free (only pydantic), so ``fprun validate`` and experiment planning stay instant. The token
selection registry lives here too: a plain dict of name -> ``"module:function"``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tasks.config import Strict
from tasks.models.device import DeviceName

# name -> "module:function(view, k, cfg) -> list[str]" (token strings, in the seed's list order)
TOKEN_STRATEGIES: dict[str, str] = {
    "vocab_rank": "tasks.huref.tokens:vocab_rank",
    "corpus": "tasks.huref.corpus:corpus_rarest",
    "file": "tasks.huref.tokens:from_file",
}


class TokenConfig(Strict):
    """How the K tokens are chosen (docs/huref.md). Tokens are strings, so models that share a
    tokenizer get the identical set."""

    strategy: str = Field("vocab_rank", description=f"one of {sorted(TOKEN_STRATEGIES)}")
    corpus: list[str] = Field(
        default_factory=list,
        description="corpus strategy: text files (.txt), data files (.jsonl/.json/.csv/.parquet), "
        "builtin 'reasoning_gym:in_the_year_2889', or 'dataset:NAME[:CONFIG]' (Hub, streamed)",
    )
    text_field: str = Field("text", description="column holding the text in data files/datasets")
    max_docs: int | None = Field(None, ge=1, description="stop counting after this many documents")
    latin_cyrillic_only: bool = Field(
        False,
        description="the seed's Wikipedia filter: keep documents whose every character is "
        "below U+0250 or in U+0400..U+04FF",
    )
    file: str | None = Field(
        None,
        description="file strategy: a huref.json (its token strings) "
        "or a JSON list / one-token-per-line text file",
    )

    @field_validator("strategy")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in TOKEN_STRATEGIES:
            raise ValueError(f"unknown token strategy {v!r}; use one of {sorted(TOKEN_STRATEGIES)}")
        return v


class ExtractConfig(Strict):
    """One model's invariants (``fprun huref extract``; the huref kind's extract step)."""

    model: str | None = Field(None, description="model ref (unused when a model step is wired)")
    name: str | None = Field(None, description="label in result rows (default: the model ref)")
    k: int = Field(4096, ge=2, description="number of selected tokens (the seed: 4096)")
    n_layers: int = Field(2, ge=1, description="last layers used (the seed: 2)")
    tokens: TokenConfig = TokenConfig()
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="compute dtype; bf16/fp16 are meant for GPUs"
    )
    device: DeviceName = Field("auto", description="auto | cpu | cuda | cuda:N")


class DeriveConfig(Strict):
    """A control model made from a base without training: relative noise or a random init."""

    base: str = Field(description="model ref of the base (zoo name, folder)")
    mode: Literal["noise", "random_init", "permute", "rotate_heads", "permute_rotate"] = Field(
        description="noise: W + r*std(W)*N(0,1) per tensor; random_init: same shapes, fresh "
        "N(0, initializer_range) weights; permute: residual-stream permutation; rotate_heads: "
        "per-head rotations of q/k and v/o; permute_rotate: both"
    )
    noise: float = Field(0.0, ge=0, description="relative noise r for mode=noise")
    seed: int = Field(0, description="RNG seed")


class CompareConfig(Strict):
    """The N x N ICS (and PCS) matrix over extracted invariants."""

    pcs: bool = Field(True, description="also stream PCS from the checkpoints (same arch only)")
    mixed_tokens: bool = Field(
        False,
        description="allow models whose token sets differ (cross-family controls); the "
        "rows then say tokens_match=false",
    )
    chunk_mb: int = Field(256, ge=1, description="memory budget of one lockstep read block")
