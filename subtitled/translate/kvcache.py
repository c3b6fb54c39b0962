"""The KV cache tensors of one conversation, kept in step with a `CacheLedger`.

Each layer's tensors are (1, n_kv_heads, tokens, head_dim). A layer is one of two kinds
(`manifest.KvLayer`):

- **Shared buffer** (`length_slot` set; GroupQueryAttention layers): one buffer per tensor,
  bound as both the past input and the present output, so ONNX Runtime writes only the
  new tokens into it; `cache_lengths` tells the graph how many tokens each slot holds. A
  rollback only lowers that count. When a call would overflow a buffer, a sliding layer
  first drops the tokens no rollback can need (older than window + reserve) by moving the
  rest to the start (its buffer stays within `sliding_slack` of that); then the buffer
  grows (doubling). All layers of a slot keep the same count, as the graph reads one
  length per slot.
- **Append**: the past holds exactly the cached tokens and the present returns them plus
  the new ones; the present is bound back as the next past without a copy (on CPU their
  numpy views share ONNX Runtime's buffers). A sliding layer keeps up to window + reserve
  tokens and is fed only its last `window`; a rollback slices.

Calls go through one IO binding per conversation; outputs are bound to the session's
device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from subtitled.errors import InvalidArgument, InvalidState
from subtitled.translate.cache import CacheLedger
from subtitled.translate.contract import (
    CACHE_LENGTHS,
    INPUT_IDS,
    LOGITS,
    LOGITS_ROWS,
    PAST,
    POSITION_IDS,
    PRESENT,
    past_name,
    present_name,
)
from subtitled.translate.manifest import KvLayer

FloatArray = npt.NDArray[np.float32]
FIRST_CAPACITY = 64
"""Tokens a shared buffer holds when first allocated; it doubles from there."""


def sliding_slack(keep_limit: int) -> int:
    """Tokens a sliding slot's buffer holds beyond its keep limit. GroupQueryAttention
    reads the whole held buffer each step (it masks by the window), so a small slack
    keeps that read near window + reserve; each compaction moves `keep_limit` tokens
    once per `slack` tokens, little beside the held buffer read every step."""
    return max(16, keep_limit // 16)


def onnxruntime_value(value: Any) -> Any:
    """The `onnxruntime.OrtValue` wrapper of a C++ OrtValue from an OrtValueVector."""
    import onnxruntime

    return onnxruntime.OrtValue(value)


@dataclass
class SlotBuffers:
    """The shared buffers of the layers of one length slot; `held` tokens at their start."""

    layers: list[KvLayer]
    keep_limit: int | None
    """Tokens a sliding slot must keep when it makes room (window + reserve); None: all."""
    device: str
    held: int = 0
    capacity: int = 0
    values: dict[str, Any] = field(default_factory=dict)
    """Past name -> OrtValue; on CPU it wraps the numpy array in `arrays`."""
    arrays: dict[str, FloatArray] = field(default_factory=dict)

    def make_room(self, fed: int) -> bool:
        """Ensure `fed` more tokens fit after the held ones; True if the buffers are new
        (they must be bound again)."""
        if self.held + fed <= self.capacity:
            return False
        drop = 0 if self.keep_limit is None else max(0, self.held - self.keep_limit)
        keep = self.held - drop
        capacity = max(keep + fed, 2 * self.capacity, FIRST_CAPACITY)
        if self.keep_limit is not None:  # a sliding slot stays near its keep limit
            capacity = max(
                keep + fed, min(capacity, self.keep_limit + sliding_slack(self.keep_limit))
            )
        grown = capacity != self.capacity or self.device != "cpu"
        for kv in self.layers:
            for t in kv.tensors:
                self._move(past_name(kv.layer, t), kv, drop, keep, capacity)
        self.held, self.capacity = keep, capacity
        return grown

    def _move(self, name: str, kv: KvLayer, drop: int, keep: int, capacity: int) -> None:
        import onnxruntime

        if self.device == "cpu":
            old = self.arrays.get(name)
        else:  # from the device
            old = self.values[name].numpy() if name in self.values else None
        if capacity == self.capacity and old is not None and self.device == "cpu":
            old[:, :, :keep] = old[:, :, drop : drop + keep]  # numpy handles the overlap
            return
        new = np.zeros((1, kv.n_kv_heads, capacity, kv.head_dim), np.float32)
        if old is not None and keep:
            new[:, :, :keep] = old[:, :, drop : drop + keep]
        if self.device == "cpu":
            self.arrays[name] = new
            self.values[name] = onnxruntime.OrtValue.ortvalue_from_numpy(new)
        else:
            self.values[name] = onnxruntime.OrtValue.ortvalue_from_numpy(new, self.device, 0)


class KvCache:
    """The cache of one conversation for one ONNX Runtime session of an exported model."""

    def __init__(
        self, session: Any, layout: Sequence[KvLayer], reserve_tokens: int, device: str = "cpu"
    ) -> None:
        self.session = session
        self.layout = tuple(layout)
        self.device = device
        self.ledger = CacheLedger(
            [kv.window for kv in self.layout],
            reserve_tokens,
            [kv.length_slot is None for kv in self.layout],
        )
        self.slots: dict[int, SlotBuffers] = {}
        for kv in self.layout:
            if kv.length_slot is None:
                continue
            limit = None if kv.window is None else kv.window + reserve_tokens
            slot = self.slots.setdefault(kv.length_slot, SlotBuffers([], limit, device))
            if slot.keep_limit != limit:
                raise InvalidArgument(
                    f"layer {kv.layer}: length slot {kv.length_slot} mixes windows"
                )
            slot.layers.append(kv)
        if sorted(self.slots) != list(range(len(self.slots))):
            raise InvalidArgument(f"length slots {sorted(self.slots)} are not 0 .. n-1")
        self._appended = [  # (index in the layout, layer, past, present) per tensor
            (index, kv, past_name(kv.layer, t), present_name(kv.layer, t))
            for index, kv in enumerate(self.layout)
            if kv.length_slot is None
            for t in kv.tensors
        ]
        self._values: dict[str, Any] = {}
        self.row_input = LOGITS_ROWS in {i.name for i in session.get_inputs()}
        # One binding for the conversation. The outputs ONNX Runtime allocates each call
        # (logits, append layers' presents) are bound first, so they lead get_outputs();
        # they are bound again before every call (after a call a bound output counts as
        # preallocated, with the last call's shape). Shared buffers stay bound until they
        # are reallocated.
        self._binding = session.io_binding()
        self._fresh = [LOGITS, *(present for *_, present in self._appended)]
        for name in self._fresh:
            self._binding.bind_output(name, device)
        self.reset()
        self.prefilled_tokens = 0
        self.calls = 0

    def reset(self) -> None:
        """Forget every token (shared buffers keep their memory for the next tokens)."""
        self.ledger = CacheLedger(self.ledger.windows, self.ledger.reserve, self.ledger.trims)
        for slot in self.slots.values():
            slot.held = 0
        self._values = {
            past: np.zeros((1, kv.n_kv_heads, 0, kv.head_dim), np.float32)
            for _, kv, past, _ in self._appended
        }

    def rollback(self, keep: int) -> None:
        """Drop every token from position `keep` on (the ledger checks it is exact)."""
        if keep == self.ledger.held:
            return
        if keep == 0:
            self.reset()
            return
        drop = self.ledger.held - keep
        self.ledger.rollback(keep)
        for slot in self.slots.values():
            if slot.held < drop:
                raise InvalidState(f"a length slot holds {slot.held} < {drop} tokens to drop")
            slot.held -= drop
        for _, _, name, _ in self._appended:
            array = self._host(name)
            self._values[name] = np.ascontiguousarray(array[:, :, : array.shape[2] - drop])

    def _host(self, name: str) -> FloatArray:
        value = self._values[name]
        if isinstance(value, np.ndarray):
            return value
        array: FloatArray = value.numpy()
        return array

    def forward(self, ids: Sequence[int], rows: int | None = None) -> FloatArray:
        """Feed `ids` after the held tokens; return the logits of the last `rows` of them
        (default all), (rows, vocab)."""
        if not ids:
            raise InvalidArgument("nothing to feed")
        rows = len(ids) if rows is None else min(max(rows, 1), len(ids))
        start = self.ledger.held
        binding = self._binding
        binding.bind_cpu_input(INPUT_IDS, np.asarray([ids], dtype=np.int64))
        if self.row_input:
            binding.bind_cpu_input(LOGITS_ROWS, np.asarray([rows], dtype=np.int64))
        binding.bind_cpu_input(
            POSITION_IDS, np.arange(start, start + len(ids), dtype=np.int64)[None, :]
        )
        if self.slots:
            for slot in self.slots.values():
                if slot.make_room(len(ids)):
                    for name, value in slot.values.items():
                        binding.bind_ortvalue_input(name, value)
                        binding.bind_ortvalue_output(name.replace(PAST, PRESENT, 1), value)
            held = [self.slots[i].held for i in range(len(self.slots))]
            binding.bind_cpu_input(CACHE_LENGTHS, np.asarray(held, dtype=np.int64))
        for _, kv, past, _ in self._appended:
            self._bind_appended(binding, kv, past)
        for name in self._fresh:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs_as_ortvaluevector()
        self.ledger.append(ids)
        self.prefilled_tokens += len(ids)
        self.calls += 1
        for slot in self.slots.values():
            slot.held += len(ids)
        if self._appended:
            lengths = self.ledger.lengths()
            for at, (index, kv, past, _) in enumerate(self._appended, start=1):
                present = onnxruntime_value(outputs[at])
                self._absorb(kv, past, present, len(ids), lengths[index])
        logits: FloatArray = outputs[0].numpy()[0]
        return logits if self.row_input else logits[len(ids) - rows :]

    def _bind_appended(self, binding: Any, kv: KvLayer, name: str) -> None:
        value = self._values[name]
        if kv.window is not None:
            held = value.shape[2] if isinstance(value, np.ndarray) else value.shape()[2]
            if held > kv.window:
                value = np.ascontiguousarray(self._host(name)[:, :, -kv.window :])
        if isinstance(value, np.ndarray):
            binding.bind_cpu_input(name, value)
        else:
            binding.bind_ortvalue_input(name, value)

    def _absorb(self, kv: KvLayer, name: str, present: Any, fed: int, keep: int) -> None:
        if kv.window is None:
            self._values[name] = present  # past + new, bound back as is
            return
        fresh = present.numpy()
        if fed <= kv.window:
            fresh = np.concatenate([self._host(name), fresh[:, :, -fed:]], axis=2)
        if fresh.shape[2] < keep:
            raise InvalidState(f"layer {kv.layer}: cache holds {fresh.shape[2]} < {keep} tokens")
        self._values[name] = np.ascontiguousarray(fresh[:, :, -keep:]) if keep else fresh[:, :, :0]
