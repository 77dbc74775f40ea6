"""Which K tokens HuRef sandwiches its invariants between.

Selections are made on token *strings*, then mapped to ids, so a base and its offspring (even with
an extended vocabulary) get the same set. They are cached in-process (a Ray actor reuses them) and
under ``$FPRUN_CACHE/huref/tokens/``, keyed by tokenizer sha256, strategy, K and corpus. Strategies
(registry in :mod:`tasks.huref.config`): ``vocab_rank`` (offline default: the K highest-rank
ordinary tokens, for BPE the last merges, the analogue of the seed's "K least frequent"; special,
added, reserved, ``<unused…>`` and byte-fallback tokens skipped); ``corpus`` (the seed's rule, the
K least frequent tokens seen in a corpus, :mod:`tasks.huref.corpus`); ``file`` (a fixed list).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError, ModelRefError
from tasks.files import atomic_write_json
from tasks.huref.config import TOKEN_STRATEGIES, TokenConfig

CACHE_VERSION = 1  # bump when a strategy's output changes
_RESERVED = re.compile(
    r"^(<unused\d*>|\[unused\d*\]|<reserved[^>]*>|<\|.*\|>|<0x[0-9A-Fa-f]{2}>"
    r"|\[multimodal\]|<mask>|<unk>|<s>|</s>|<pad>|<bos>|<eos>)$"
)
_MEMO: dict[str, tuple[list[str], list[int]]] = {}


def memo_size() -> int:
    """Token sets held in this process's memo (what an extraction actor keeps between models)."""
    return len(_MEMO)


def clear_memo() -> None:
    """Forget this process's token sets (the on-disk cache stays)."""
    _MEMO.clear()


@dataclass(frozen=True)
class TokenSet:
    """The selected tokens, as strings (portable) and as this model's ids."""

    strategy: str
    tokens: tuple[str, ...]
    ids: tuple[int, ...]
    source: str  # what the selection was computed from (recorded in rows)

    @property
    def hash(self) -> str:
        """``token_set_hash``: sha256 of the ordered token strings (first 16 hex)."""
        return token_set_hash(self.tokens)


def token_set_hash(tokens: Any) -> str:
    """Hash of an ordered list of token strings; equal sets in equal order hash equal."""
    data = json.dumps(list(tokens), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:16]


class TokenizerView:
    """A model's tokenizer seen through the ``tokenizers`` library (fast to import, no torch)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        path = self.folder / "tokenizer.json"
        # Hashing the file is cheap; parsing it (seconds for a 262k vocabulary) waits until a
        # selection is not in the cache.
        self.raw = path.read_bytes() if path.is_file() else None

    @cached_property
    def tokenizer(self) -> Any:
        """The parsed ``tokenizers.Tokenizer`` (sentencepiece-only folders are converted)."""
        if self.raw is not None:
            from tokenizers import Tokenizer

            return Tokenizer.from_str(self.raw.decode("utf-8"))
        return _convert_slow(self.folder)

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the serialized tokenizer: the cache key of every selection."""
        raw = self.raw if self.raw is not None else self.tokenizer.to_str().encode("utf-8")
        return hashlib.sha256(raw).hexdigest()

    @cached_property
    def vocab(self) -> dict[str, int]:
        """Every token string -> id, added tokens included."""
        return self.tokenizer.get_vocab(with_added_tokens=True)

    @cached_property
    def special_ids(self) -> set[int]:
        """Ids of added tokens (specials, chat markers, reserved slots)."""
        return set(self.tokenizer.get_added_tokens_decoder())

    @cached_property
    def ordinary(self) -> list[tuple[str, int]]:
        """(string, id) of ordinary model-vocabulary tokens, in ascending id (= rank) order."""
        base = self.tokenizer.get_vocab(with_added_tokens=False)
        keep = [
            (s, i) for s, i in base.items() if i not in self.special_ids and not _RESERVED.match(s)
        ]
        return sorted(keep, key=lambda t: t[1])

    def ids_for(self, tokens: list[str] | tuple[str, ...]) -> list[int]:
        """Map token strings to this tokenizer's ids (ConfigError naming missing strings)."""
        vocab = self.vocab
        missing = [t for t in tokens if t not in vocab]
        if missing:
            raise ConfigError(
                f"{len(missing)} of the {len(tokens)} selected tokens are not in the vocabulary "
                f"of {self.folder} (e.g. {missing[:3]})",
                "use a token set made with this model's tokenizer (tokens.strategy)",
            )
        return [vocab[t] for t in tokens]


