"""Batched generation for fingerprint verification: one prompt pass, early stop, shrinking batch.

Answers "does the completion contain the target?" with the fewest forwards that give the *same
tokens* as plain greedy decoding: prompts length-sorted, their shared prefix run once, the rest in
chunks written straight into the decode batch's KV buffers (``tasks.generation.kv_slab``); the
target's tokens checked as a draft in that pass (exact for greedy, the standard point-mass rule
when sampling); rows dropped once their outcome is known (``tasks.generation.stopping``). Each row
samples from its own generator seeded by (seed, prompt index), so, unlike with ``model.generate``,
its tokens never depend on the batch. Sliding-window models (Mistral, Gemma 3) skip prefix/draft.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Sequence
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

from tasks.generation.cpu_linear import onednn_linear
from tasks.generation.decode import State, decode, trim
from tasks.generation.kv_slab import SlabBuffer, SlabLayer
from tasks.generation.stopping import Stopper

# One more prompt-pass forward costs about as much as this many padded tokens (on CPU, each
# forward streams all weights once: ~160 ms for SmolLM2 against ~1.7 ms per token).
FORWARD_COST_TOKENS = 96
MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a separate pass


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
    stop: str  # target | eos | length | no_room (see tasks.generation.stopping)


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
    onednn: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
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
        onednn: Run CPU fp32 linear layers through oneDNN (``tasks.generation.cpu_linear``: fp32
            products in another summation order, 2-2.7x faster on AMD CPUs); False keeps
            PyTorch's path.
        on_batch: Called as ``on_batch(rows_done, rows_total)`` after each decoded batch.
    """
    # Over 60 lines on purpose: the phases (prefill, drafts, decode) in order; long docstring.
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    device = next(model.parameters()).device
    if sampling is not None and seeds is None:
        seeds = [row_seed(sampling.seed, i) for i in range(len(prompts))]
    rows = [
        _Row(i, list(p), _generator(seeds[i], device) if sampling else None)
        for i, p in enumerate(prompts)
    ]
    stopper = Stopper(tokenizer, eos_ids(model, tokenizer), stop_strings, max_new_tokens)
    chooser = _Chooser(sampling)
    order = sorted(rows, key=lambda r: (-len(r.prompt), r.prompt))  # equal prompts adjacent
    with torch.inference_mode(), onednn_linear(model, enabled=onednn):
        for start in range(0, len(order), batch_size):
            _decode_batch(
                model,
                order[start : start + batch_size],
                stopper,
                chooser,
                list(draft or []),
                prefill_tokens,
                device,
            )
            if on_batch is not None:
                on_batch(min(start + batch_size, len(order)), len(order))
    return [
        Generation(
            r.tokens, tokenizer.decode(r.tokens, skip_special_tokens=True), r.stop or "length"
        )
        for r in rows
    ]


def row_seed(seed: int, index: int, stream: int = 0) -> int:
    """Seed of one row's RNG from (run seed, stream, row index), well mixed by SeedSequence.

    Each row owns its generator, so a row's sample never depends on batch size or on which
    other rows share its batch; ``stream`` separates unrelated uses of one seed.
    """
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def _generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


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
            return pred[: a + 1]
        probs = self.probs(logits)
        for k, t in enumerate(draft):
            u = float(torch.rand(1, generator=row.gen, device=probs.device))
            if u >= float(probs[k, t]):
                rest = probs[k].clone()
                rest[t] = 0.0
                return draft[:k] + [int(torch.multinomial(rest, 1, generator=row.gen))]
        return draft + [int(torch.multinomial(probs[len(draft)], 1, generator=row.gen))]


def _plain(layers: list) -> bool:
    """Caches whose layers are plain growing tensors can be joined, sliced and holed."""
    return all(type(layer) is DynamicLayer for layer in layers)


def _decode_batch(model, rows, stopper, chooser, draft, prefill_tokens, device) -> None:
    layers = DynamicCache(config=model.config).layers  # the model's cache layout
    plain = _plain(layers)
    prefix = _shared_prefix(rows) if plain else []
    shared = _prefix_kv(model, prefix, device) if prefix else None
    groups = _chunks(rows, len(prefix), len(draft), prefill_tokens) if plain else [rows]
    draft = draft if plain else []
    distinct = [len({tuple(r.prompt) for r in g}) for g in groups]
    if plain:  # the chunks write into the decode batch's buffers, right-aligned to one width
        width = max(len(r.prompt) for r in rows) + len(draft)
        buffers = [SlabBuffer(sum(distinct), width, stopper.max_new - 1) for _ in layers]
    states, offset = [], 0
    for i, group in enumerate(groups):
        cache = DynamicCache(config=model.config)
        if plain:
            chunk = slice(offset, offset + distinct[i])
            first = width - (max(len(r.prompt) for r in group) + len(draft))
            cache.layers = [SlabLayer.region(b, chunk, first) for b in buffers]
        state = _prefill(model, group, stopper, chooser, draft, shared, len(prefix), cache, device)
        if state is not None:
            state.source = [offset + s for s in state.source]
            if plain:
                pad = state.mask.new_zeros(len(state.rows), first)
                state.mask = torch.cat([pad, state.mask], dim=1)
            states.append(state)
            if chooser.sampling is None:
                # A row left alive means decode steps will run anyway, and the draft only pays
                # when it ends every row in the prompt pass: greedy stops checking it in later
                # chunks. (Sampling checks it everywhere: no row's random stream may depend on
                # its batch.)
                draft = []
        offset += distinct[i]
    if not states:
        return
    state = _stack(states, buffers, model) if plain else states[0]
    if state.source != list(range(offset)):  # rows done in the prompt pass, or sharing a prompt
        state.cache.batch_select_indices(torch.tensor(state.source, device=device))
    if plain:
        trim(state)
    decode(model, state, stopper, chooser, plain, device)


