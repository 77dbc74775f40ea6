"""Batched generation for fingerprint verification: one prefill, early stop, a shrinking batch.

Verification asks one question per prompt: does the completion contain the target? This engine
answers it with the fewest forward passes that give the *same tokens* as plain greedy decoding:

1. **Length-sorted, chunked prefill.** Prompts are sorted by length and prefilled in chunks of
   similar length (left padding inside a chunk), so padding waste stays small while each forward
   still multiplies large matrices. The chunks' KV caches are then joined, left-padded, into one
   decode batch.
2. **The target as a draft.** The target's tokens are appended to every prompt in the prefill and
   checked against the model's own predictions (speculative decoding with a known candidate): a
   fingerprinted model that answers with the target is verified without a single decode step.
   Rejected draft positions are masked out of the cache (position ids skip them), which is
   mathematically the same as never having fed them. Greedy: the accepted prefix is exactly what
   greedy decoding would emit. Sampling: a draft token is accepted with probability p(token) and
   a rejection resamples from p without it, the standard exact rule for a point-mass draft.
3. **Early stop and a shrinking batch.** A row stops once it has shown a stop string (the target),
   EOS, or its token budget; finished rows leave the batch (and cache columns that only they
   needed are trimmed), and the batch ends when all rows have stopped.

Why not ``model.generate``: it keeps finished rows in the batch until every row is done, it
cannot check a known candidate in the prefill (its assisted generation is batch-size 1), and its
sampling draws from one global RNG, so a row's sample depends on which other rows share its
batch. Here each row samples from its own ``torch.Generator`` seeded from (seed, prompt index):
the same seed gives the same tokens whatever the batch size. What is reused: the model's forward
with its ``DynamicCache`` and transformers' temperature/top-k/top-p warpers.

Caches with sliding-window or other non-plain layers (Mistral, Gemma 3) cannot be joined or
masked in the middle safely, so for them the engine prefills each decode batch in one forward,
without the draft, and only drops finished rows.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


@dataclass(frozen=True)
class SamplingParams:
    """Multinomial sampling (the paper's t = 0.7, top_p 0.95, top_k 50); ``None`` means greedy."""

    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0


@dataclass
class Generation:
    """One completion: new tokens only (EOS included when it stopped there)."""

    tokens: list[int]
    text: str  # decoded new tokens, special tokens skipped (the seed's `generated`)
    stop: str  # target | eos | length


@dataclass
class _Row:
    index: int
    prompt: list[int]
    gen: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)
    stop: str | None = None


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """EOS ids as ``generate`` uses them: the generation config's, else the tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, list | tuple) else [eos])}


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    sampling: SamplingParams | None = None,
    draft: Sequence[int] | None = None,
    batch_size: int = 64,
    prefill_tokens: int = 2048,
    seeds: Sequence[int] | None = None,
) -> list[Generation]:
    """Generate a completion for every prompt (token id lists), in input order.

    Args:
        model: A causal LM in eval mode, on its device.
        tokenizer: Its tokenizer (decoding for the stop-string check).
        prompts: Token ids of each prompt, special tokens included as the model should see them.
        max_new_tokens: Budget per row.
        stop_strings: A row stops once its decoded completion contains any of these.
        sampling: ``None`` for greedy; else per-row seeded sampling.
        draft: Candidate continuation checked in the prefill (the target's tokens); it changes
            speed only, never the tokens (greedy) or their distribution (sampling).
        batch_size: Rows decoded together.
        prefill_tokens: Padded tokens per prefill forward (chunks of similar-length prompts).
        seeds: Per-row RNG seeds for sampling (default: ``row_seed(sampling.seed, i)``). Rows
            with the same prompt share one prefill, so many seeded runs of one probe set cost
            one prompt pass.
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    device = next(model.parameters()).device
    if sampling is not None and seeds is None:
        seeds = [row_seed(sampling.seed, i) for i in range(len(prompts))]
    rows = [_Row(i, list(p), _generator(seeds[i], device) if sampling else None)
            for i, p in enumerate(prompts)]
    stopper = _Stopper(tokenizer, eos_ids(model, tokenizer), stop_strings, max_new_tokens)
    chooser = _Chooser(sampling)
    order = sorted(rows, key=lambda r: (-len(r.prompt), r.prompt))  # equal prompts adjacent
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            _decode_batch(model, order[start:start + batch_size], stopper, chooser,
                          list(draft or []), prefill_tokens, device)
    return [Generation(r.tokens, tokenizer.decode(r.tokens, skip_special_tokens=True),
                       r.stop or "length") for r in rows]


def row_seed(seed: int, index: int, stream: int = 0) -> int:
    """Seed of one row's RNG from (run seed, stream, row index), well mixed by SeedSequence.

    Each row owns its generator, so a row's sample never depends on batch size or on which
    other rows share its batch; ``stream`` separates unrelated uses of one seed.
    """
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def _generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class _Stopper:
    """Appends a token to a row and decides whether the row is finished."""

    def __init__(self, tokenizer, eos: set[int], stop_strings: Sequence[str], max_new: int):
        self.tokenizer, self.eos, self.max_new = tokenizer, eos, max_new
        self.stops = list(stop_strings)
        # An occurrence that completes with the newest token spans at most one token per byte,
        # so decoding a short tail is enough (keeps the check O(1) per step).
        longest = max((len(s.encode("utf-8")) for s in self.stops), default=0)
        self.window = 2 * longest + 4

    def push(self, row: _Row, token: int) -> bool:
        """Record ``token``; True when the row must stop."""
        row.tokens.append(token)
        if token in self.eos:
            row.stop = "eos"
        elif self.stops and self._shows_stop(row.tokens):
            row.stop = "target"
        elif len(row.tokens) >= self.max_new:
            row.stop = "length"
        return row.stop is not None

    def _shows_stop(self, tokens: list[int]) -> bool:
        text = self.tokenizer.decode(tokens[-self.window:], skip_special_tokens=True)
        return any(s in text for s in self.stops)


class _Chooser:
    """Next-token choice, greedy or sampled with transformers' warpers."""

    def __init__(self, sampling: SamplingParams | None):
        self.sampling = sampling
        warpers = LogitsProcessorList()
        if sampling is not None:
            warpers.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k > 0:
                warpers.append(TopKLogitsWarper(sampling.top_k))
            if sampling.top_p < 1.0:
                warpers.append(TopPLogitsWarper(sampling.top_p))
        self.warpers = warpers

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.warpers(None, logits.float()), dim=-1)

    def step(self, logits: torch.Tensor, rows: list[_Row]) -> list[int]:
        """One token per row from its last-position logits ``[B, V]``."""
        if self.sampling is None:
            return logits.argmax(-1).tolist()
        probs = self.probs(logits)
        return [int(torch.multinomial(probs[i], 1, generator=r.gen)) for i, r in enumerate(rows)]

    def with_draft(self, logits: torch.Tensor, draft: list[int], row: _Row) -> list[int]:
        """Tokens emitted from the prefill of prompt + draft (logits ``[D + 1, V]``).

        The accepted draft prefix plus one token chosen at the first rejected (or the final)
        position.
        """
        if self.sampling is None:
            pred = logits.argmax(-1).tolist()
            a = next((k for k, t in enumerate(draft) if pred[k] != t), len(draft))
            return pred[:a + 1]
        probs = self.probs(logits)
        for k, t in enumerate(draft):
            u = float(torch.rand(1, generator=row.gen, device=probs.device))
            if u >= float(probs[k, t]):
                rest = probs[k].clone()
                rest[t] = 0.0
                return draft[:k] + [int(torch.multinomial(rest, 1, generator=row.gen))]
        return draft + [int(torch.multinomial(probs[len(draft)], 1, generator=row.gen))]


