"""The KV cache of one conversation: shared GroupQueryAttention buffers written in place,
grown and compacted, and rollbacks, all giving the logits of recomputing from scratch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from subtitled.translate.kvcache import KvCache, SlotBuffers
from subtitled.translate.manifest import KvLayer
from subtitled.translate.runtime import OnnxModel, RuntimeConfig

TOKENS = [int(t) for t in np.random.default_rng(3).integers(5, 500, 64)]


def _scratch(model: OnnxModel, ids: list[int]) -> np.ndarray:
    return model.new_cache().forward(ids)[-1]


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> OnnxModel:
    # window 16 + reserve 4: the sliding buffers compact every few tokens
    return OnnxModel(tiny_model_dir, RuntimeConfig(threads=1, reserve_tokens=4))


def test_the_tiny_models_have_shared_and_append_layers(
    model: OnnxModel, tiny_append_model_dir: Path
) -> None:
    # shared buffers: the sliding layers' slot, and the full K=V layers' (K cached beside V)
    layout = {kv.layer: (kv.length_slot, kv.tensors) for kv in model.layout}
    both = ("key", "value")
    assert layout == {0: (0, both), 1: (1, both), 2: (0, both), 3: (1, both)}
    append = OnnxModel(tiny_append_model_dir, RuntimeConfig(threads=1, reserve_tokens=4))
    layout = {kv.layer: (kv.length_slot, kv.tensors) for kv in append.layout}
    assert layout == {
        0: (None, both),
        1: (None, ("value",)),
        2: (None, both),
        3: (None, ("value",)),
    }


def test_the_append_model_decodes_as_scratch(tiny_append_model_dir: Path) -> None:
    append = OnnxModel(tiny_append_model_dir, RuntimeConfig(threads=1, reserve_tokens=4))
    cache = append.new_cache()
    cache.forward(TOKENS[:10])
    for n in range(10, 40):
        logits = cache.forward([TOKENS[n]])[-1]
        np.testing.assert_allclose(logits, _scratch(append, TOKENS[: n + 1]), rtol=0, atol=1e-4)
    cache.rollback(36)
    logits = cache.forward([7])[-1]
    np.testing.assert_allclose(logits, _scratch(append, [*TOKENS[:36], 7]), rtol=0, atol=1e-4)


def test_decoding_through_compactions_matches_scratch(model: OnnxModel) -> None:
    cache = model.new_cache()
    cache.forward(TOKENS[:10])
    slot = cache.slots[0]
    capacities, buffers = set(), set()
    for n in range(10, 64):
        logits = cache.forward([TOKENS[n]])[-1]
        np.testing.assert_allclose(logits, _scratch(model, TOKENS[: n + 1]), rtol=0, atol=1e-4)
        capacities.add(slot.capacity)
        buffers.add(slot.arrays["past_key_values.0.key"].ctypes.data)
    # 64 tokens through a sliding buffer kept near window + reserve = 20 tokens: it was
    # compacted in place, never grown past 20 + 16, and is still the buffer it first was
    assert max(capacities) <= 36 and cache.ledger.held == 64
    assert slot.held <= 36 and len(buffers) == 1


def test_rollbacks_in_place_and_refused(model: OnnxModel) -> None:
    cache = model.new_cache()
    cache.forward(TOKENS[:30])
    assert cache.ledger.can_keep(27)  # within the reserve
    cache.rollback(27)
    logits = cache.forward([7, 8])[-1]
    np.testing.assert_allclose(logits, _scratch(model, [*TOKENS[:27], 7, 8]), rtol=0, atol=1e-4)
    assert not cache.ledger.can_keep(10)  # the sliding layers no longer hold it
    with pytest.raises(ValueError, match="cannot roll back to 10"):
        cache.rollback(10)
    cache.reset()
    logits = cache.forward(TOKENS[:12])[-1]
    np.testing.assert_allclose(logits, _scratch(model, TOKENS[:12]), rtol=0, atol=1e-4)


def test_a_full_attention_slot_grows_and_keeps_its_tokens() -> None:
    layers = [KvLayer(0, "full", ("key", "value"), 2, 8, None, 0)]
    slot = SlotBuffers(layers, keep_limit=None, device="cpu")
    slot.make_room(5)
    assert slot.capacity == 64
    key = slot.arrays["past_key_values.0.key"]
    key[:, :, :60] = np.arange(60, dtype=np.float32)[None, None, :, None]
    slot.held = 60
    slot.make_room(10)  # 70 > 64: doubles, every held token kept in place
    grown = slot.arrays["past_key_values.0.key"]
    assert slot.capacity == 128 and slot.held == 60 and grown is not key
    np.testing.assert_array_equal(grown[0, 0, :60, 0], np.arange(60))
    assert slot.values["past_key_values.0.key"].numpy().shape == (1, 2, 128, 8)


def test_a_sliding_slot_drops_only_what_no_rollback_needs() -> None:
    layers = [KvLayer(0, "sliding", ("key", "value"), 1, 4, 16, 0)]
    slot = SlotBuffers(layers, keep_limit=20, device="cpu")  # window 16 + reserve 4
    slot.make_room(24)  # 24 tokens: room up to the limit and its slack (16)
    assert slot.capacity == 36
    value = slot.arrays["past_key_values.0.value"]
    value[:, :, :36] = np.arange(36, dtype=np.float32)[None, None, :, None]
    slot.held = 36
    slot.make_room(1)  # full: keeps the last 20 at the start, same buffer
    assert slot.held == 20 and slot.capacity == 36
    assert slot.arrays["past_key_values.0.value"] is value
    np.testing.assert_array_equal(value[0, 0, :20, 0], np.arange(16, 36))
    slot.make_room(40)  # a chunk longer than the buffer: it grows for the chunk
    assert slot.held == 20 and slot.capacity == 60
    np.testing.assert_array_equal(
        slot.arrays["past_key_values.0.value"][0, 0, :20, 0], np.arange(16, 36)
    )


def test_slots_must_not_mix_windows(model: OnnxModel) -> None:
    layers = [
        KvLayer(0, "sliding", ("key", "value"), 2, 16, 16, 0),
        KvLayer(1, "full", ("key", "value"), 2, 16, None, 0),
    ]
    with pytest.raises(ValueError, match="length slot 0 mixes windows"):
        KvCache(model.session, layers, reserve_tokens=4)


def test_logits_rows_are_the_last_rows_of_all(model: OnnxModel) -> None:
    """A graph with `logits_rows` computes the LM head for the last rows only; they are the
    rows a full call gives, and the cache is the same after either."""
    assert model.new_cache().row_input  # exported since the input came in
    every = model.new_cache().forward(TOKENS[:20])
    for rows in (1, 3, 20, 50):
        cache = model.new_cache()
        logits = cache.forward(TOKENS[:20], rows)
        assert logits.shape == (min(rows, 20), every.shape[1])
        np.testing.assert_allclose(logits, every[20 - min(rows, 20) :], rtol=0, atol=1e-5)
        after = cache.forward(TOKENS[20:22])
        np.testing.assert_allclose(after[-1], _scratch(model, TOKENS[:22]), rtol=0, atol=1e-4)
