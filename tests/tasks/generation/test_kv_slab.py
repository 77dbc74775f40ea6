"""The in-place KV layer gives bitwise the logits of transformers' DynamicLayer through prefill,
decode steps, rows leaving the batch and leading columns dropped, and never regrows its buffer
while it has room."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM
from transformers.cache_utils import DynamicCache

from tasks.generation.kv_slab import SlabBuffer, SlabLayer


def _with_room(layer, room: int) -> SlabLayer:
    """A DynamicLayer's cache copied into a slab with ``room`` free columns."""
    k, v = layer.keys, layer.values
    kb, vb = (t.new_zeros(*t.shape[:2], t.shape[2] + room, t.shape[3]) for t in (k, v))
    kb[:, :, : k.shape[2]], vb[:, :, : v.shape[2]] = k, v
    return SlabLayer.over(kb, vb, k.shape[2])


def _decode(model, cache, ids, mask, steps, slab: bool):
    """Prefill ``ids`` then greedy-decode ``steps`` tokens; rows 0 and 2 leave after step 2 and
    the first 3 columns are dropped after step 3 (as verification's shrinking batch does)."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True
    )
    if slab:
        cache.layers = [_with_room(x, steps) for x in cache.layers]
    tok, last, logits = out.logits[:, -1].argmax(-1), pos[:, -1], []
    for step in range(steps):
        mask = torch.cat([mask, mask.new_ones(len(tok), 1)], 1)
        last = last + 1
        out = model(
            input_ids=tok[:, None],
            attention_mask=mask,
            position_ids=last[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        logits.append(out.logits[:, -1])
        tok = out.logits[:, -1].argmax(-1)
        if step == 2:
            keep = torch.tensor([1, 3])
            cache.batch_select_indices(keep)
            mask, tok, last = mask[keep], tok[keep], last[keep]
        if step == 3:
            mask[:, :3] = 0  # nobody attends to them any more: both caches forget them
            mask = mask[:, 3:]
            for layer in cache.layers:
                if isinstance(layer, SlabLayer):
                    layer.drop_leading(3)
                else:
                    layer.keys, layer.values = layer.keys[:, :, 3:], layer.values[:, :, 3:]
    return logits


def test_slab_decode_is_bitwise_dynamic_cache(tiny_llama: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    torch.manual_seed(0)
    ids = torch.randint(5, 1000, (4, 12))
    mask = torch.ones_like(ids)
    mask[0, :5] = mask[2, :2] = 0  # left padding, as the prompt pass has
    with torch.inference_mode():
        want = _decode(model, DynamicCache(config=model.config), ids, mask, 6, slab=False)
        cache = DynamicCache(config=model.config)
        got = _decode(model, cache, ids, mask, 6, slab=True)
    assert all(isinstance(layer, SlabLayer) for layer in cache.layers)
    for a, b in zip(want, got, strict=True):
        assert torch.equal(a, b)
    layer = cache.layers[0]
    # 12 prompt + 6 decoded columns, 3 dropped: 15 filled; room for 6 was made once, never regrown
    assert layer.keys.shape[-2] == 15 and layer._kb.shape[-2] == 15


def test_slab_adopts_assigned_tensors_and_grows_when_full() -> None:
    layer = SlabLayer()
    k = torch.randn(2, 1, 3, 4)
    layer.update(k, k + 1)
    assert torch.equal(layer.keys, k) and layer.get_seq_length() == 3
    for _ in range(5):  # past the first buffer's room: grows, keeps every column
        step = torch.randn(2, 1, 1, 4)
        keys, values = layer.update(step, step + 1)
        k = torch.cat([k, step], dim=-2)
    assert torch.equal(keys, k) and torch.equal(values, k + 1)
    plain = copy.deepcopy(layer)
    plain.keys = plain.keys[:, :, :-2]  # what transformers' own crop() does
    assert plain.get_seq_length() == 6 and torch.equal(plain.keys, k[:, :, :6])


def test_chunks_write_into_one_buffer_right_aligned_with_zeros_on_the_left() -> None:
    """Two prompt-pass chunks of widths 3 and 5 fill one buffer of width 5 (room 4) in place:
    no joining copy, the narrower chunk left-padded with zeros, the room left free."""
    a, b = torch.randn(2, 1, 3, 4), torch.randn(1, 1, 5, 4)
    buffer = SlabBuffer(rows=3, width=5, room=4)
    first = SlabLayer.region(buffer, slice(0, 2), 2)
    second = SlabLayer.region(buffer, slice(2, 3), 0)
    assert first.get_seq_length() == 0
    keys, _ = first.update(a[:, :, :1], a[:, :, :1] + 1)  # a shared prefix column, then the rest
    keys, values = first.update(a[:, :, 1:], a[:, :, 1:] + 1)
    assert torch.equal(keys, a) and torch.equal(values, a + 1)
    second.update(b, b + 1)
    slab = buffer.layer()
    assert slab.keys.shape == (3, 1, 5, 4) and slab._kb.shape[-2] == 9
    assert torch.equal(slab.keys[:2, :, 2:], a) and torch.equal(slab.keys[2:], b)
    assert torch.equal(slab.values[:2, :, :2], torch.zeros(2, 1, 2, 4))
    assert torch.equal(slab.values[:2, :, 2:], a + 1) and torch.equal(slab.values[2:], b + 1)
    step = torch.randn(3, 1, 1, 4)
    keys, _ = slab.update(step, step)  # decode writes into the room, no new buffer
    assert keys.shape[-2] == 6 and slab._kb is buffer.keys and torch.equal(keys[:, :, 5:], step)