@dataclass
class _State:
    """The live decode batch: row i owns cache row i, mask row i, next token and position."""

    rows: list[_Row]
    cache: Any
    mask: torch.Tensor  # [B, S] 1 = real token in the cache
    next_tok: torch.Tensor  # [B]
    next_pos: torch.Tensor  # [B]


def _plain(cache: Any) -> bool:
    """Caches whose layers are plain growing tensors can be joined, sliced and holed."""
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _decode_batch(model, rows, stopper, chooser, draft, prefill_tokens, device) -> None:
    plain = _plain(DynamicCache(config=model.config))
    if not plain:
        draft = []
        chunks = [rows]
    else:
        chunks = _chunks(rows, len(draft), prefill_tokens)
    states = [_prefill(model, chunk, stopper, chooser, draft, device) for chunk in chunks]
    states = [s for s in states if s is not None]
    if not states:
        return
    state = states[0] if len(states) == 1 else _join(states)
    while state is not None:
        state.mask = torch.cat([state.mask, state.mask.new_ones(len(state.rows), 1)], dim=1)
        out = model(input_ids=state.next_tok[:, None], attention_mask=state.mask,
                    position_ids=state.next_pos[:, None], past_key_values=state.cache,
                    use_cache=True)
        tokens = chooser.step(out.logits[:, -1], state.rows)
        keep = [i for i, (r, t) in enumerate(zip(state.rows, tokens, strict=True))
                if not stopper.push(r, t)]
        state.next_tok = torch.tensor(tokens, device=device)
        state.next_pos = state.next_pos + 1
        state = _select(state, keep, plain)


