"""The in-place KV layer gives bitwise the logits of transformers' DynamicLayer through prefill,
decode steps, rows leaving the batch and leading columns dropped, and never regrows its buffer
while it has room."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM
from transformers.cache_utils import DynamicCache

from tasks.kv_slab import SlabLayer


def _decode(model, cache, ids, mask, steps, slab: bool):
    """Prefill ``ids`` then greedy-decode ``steps`` tokens; rows 0 and 2 leave after step 2 and
    the first 3 columns are dropped after step 3 (as verification's shrinking batch does)."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                use_cache=True)
    if slab:
        cache.layers = [SlabLayer.stacked([x.keys], [x.values], room=steps) for x in cache.layers]
    tok, last, logits = out.logits[:, -1].argmax(-1), pos[:, -1], []
    for step in range(steps):
        mask = torch.cat([mask, mask.new_ones(len(tok), 1)], 1)
        last = last + 1
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=last[:, None],
                    past_key_values=cache, use_cache=True)
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


def test_stacked_chunks_are_left_padded_with_zeros_and_keep_room() -> None:
    a, b = torch.randn(2, 1, 3, 4), torch.randn(1, 1, 5, 4)
    slab = SlabLayer.stacked([a, b], [a + 1, b + 1], room=4)
    assert slab.keys.shape == (3, 1, 5, 4) and slab._kb.shape[-2] == 9
    assert torch.equal(slab.keys[:2, :, 2:], a) and torch.equal(slab.keys[2:], b)
    assert torch.equal(slab.values[:2, :, :2], torch.zeros(2, 1, 2, 4))
    assert torch.equal(slab.values[:2, :, 2:], a + 1)
