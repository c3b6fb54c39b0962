"""The shipped translation model (models/subtitled-moe-small) through the daemon's runtime.

A broken export, tokenizer or manifest can never ship silently: the model is loaded the way
the daemon loads it (manifest and sha256 first) and scored with sacreBLEU on 200 Tatoeba
pairs per language that training held out (the seeded split of `export.tatoeba`). The
floors sit a little under what the model card reports for these same 200 pairs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sacrebleu

from export import tatoeba
from subtitled.translate.manifest import load_manifest
from subtitled.translate.models import BUNDLED_MODEL, resolve_model
from subtitled.translate.runtime import OnnxModel, RuntimeConfig
from subtitled.translate.stream import OnnxTranslator, SourceUpdate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "parallel"
PAIRS = 200
# BLEU on the first 200 held-out pairs, measured at export (model card), minus a margin
# for nothing but float differences between machines
FLOORS = {"de": 30.0, "es": 34.0}
# Long FLORES sentences scored both ways, and the chrF clause by clause must gain at least
FLORES_SENTENCES = 60
CLAUSE_GAIN = 2.0


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return resolve_model("bundled")


def test_bundled_model_is_found_verified_and_small(model_dir: Path) -> None:
    assert model_dir.name == BUNDLED_MODEL
    manifest = load_manifest(model_dir)  # sha256 of every file
    assert manifest.architecture == "gemma4_text"
    assert manifest.precision == "int8"
    assert manifest.prompt is not None and set(manifest.prompt.languages) == {"de", "es"}
    assert sum(entry.bytes for entry in manifest.files) <= 40 * 1024 * 1024
    names = {entry.path for entry in manifest.files}
    assert {"tokenizer.json", "ATTRIBUTION.md", "MODEL_CARD.md"} <= names


@pytest.mark.parametrize("language", ["de", "es"])
def test_bundled_model_translates_held_out_pairs(model_dir: Path, language: str) -> None:
    held = tatoeba.load_split(DATA).test[language][:PAIRS]
    translator = OnnxTranslator(OnnxModel(model_dir, RuntimeConfig(threads=2)), [language])
    hypotheses = []
    for number, pair in enumerate(held):
        translator.reset()
        result = translator.translate(SourceUpdate(number, pair.source, final=True))[language]
        assert result.final and not result.unstable
        hypotheses.append(result.stable.strip())
    bleu = sacrebleu.corpus_bleu(hypotheses, [[p.target for p in held]]).score
    assert bleu >= FLOORS[language], f"en-{language} BLEU {bleu:.2f} < {FLOORS[language]}"


def test_long_sentences_read_better_clause_by_clause(model_dir: Path) -> None:
    """The manifest's `sentence_words` earns its place: on long prose (FLORES dev, used for
    validation only) clause by clause scores clearly above whole sentences."""
    sources = (DATA / "flores101-dev.eng").read_text(encoding="utf-8").splitlines()
    targets = (DATA / "flores101-dev.deu").read_text(encoding="utf-8").splitlines()
    pairs = [(s, t) for s, t in zip(sources, targets, strict=True) if len(s.split()) > 20]
    pairs = pairs[:FLORES_SENTENCES]
    model = OnnxModel(model_dir, RuntimeConfig(threads=2))
    assert model.prompt.sentence_words > 0
    scores = {}
    for words in (0, None):  # whole sentences; the model's own setting
        translator = OnnxTranslator(model, ["de"], sentence_words=words)
        hypotheses = []
        for number, (source, _) in enumerate(pairs):
            translator.reset()
            result = translator.translate(SourceUpdate(number, source, final=True))["de"]
            hypotheses.append(result.stable.strip())
        scores[words] = sacrebleu.corpus_chrf(hypotheses, [[t for _, t in pairs]]).score
    assert scores[None] >= scores[0] + CLAUSE_GAIN, scores