def _stack(states: list[State], buffers: list[SlabBuffer], model) -> State:
    """The chunks' states as one decode batch over the buffers they filled (no KV copy)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [b.layer() for b in buffers]
    return State(
        rows=[r for s in states for r in s.rows],
        cache=cache,
        mask=torch.cat([s.mask for s in states]),
        next_tok=torch.cat([s.next_tok for s in states]),
        next_pos=torch.cat([s.next_pos for s in states]),
        source=[i for s in states for i in s.source],
    )


def _shared_prefix(rows: list[_Row]) -> list[int]:
    """The token prefix every prompt of the batch starts with (system prompt, fixed wording).

    It is prefilled once and its cache copied to every row; each prompt keeps at least one
    token of its own, whose logits the chunk pass computes.
    """
    prompts = {tuple(r.prompt) for r in rows}
    if len(prompts) < 2:
        return []
    first, n = next(iter(prompts)), min(len(p) for p in prompts) - 1
    for p in prompts:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return list(first[:n]) if n >= MIN_SHARED_PREFIX else []


def _prefix_kv(model, prefix: list[int], device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    cache = DynamicCache(config=model.config)
    model(
        input_ids=torch.tensor([prefix], device=device),
        past_key_values=cache,
        use_cache=True,
        **({"logits_to_keep": 1} if _keeps_logits(model) else {}),
    )
    return [(layer.keys, layer.values) for layer in cache.layers]


def _chunks(rows: list[_Row], n_shared: int, n_draft: int, budget: int) -> list[list[_Row]]:
    """Group length-sorted rows into prompt-pass forwards at the least estimated cost.

    Cost = padded tokens + :data:`FORWARD_COST_TOKENS` per forward (every forward streams all
    weights once), found by dynamic programming over the sorted prompts; a forward holds at most
    ``budget`` padded tokens (memory). Rows repeating a prompt share its pass.
    """
    groups = [list(g) for _, g in itertools.groupby(rows, key=lambda r: r.prompt)]
    widths = [len(g[0].prompt) - n_shared + n_draft for g in groups]
    best, cut = [0.0] + [math.inf] * len(groups), [0] * (len(groups) + 1)
    for i in range(1, len(groups) + 1):
        for j in range(i - 1, -1, -1):
            padded = (i - j) * widths[j]  # widths fall along the sorted rows: j is the widest
            if padded > budget and i - j > 1:
                break
            if best[j] + padded + FORWARD_COST_TOKENS < best[i]:
                best[i], cut[i] = best[j] + padded + FORWARD_COST_TOKENS, j
    chunks, i = [], len(groups)
    while i > 0:
        chunks.append([r for g in groups[cut[i] : i] for r in g])
        i = cut[i]
    return chunks[::-1]


def _prefill(model, rows, stopper, chooser, draft, shared, n_shared, cache, device) -> State | None:
    """Forward each distinct prompt (+ draft) of a chunk once; emit the first token(s).

    With a shared prefix, only each prompt's rest is fed, after copies of the prefix's cache
    (the padding sits between prefix and rest; masks and position ids make that exact).
    The cache rows are written into ``cache`` (one per distinct prompt); the unfinished rows'
    state names the cache row each reads (``source``), selected by the caller.
    """
    distinct: dict[tuple[int, ...], int] = {}
    owner = [distinct.setdefault(tuple(r.prompt), len(distinct)) for r in rows]
    n, n_draft = len(distinct), len(draft)
    width = max(len(p) for p in distinct) - n_shared
    ids = torch.zeros(n, width + n_draft, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, prompt in enumerate(distinct):
        rest = prompt[n_shared:]
        ids[i, width - len(rest) : width] = torch.tensor(rest, dtype=torch.long)
        ids[i, width:] = torch.tensor(draft, dtype=torch.long)
        mask[i, width - len(rest) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = n_shared + (mask.cumsum(-1) - 1).clamp(min=0)
    for li, (k, v) in enumerate(shared or []):
        cache.update(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1), li)
    mask = torch.cat([mask.new_ones(n, n_shared), mask], dim=1)
    kwargs = {"logits_to_keep": n_draft + 1} if _keeps_logits(model) else {}
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        **kwargs,
    )
    logits = out.logits[:, -(n_draft + 1) :]
    kept, source, accepted, next_tok = [], [], [], []
    for r, u in zip(rows, owner, strict=True):
        emitted = (
            chooser.with_draft(logits[u], draft, r)
            if n_draft
            else chooser.step(logits[u, -1:], [r])
        )
        if not any(stopper.push(r, t) for t in emitted):
            kept += [r]
            source += [u]
            accepted += [len(emitted) - 1]  # draft tokens the row keeps
            next_tok += [emitted[-1]]
    if not kept:
        return None
    mask = mask[torch.tensor(source, device=device)]
    for i, a in enumerate(accepted):  # rejected draft slots become holes, skipped by positions
        mask[i, mask.shape[1] - n_draft + a :] = 0
    next_pos = [len(r.prompt) + a for r, a in zip(kept, accepted, strict=True)]
    return State(
        kept,
        cache,
        mask,
        torch.tensor(next_tok, device=device),
        torch.tensor(next_pos, device=device),
        source,
    )


def _keeps_logits(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters
