"""`python -m export train --init DIR`: training starts from an exported model's weights
(the bundled model: its int8 values, restored), which translate as its ONNX export does."""

from __future__ import annotations

import pytest

REASON = "the export extra is not installed: pip install -e '.[export]'"
pytest.importorskip("torch", reason=REASON)
pytest.importorskip("transformers", reason=REASON)
tokenizers = pytest.importorskip("tokenizers", reason=REASON)

from export import tatoeba, train  # noqa: E402
from export.errors import ExportError  # noqa: E402
from export.evaluate import onnx_translate  # noqa: E402
from subtitled.translate.models import resolve_model  # noqa: E402

TATOEBA_MODEL = "subtitled-moe-small"  # the Tatoeba-only model, kept for these tests

SOURCES = [
    "I don't know where she lives.",
    "The train leaves at seven tomorrow morning.",
    "We should ask him before we decide.",
    "My sister bought a red car last week.",
]


def test_the_initialised_model_translates_as_the_export_does() -> None:
    directory = resolve_model(TATOEBA_MODEL)
    tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    special = {name: tatoeba.special_id(tokenizer, name) for name in tatoeba.SPECIALS}
    config = train.model_config(tokenizer.get_vocab_size(), special)  # today's geometry
    model = train.build_model(config, seed=0)
    train.initialise(model, config, directory)
    restored = train.translate_batch(model, tokenizer, SOURCES, "de")
    exported = onnx_translate(directory, "de", context=False, threads=1, sentence_words=0)(SOURCES)
    assert all(exported), exported
    # int8 activations in the export can flip a late token; most sentences agree exactly
    same = sum(a == b for a, b in zip(restored, exported, strict=True))
    assert same >= len(SOURCES) - 1, (restored, exported)
    fresh = train.translate_batch(train.build_model(config, seed=0), tokenizer, SOURCES, "de")
    assert sum(a == b for a, b in zip(fresh, exported, strict=True)) == 0


def test_another_geometry_is_refused() -> None:
    directory = resolve_model(TATOEBA_MODEL)
    tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    special = {name: tatoeba.special_id(tokenizer, name) for name in tatoeba.SPECIALS}
    config = {**train.model_config(tokenizer.get_vocab_size(), special), "intermediate_size": 384}
    with pytest.raises(ExportError, match=r"mlp\.gate_proj\.weight' restores to shape"):
        train.initialise(train.build_model(config, seed=0), config, directory)
