"""When a verification row is finished: EOS, the target shown, the budget spent, or no room left.

A row stops on EOS (``eos``) or at its budget (``length``), as in ``generate``; once its decoded
text contains the target (``target``: the seed's substring rule on text, since transformers'
``stop_strings`` cannot see a character split across byte-level tokens); or once the target can
no longer appear within the remaining budget (``no_room``). That bound is exact for the
vocabulary: a shortest-path search over the token byte table from each state of the target's
string-matching automaton, done once per tokenizer and target. It needs raw token bytes (byte-level
BPE, SentencePiece byte-fallback); for other vocabularies or targets with spaces it is off.
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
        text = self.tokenizer.decode(tokens[-self.window :], skip_special_tokens=True)
        return any(s in text for s in self.stops)

    def _no_room(self, tokens: list[int]) -> bool:
        left = self.max_new - len(tokens)
        table, out = self.bounds[0], True
        tail = b"".join(table[t] for t in tokens[-self.window :])
        for target, need in self.bounds[1]:
            out = out and left < need[_suffix_prefix(tail, target)]
        return out


def _suffix_prefix(tail: bytes, target: bytes) -> int:
    """Length of the longest suffix of ``tail`` that is a proper prefix of ``target``."""
    for k in range(min(len(tail), len(target) - 1), 0, -1):
        if tail.endswith(target[:k]):
            return k
    return 0


Bounds = tuple[list[bytes], list[tuple[bytes, list[int]]]]


def _bounds(tokenizer: Any, stops: list[str]) -> Bounds | None:
    """Token bytes and, per stop string, :func:`min_tokens` from each matched-prefix length."""
    if not stops or any(c.isspace() for s in stops for c in s):
        return None
    table = token_bytes(tokenizer)
    if table is None:
        return None
    needs = []
    for s in stops:
        target = s.encode("utf-8")
        need = _needs(tokenizer, table, target)
        if need is None:
            return None
        needs.append((target, need))
    return table, needs


def min_tokens(table: Sequence[bytes], target: bytes) -> list[int] | None:
    """``need[j]``: the fewest tokens after which a text ending in exactly ``j`` bytes of
    ``target`` (its longest suffix that is a prefix of the target, ``j < len(target)``) can
    contain the target; None when no token sequence spells it.

    Hand-written because no library bounds stop strings over a byte vocabulary: the string-
    matching automaton of ``target`` (Knuth-Morris-Pratt) has one state per matched length, so
    the text's future depends on its past only through ``j``. Each token is one edge from every
    state (to a hit, or to the state its bytes leave); a shortest-path relaxation over those
    edges gives ``need``. Tokens without any of the target's bytes all lead to state 0, so one of
    them stands for all.
    """
    n, alphabet = len(target), set(target)
    delta = [dict.fromkeys(alphabet, 0) for _ in range(n)]  # bytes outside the target -> 0
    delta[0][target[0]], restart = 1, 0
    for j in range(1, n):
        delta[j].update(delta[restart])
        delta[j][target[j]] = j + 1
        restart = delta[restart][target[j]]
    hit, edges = [False] * n, [set() for _ in range(n)]
    for piece in {p for p in table if p and alphabet.intersection(p)}:
        for j in range(n):
            state = j
            for byte in piece:
                state = delta[state].get(byte, 0)
                if state == n:
                    hit[j] = True
                    break
            else:
                edges[j].add(state)
    if any(p and not alphabet.intersection(p) for p in table):
        for e in edges:
            e.add(0)
    need = [1 if h else math.inf for h in hit]
    for _ in range(n):  # Bellman-Ford: every shortest path visits at most n states
        need = [
            1 if hit[j] else 1 + min((need[k] for k in edges[j]), default=math.inf)
            for j in range(n)
        ]
    return None if math.isinf(need[0]) else [int(min(d, 2**31)) for d in need]


# (tokenizer, target) -> need: the search walks every token with a byte of the target (~0.1 s).
_NEEDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _needs(tokenizer: Any, table: list[bytes], target: bytes) -> list[int] | None:
    cached = _NEEDS.setdefault(tokenizer, {})
    key = (len(table), target)
    if key not in cached:
        cached[key] = min_tokens(table, target)
    return cached[key]


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
