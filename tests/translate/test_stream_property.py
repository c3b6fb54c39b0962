"""Through the real model: whatever ASR does (words added, revised, dropped, sentences
closed), a language stream's stable text only grows within a sentence, and each final
translation starts with everything that was shown stable."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subtitled.translate.policy import DecodePolicy
from subtitled.translate.runtime import OnnxModel, RuntimeConfig
from subtitled.translate.stream import LanguageStream

pytestmark = pytest.mark.slow

WORDS = ["the", "printed", "book", "Chinese", "wood", "blocks", "über", "año", "1455", ","]

steps = st.lists(
    st.tuples(st.sampled_from(["add", "revise", "drop", "final"]), st.sampled_from(WORDS)),
    min_size=1, max_size=25,
)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> OnnxModel:
    return OnnxModel(tiny_model_dir, RuntimeConfig(threads=1, reserve_tokens=8))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=steps, ignore_stop=st.booleans(), sentence_words=st.sampled_from([0, 4]))
def test_stable_text_is_never_retracted(model: OnnxModel, script: list[tuple[str, str]],
                                        ignore_stop: bool, sentence_words: int) -> None:
    saved = model.stop_ids
    if ignore_stop:
        model.stop_ids = frozenset()
    try:
        # sentence_words 4: sentences over 4 words are cut at a comma, clause by clause
        stream = LanguageStream(model, "es", DecodePolicy(max_new_tokens=12), context_tokens=96,
                                sentence_words=sentence_words)
        words: list[str] = []
        segment, shown = 0, ""
        for action, word in script:
            if action == "add":
                words.append(word)
            elif action == "revise" and words:
                words[-1] = word
            elif action == "drop" and words:
                words.pop()
            result = stream.update(segment, " ".join(words), action == "final")
            assert result.stable.startswith(shown), (shown, result.stable)
            shown = result.stable
            if action == "final":
                assert result.unstable == ""
                segment, shown, words = segment + 1, "", []
    finally:
        model.stop_ids = saved