def _chunks(rows: list[_Row], n_draft: int, budget: int) -> list[list[_Row]]:
    """Split length-sorted (descending) rows so each chunk's padded prefill fits the budget.

    Only distinct prompts are prefilled, so rows repeating the previous prompt are free.
    """
    chunks: list[list[_Row]] = []
    n_unique = 0
    for r in rows:
        new = not chunks or r.prompt != chunks[-1][-1].prompt
        if chunks and (not new or (n_unique + 1) * (len(chunks[-1][0].prompt) + n_draft) <= budget):
            chunks[-1].append(r)
            n_unique += new
        else:
            chunks.append([r])
            n_unique = 1
    return chunks


def _prefill(model, rows, stopper, chooser, draft, device) -> _State | None:
    """Forward each distinct prompt (+ draft) of a chunk once; emit the first token(s).

    Rows sharing a prompt (seeded sampled runs, BOS samples) get copies of its cache rows.
    Returns the state of the rows that have not stopped yet, or None.
    """
    distinct: dict[tuple[int, ...], int] = {}
    owner = [distinct.setdefault(tuple(r.prompt), len(distinct)) for r in rows]
    width, n_draft = max(len(p) for p in distinct), len(draft)
    ids = torch.zeros(len(distinct), width + n_draft, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, prompt in enumerate(distinct):
        ids[i, width - len(prompt):width] = torch.tensor(prompt, dtype=torch.long)
        ids[i, width:] = torch.tensor(draft, dtype=torch.long)
        mask[i, width - len(prompt):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = {"logits_to_keep": n_draft + 1} if _keeps_logits(model) else {}
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                past_key_values=DynamicCache(config=model.config), use_cache=True, **kwargs)
    logits = out.logits[:, -(n_draft + 1):]
    kept, source, next_tok, next_pos = [], [], [], []
    for r, u in zip(rows, owner, strict=True):
        emitted = (chooser.with_draft(logits[u], draft, r) if n_draft
                   else chooser.step(logits[u, -1:], [r]))
        if any(stopper.push(r, t) for t in emitted):
            continue
        kept.append(r)
        source.append(u)
        next_tok.append(emitted[-1])
        next_pos.append(len(r.prompt) + len(emitted) - 1)  # prompt + accepted draft tokens
    if not kept:
        return None
    idx = torch.tensor(source, device=device)
    cache = out.past_key_values
    if source != list(range(len(distinct))):
        cache.batch_select_indices(idx)
    mask = mask[idx]
    for i, pos in enumerate(next_pos):
        # rejected draft slots become holes: masked, and skipped by the position ids
        mask[i, width + pos - len(kept[i].prompt):] = 0
    state = _State(kept, cache, mask, torch.tensor(next_tok, device=device),
                   torch.tensor(next_pos, device=device))
    if _plain(cache):
        _trim(state)
    return state


def _keeps_logits(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _select(state: _State, keep: list[int], plain: bool) -> _State | None:
    """Keep only the rows ``keep`` (finished rows leave the batch), or None when none is left."""
    if not keep:
        return None
    idx = torch.tensor(keep, device=state.mask.device)
    if len(keep) < len(state.rows):
        state.cache.batch_select_indices(idx)
        state.mask = state.mask[idx]
        state.rows = [state.rows[i] for i in keep]
        state.next_tok, state.next_pos = state.next_tok[idx], state.next_pos[idx]
    if plain:
        _trim(state)
    return state


def _trim(state: _State) -> None:
    """Drop leading cache columns no remaining row attends to (their long prompts are gone)."""
    live = state.mask.any(dim=0).nonzero()
    first = int(live[0]) if len(live) else 0
    if first == 0:
        return
    state.mask = state.mask[:, first:]
    for layer in state.cache.layers:
        layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]


def _join(states: list[_State]) -> _State:
    """Left-pad the chunks' caches and masks to one width and stack them into one batch."""
    width = max(s.mask.shape[1] for s in states)

    def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
        missing = width - t.shape[dim]
        if missing == 0:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    base = states[0].cache
    for li, layer in enumerate(base.layers):
        layer.keys = torch.cat([pad(s.cache.layers[li].keys, 2) for s in states])
        layer.values = torch.cat([pad(s.cache.layers[li].values, 2) for s in states])
    return _State(rows=[r for s in states for r in s.rows], cache=base,
                  mask=torch.cat([pad(s.mask, 1) for s in states]),
                  next_tok=torch.cat([s.next_tok for s in states]),
                  next_pos=torch.cat([s.next_pos for s in states]))
