"""The decode phase of verification's generation: one token per row per step, a shrinking batch.

Kept apart from the prompt pass (``tasks.generation.engine``) so each stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tasks.generation.kv_slab import SlabLayer


@dataclass
class State:
    """The live decode batch: row i owns cache row i, mask row i, next token and position."""

    rows: list
    cache: Any
    mask: torch.Tensor  # [B, S] 1 = real token in the cache
    next_tok: torch.Tensor  # [B]
    next_pos: torch.Tensor  # [B]
    source: list[int] = field(default_factory=list)  # cache row each row reads, before selection


def decode(model, state: State, stopper, chooser, plain: bool, device) -> None:
    """Decode ``state`` one token per row per step until every row has stopped."""
    while state is not None:
        state.mask = torch.cat([state.mask, state.mask.new_ones(len(state.rows), 1)], dim=1)
        out = model(
            input_ids=state.next_tok[:, None],
            attention_mask=state.mask,
            position_ids=state.next_pos[:, None],
            past_key_values=state.cache,
            use_cache=True,
        )
        tokens = chooser.step(out.logits[:, -1], state.rows)
        keep = [
            i
            for i, (r, t) in enumerate(zip(state.rows, tokens, strict=True))
            if not stopper.push(r, t)
        ]
        state.next_tok = torch.tensor(tokens, device=device)
        state.next_pos = state.next_pos + 1
        state = select(state, keep, plain)


def select(state: State, keep: list[int], plain: bool) -> State | None:
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
        trim(state)
    return state


def trim(state: State) -> None:
    """Drop leading cache columns no remaining row attends to (their long prompts are gone)."""
    live = state.mask.any(dim=0).nonzero()
    first = int(live[0]) if len(live) else 0
    if first == 0:
        return
    state.mask = state.mask[:, first:]
    for layer in state.cache.layers:
        if isinstance(layer, SlabLayer):
            layer.drop_leading(first)
        else:
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
