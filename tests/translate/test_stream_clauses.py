"""Long segments translated clause by clause, through the bundled model."""

from __future__ import annotations

import pytest

from subtitled.translate.models import resolve_model
from subtitled.translate.policy import clause_cut
from subtitled.translate.runtime import OnnxModel, RuntimeConfig
from subtitled.translate.stream import LanguageStream

TATOEBA_MODEL = "subtitled-moe-small"  # the Tatoeba-only model, kept for these tests

LONG = (
    "When the printers of Mainz had learned the craft in the year fourteen fifty five, "
    "they set up presses in many towns, and books became cheap enough for students to buy."
)


@pytest.fixture(scope="module")
def model() -> OnnxModel:
    return OnnxModel(resolve_model(TATOEBA_MODEL), RuntimeConfig(threads=1))


def clauses(text: str, max_words: int) -> list[str]:
    words, out = text.split(), []
    while (cut := clause_cut(words, max_words)) is not None:
        out.append(" ".join(words[:cut]))
        words = words[cut:]
    return [*out, " ".join(words)]


def test_a_long_segment_reads_as_its_clauses_translated_in_turn(model: OnnxModel) -> None:
    parts = clauses(LONG, 12)
    assert len(parts) == 3, parts
    whole = LanguageStream(model, "de", sentence_words=12).update(0, LONG, final=True)
    # the same clauses as separate sentences of one conversation
    one_by_one = LanguageStream(model, "de", sentence_words=0)
    expected = [one_by_one.update(i, part, final=True).stable for i, part in enumerate(parts)]
    assert all(expected), expected
    assert whole.stable == " ".join(e.strip() for e in expected)
    assert whole.unstable == ""
    # unsplit, the model sees one 30-word sentence: a different (and, for this small
    # model, worse) translation
    unsplit = LanguageStream(model, "de", sentence_words=0).update(0, LONG, final=True)
    assert unsplit.stable != whole.stable


def test_word_by_word_the_shown_translation_only_grows(model: OnnxModel) -> None:
    stream = LanguageStream(model, "de", sentence_words=12)
    words, shown, results = LONG.split(), "", []
    for end in range(1, len(words) + 1):
        result = stream.update(0, " ".join(words[:end]), final=end == len(words))
        assert result.stable.startswith(shown), (shown, result.stable)
        shown = result.stable
        results.append(result)
    # the finished clauses stay in the conversation as context for the next segment
    assert len(stream.conversation.pairs) == 3
    assert results[-1].unstable == "" and len(results[-1].stable.split()) >= 10


def test_the_configuration_overrides_the_model(model: OnnxModel) -> None:
    assert LanguageStream(model, "de", sentence_words=0).sentence_words == 0
    assert LanguageStream(model, "de", sentence_words=7).sentence_words == 7
    # unset: the model's own (the bundled model's manifest asks for 12)
    assert LanguageStream(model, "de").sentence_words == model.prompt.sentence_words == 12
