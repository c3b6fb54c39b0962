"""The llama.cpp decoder of `bench-translate`: prompt-cache reuse and the decoding rules,
on a scripted stand-in for llama.cpp (the real one is measured by the benchmark itself,
with llama-cpp-python built as export/README.md says)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from subtitled.errors import ConfigError
from subtitled.tools.bench.llama_cpp import LlamaCppDecoder, LlamaCppModel, common_prefix
from subtitled.translate.policy import DecodePolicy

VOCAB = 16
STOP = 15


class ScriptedLlama(LlamaCppModel):
    """Next token = (last token + 1) mod 15, then STOP after 9: a deterministic model
    with LlamaCppModel's bookkeeping (`held`, `prefilled_tokens`, `calls`)."""

    def __init__(self) -> None:  # no llama.cpp, no file
        self.held = []
        self.prefilled_tokens = 0
        self.calls = 0
        self.vocab = VOCAB

    def feed(self, ids: Sequence[int]) -> np.ndarray:
        assert ids, "a feed with no ids gives no logits"
        self.held.extend(ids)
        self.prefilled_tokens += len(ids)
        self.calls += 1
        logits = np.zeros(VOCAB, np.float32)
        last = self.held[-1]
        logits[STOP if last >= 9 else last + 1] = 1.0
        return logits


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2]) == 2


def test_the_prompt_cache_keeps_the_common_prefix_and_re_evaluates_the_rest() -> None:
    model = ScriptedLlama()
    decoder = LlamaCppDecoder(model, DecodePolicy(), frozenset({STOP}))
    first = decoder.decode([0, 1, 2, 3], (), limit=20)
    assert first.tokens == (4, 5, 6, 7, 8, 9) and first.stopped
    assert first.prefilled == 4  # the whole prompt once; the rest are decode steps
    assert first.decode_steps == 6  # 4 .. 9 fed, the last to learn that STOP follows
    # The next update's prompt shares [0, 1, 2] and the held generation; only the new
    # tokens are evaluated, then decoding goes on.
    second = decoder.decode([0, 1, 2, 5], (6,), limit=20)
    assert second.tokens == (6, 7, 8, 9)
    assert second.prefilled == 2  # 5 and the forced 6: the held 3, 4, ... were dropped
    assert model.held[:5] == [0, 1, 2, 5, 6]
    # The same prompt again: only its last token is re-evaluated, for its logits.
    third = decoder.decode([0, 1, 2, 5], (6,), limit=20)
    assert third.prefilled == 1 and third.tokens == second.tokens


def test_the_length_limit_and_the_repetition_guard_apply() -> None:
    model = ScriptedLlama()
    decoder = LlamaCppDecoder(model, DecodePolicy(), frozenset({STOP}))
    limited = decoder.decode([0], (), limit=3)
    assert limited.tokens == (1, 2, 3) and not limited.stopped


def test_a_missing_gguf_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    with pytest.raises(ConfigError, match="is not a file"):
        LlamaCppModel(tmp_path / "none.gguf", 1, 64, VOCAB)