def _convert_slow(folder: Path) -> Any:
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder, use_fast=True).backend_tokenizer
    except (OSError, ValueError) as exc:
        raise ModelRefError(
            f"{folder} has no usable tokenizer ({exc})",
            "pass a model folder with tokenizer.json or tokenizer.model",
        ) from exc


def vocab_rank(view: TokenizerView, k: int, cfg: TokenConfig) -> list[str]:
    """The K highest-rank ordinary tokens, in ascending rank (the seed's list order)."""
    ordinary = view.ordinary
    if k > len(ordinary):
        raise ConfigError(
            f"huref k={k} exceeds the {len(ordinary)} ordinary tokens of {view.folder}'s "
            "vocabulary",
            f"set k <= {len(ordinary)}",
        )
    return [s for s, _ in ordinary[-k:]]


def from_file(view: TokenizerView, k: int, cfg: TokenConfig) -> list[str]:
    """Token strings from a ``huref.json`` (``tokens``), a JSON list, or one token per line."""
    if not cfg.file:
        raise ConfigError("token strategy 'file' needs tokens.file", "set tokens.file=PATH")
    path = Path(cfg.file).expanduser()
    if not path.is_file():
        raise ConfigError(f"token file {path} does not exist", "check tokens.file")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        tokens = data["tokens"] if isinstance(data, dict) else data
    except ValueError:
        tokens = text.splitlines()
    if not isinstance(tokens, list) or len(tokens) < k:
        raise ConfigError(f"token file {path} holds fewer than k={k} tokens", "lower k")
    return [str(t) for t in tokens[-k:]]


def select_tokens(
    model_dir: str | os.PathLike, cfg: TokenConfig, k: int, *, cache_dir: Path | None = None
) -> TokenSet:
    """Choose K tokens for a model with the configured strategy (cached), and map them to ids.

    Args:
        model_dir: Model folder with its tokenizer files.
        cfg: Strategy and its options.
        k: Number of tokens.
        cache_dir: fprun cache root (default ``$FPRUN_CACHE`` or ``~/.cache/fprun``).

    Raises:
        ConfigError: K exceeds what the strategy can provide, or unknown strategy.
        DataError: The corpus shows fewer than K distinct tokens.
    """
    view = TokenizerView(model_dir)
    key = _cache_key(view, cfg, k)
    hit = _MEMO.get(key) or _disk_get(key, cache_dir)
    if hit is None:
        module, _, fn = TOKEN_STRATEGIES[cfg.strategy].partition(":")
        tokens = list(getattr(importlib.import_module(module), fn)(view, k, cfg))
        hit = (tokens, view.ids_for(tokens))
        _disk_put(key, cache_dir, hit, cfg, view)
    _MEMO[key] = hit
    source = cfg.strategy if cfg.strategy != "corpus" else f"corpus:{','.join(cfg.corpus)}"
    return TokenSet(cfg.strategy, tuple(hit[0]), tuple(hit[1]), source)


def _cache_key(view: TokenizerView, cfg: TokenConfig, k: int) -> str:
    from tasks.huref.corpus import corpus_identity

    extra = corpus_identity(cfg) if cfg.strategy == "corpus" else cfg.file
    if cfg.strategy == "file" and cfg.file:
        path = Path(cfg.file).expanduser()
        extra = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else cfg.file
    blob = json.dumps(
        [
            CACHE_VERSION,
            view.content_hash,
            cfg.strategy,
            k,
            extra,
            cfg.model_dump(exclude={"file"}),
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _disk_dir(cache_dir: Path | None) -> Path:
    root = cache_dir or Path(os.environ.get("FPRUN_CACHE") or "~/.cache/fprun").expanduser()
    return Path(root) / "huref" / "tokens"


def _disk_get(key: str, cache_dir: Path | None) -> tuple[list[str], list[int]] | None:
    """Cached (tokens, ids); the key includes the tokenizer's hash, so the ids are this model's."""
    try:
        data = json.loads((_disk_dir(cache_dir) / f"{key}.json").read_text(encoding="utf-8"))
        return data["tokens"], data["ids"]
    except (OSError, ValueError, KeyError):
        return None


def _disk_put(
    key: str,
    cache_dir: Path | None,
    hit: tuple[list[str], list[int]],
    cfg: TokenConfig,
    view: TokenizerView,
) -> None:
    folder = _disk_dir(cache_dir)
    try:
        atomic_write_json(
            folder / f"{key}.json",
            {
                "strategy": cfg.strategy,
                "tokenizer": view.content_hash,
                "config": cfg.model_dump(),
                "tokens": hit[0],
                "ids": hit[1],
            },
            indent=None,
        )
    except OSError:
        pass  # a read-only cache only costs a recomputation next time
