"""A KV cache layer written in place into a preallocated buffer, for verification's decode loop.

``DynamicLayer.update`` grows keys and values with ``torch.cat``, copying every layer's whole cache
each decode step. Here the cache lives in a buffer with room for the rest of the decode, each step
writes its column in place and attention reads a view of the filled part: the same values in the
same order, so the logits are bitwise ``DynamicLayer``'s. ``StaticCache`` needs a fixed batch and
length, while verification shrinks its batch and trims columns, so this subclasses
``DynamicLayer`` and keeps its interface. The prompt pass's chunks write into regions of one
:class:`SlabBuffer` per layer, so their caches land where the decode batch reads them.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer


class SlabLayer(DynamicLayer):
    """``DynamicLayer`` over a buffer ``[B, H, capacity, D]`` of which the first ``n`` columns
    are filled; ``keys``/``values`` are views of them. Assigning ``keys``/``values`` (what
    transformers' own cache methods do) adopts the tensor as a full buffer."""

    def __init__(self) -> None:
        self._kb: torch.Tensor | None = None
        self._vb: torch.Tensor | None = None
        self._n = 0
        self._region: tuple[SlabBuffer, slice, int] | None = None
        super().__init__()

    @classmethod
    def region(cls, buffer: SlabBuffer, rows: slice, first: int) -> SlabLayer:
        """An empty layer whose columns are ``buffer``'s rows ``rows`` from column ``first`` on:
        a prompt-pass chunk writes its cache straight into the decode batch's buffer."""
        slab = cls()
        slab._region = (buffer, rows, first)
        return slab

    @classmethod
    def over(cls, keys: torch.Tensor, values: torch.Tensor, filled: int) -> SlabLayer:
        """A layer over existing buffers ``[B, H, capacity, D]`` whose first ``filled`` columns
        hold the cache."""
        slab = cls()
        slab.dtype, slab.device, slab.is_initialized = keys.dtype, keys.device, True
        slab._kb, slab._vb, slab._n = keys, values, filled
        return slab

    def _alloc(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        n = keys.shape[-2]
        kb = keys.new_empty(*keys.shape[:2], capacity, keys.shape[3])
        vb = values.new_empty(*values.shape[:2], capacity, values.shape[3])
        kb[:, :, :n], vb[:, :, :n] = keys, values
        self._kb, self._vb, self._n = kb, vb, n

    def _view(self, buf: torch.Tensor | None) -> torch.Tensor | None:
        return buf if buf is None or buf.dim() < 4 else buf[:, :, : self._n]

    def _adopt(self, name: str, value: torch.Tensor | None) -> None:
        setattr(self, name, value)
        self._n = value.shape[-2] if value is not None and value.dim() == 4 else 0

    keys = property(lambda self: self._view(self._kb), lambda self, v: self._adopt("_kb", v))
    values = property(lambda self: self._view(self._vb), lambda self, v: self._adopt("_vb", v))

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new columns in place (growing the buffer only when it is full)."""
        if self._region is not None:
            buffer, rows, first = self._region
            keys, values = buffer.allocate(key_states, value_states, rows, first)
            self._kb, self._vb, self._n, self._region = keys, values, 0, None
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        if not self.is_initialized or self._kb is None or self._kb.dim() < 4:
            self.dtype, self.device, self.is_initialized = key_states.dtype, key_states.device, True
            self._alloc(key_states, value_states, 2 * key_states.shape[-2])
            return self.keys, self.values
        n, new = self._n, key_states.shape[-2]
        if n + new > self._kb.shape[-2]:
            self._alloc(self.keys, self.values, 2 * (n + new))
        self._kb[:, :, n : n + new] = key_states
        self._vb[:, :, n : n + new] = value_states
        self._n = n + new
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices`` with the buffer's free room (no regrowth on the next step)."""
        if self._n > 0:
            self._kb, self._vb = self._kb[indices], self._vb[indices]

    def drop_leading(self, first: int) -> None:
        """Forget the first ``first`` columns (a view: no copy, the room after stays)."""
        self._kb, self._vb = self._kb[:, :, first:], self._vb[:, :, first:]
        self._n -= first


class SlabBuffer:
    """One layer's key and value buffers for a whole decode batch, ``[rows, H, width + room, D]``,
    which the prompt pass fills chunk by chunk (:meth:`SlabLayer.region`) so that the chunks need
    no joining copy. Allocated on the first write, when heads, head size and dtype are known."""

    def __init__(self, rows: int, width: int, room: int):
        self.rows, self.width, self.room = rows, width, room
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def allocate(
        self, key_states: torch.Tensor, value_states: torch.Tensor, rows: slice, first: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of ``rows`` from column ``first`` on; the columns left of ``first`` are zeroed.
        Zeros, not uninitialised memory: those columns are masked, but a NaN there would still
        poison attention."""
        if self.keys is None:
            shape = (self.rows, key_states.shape[1], self.width + self.room)
            self.keys = key_states.new_empty(*shape, key_states.shape[3])
            self.values = value_states.new_empty(*shape, value_states.shape[3])
        self.keys[rows, :, :first] = 0
        self.values[rows, :, :first] = 0
        return self.keys[rows, :, first:], self.values[rows, :, first:]

    def layer(self) -> SlabLayer:
        """The whole batch as one layer, every row filled up to ``width``."""
        assert self.keys is not None and self.values is not None, "no chunk was written"
        return SlabLayer.over(self.keys, self.values, self.width)
