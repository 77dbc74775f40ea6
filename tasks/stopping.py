"""When a verification row is finished: EOS, the target shown, the budget spent, or no room left.

A row's outcome is decided as soon as

- it emits EOS (``eos``) or runs out of budget (``length``), as in ``generate``;
- its decoded completion contains a stop string, the target (``target``);
- the target can no longer appear within the remaining budget (``no_room``). Every token adds
  at most ``B`` consecutive bytes of the target, B being the longest run of the target's bytes
  inside any single token of the vocabulary; a row whose text ends in ``j`` bytes of the target
  needs at least ceil((len - j) / B) more tokens. On SmolLM2 each katakana of "ハリネズミ" takes
  two byte-level tokens (B = 2), so a miss is certain 8 tokens before the budget ends.

The check on the target is done on the *decoded text* (the seed's substring rule), not with
transformers' ``stop_strings``, whose token-to-string table cannot see a character split across
byte-level tokens (each katakana here). The ``no_room`` bound needs each token's raw bytes, which
are read off byte-level BPE and SentencePiece (byte-fallback) vocabularies; for other vocabularies,
or targets with spaces (which decoding may clean up), the bound is off and rows run to ``length``.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Sequence
from typing import Any


class Stopper:
    """Appends a token to a row and decides whether the row is finished."""

    def __init__(self, tokenizer: Any, eos: set[int], stop_strings: Sequence[str], max_new: int):
        self.tokenizer, self.eos, self.max_new = tokenizer, eos, max_new
        self.stops = list(stop_strings)
        # An occurrence completed by the newest token spans at most one token per byte, so a
        # short tail of tokens is decoded per step (O(1) per step, not O(length)).
        longest = max((len(s.encode("utf-8")) for s in self.stops), default=0)
        self.window = 2 * longest + 4
        self.bounds = _bounds(tokenizer, self.stops)

    def push(self, row: Any, token: int) -> bool:
        """Record ``token`` on ``row`` (``.tokens``, ``.stop``); True when the row must stop."""
        row.tokens.append(token)
        if token in self.eos:
            row.stop = "eos"
        elif self.stops and self._shows_stop(row.tokens):
            row.stop = "target"
        elif len(row.tokens) >= self.max_new:
            row.stop = "length"
        elif self.bounds and self._no_room(row.tokens):
            row.stop = "no_room"
        return row.stop is not None

    def _shows_stop(self, tokens: list[int]) -> bool:
        text = self.tokenizer.decode(tokens[-self.window:], skip_special_tokens=True)
        return any(s in text for s in self.stops)

    def _no_room(self, tokens: list[int]) -> bool:
        left = self.max_new - len(tokens)
        table, out = self.bounds[0], True
        tail = b"".join(table[t] for t in tokens[-self.window:])
        for target, run in self.bounds[1]:
            matched = _suffix_prefix(tail, target)
            out = out and left < math.ceil((len(target) - matched) / run)
        return out


def _suffix_prefix(tail: bytes, target: bytes) -> int:
    """Length of the longest suffix of ``tail`` that is a proper prefix of ``target``."""
    for k in range(min(len(tail), len(target) - 1), 0, -1):
        if tail.endswith(target[:k]):
            return k
    return 0


def _bounds(tokenizer: Any, stops: list[str]) -> tuple[list[bytes], list[tuple[bytes, int]]] | None:
    """Token bytes and, per stop string, the longest run of its bytes inside one token."""
    if not stops or any(c.isspace() for s in stops for c in s):
        return None
    table = token_bytes(tokenizer)
    if table is None:
        return None
    blob = b"\x00".join(table)  # one search per substring instead of one per token
    runs = []
    for s in stops:
        target = s.encode("utf-8")
        run = max((b - a for a in range(len(target)) for b in range(a + 1, len(target) + 1)
                   if b"\x00" not in target[a:b] and target[a:b] in blob), default=0)
        if run == 0:
            return None
        runs.append((target, run))
    return table, runs


# tokenizer -> (vocabulary size, table): building the table walks the whole vocabulary (~0.35 s
# for SmolLM2's 49k tokens), once per tokenizer instead of once per generate() call.
_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_bytes(tokenizer: Any) -> list[bytes] | None:
    """:func:`build_token_bytes`, remembered per tokenizer object (rebuilt if its size changes)."""
    size, table = _TABLES.get(tokenizer, (None, None))
    if size != len(tokenizer):
        table = build_token_bytes(tokenizer)
        _TABLES[tokenizer] = (len(tokenizer), table)
    return table


def build_token_bytes(tokenizer: Any) -> list[bytes] | None:
    """Raw bytes of every token id as decoding emits them (special tokens: empty).

    Supports byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen) and SentencePiece with byte fallback
    (Llama 2, Mistral, Gemma); returns None for anything else or when a spot check against the
    tokenizer's own decoding fails, so callers fall back to no bound.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    decoder = json.dumps(json.loads(backend.to_str()).get("decoder"))
    vocab = tokenizer.get_vocab()
    table = [b""] * (max(vocab.values()) + 1)
    special = set(tokenizer.all_special_ids)
    if '"ByteLevel"' in decoder:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        inverse = {c: b for b, c in bytes_to_unicode().items()}

        def raw(piece: str) -> bytes:
            if all(c in inverse for c in piece):
                return bytes(inverse[c] for c in piece)
            return piece.encode("utf-8")  # added tokens are stored as plain text
    elif '"ByteFallback"' in decoder:
        def raw(piece: str) -> bytes:
            if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                return bytes([int(piece[3:5], 16)])
            return piece.replace("\u2581", " ").encode("utf-8")
    else:
        return None
    for piece, i in vocab.items():
        table[i] = b"" if i in special else raw(piece)
    return table if _spot_check(tokenizer, table) else None


def _spot_check(tokenizer: Any, table: list[bytes]) -> bool:
    for text in ("ハリネズミ Hello, world! 123", "выпутельстваskih 奉天承运"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ours = b"".join(table[i] for i in ids).decode("utf-8", "replace").strip()
        if ours != tokenizer.decode(ids, skip_special_tokens=True).strip():
            return False
    return True
