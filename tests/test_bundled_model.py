"""The shipped translation model (the default, `models/` + `BUNDLED_MODEL`) through the
daemon's runtime.

A broken export, tokenizer or manifest can never ship silently: the model is loaded the way
the daemon loads it (manifest and sha256 first) and scored with sacreBLEU on 200 Tatoeba
pairs per language that training held out (the seeded split of `export.tatoeba`) and on
FLORES dev sentences (validation only: never trained on), whole sentences as the daemon
translates them. The floors sit a little under what the model card reports for these
same sentences.
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
FLORES_SENTENCES = 60
FLORES_CODES = {"de": "deu", "es": "spa"}
# measured at export (model card) on these same sentences, minus a margin for float
# differences between machines
TATOEBA_FLOORS = {"de": 38.0, "es": 44.0}
FLORES_FLOORS = {"de": 13.5, "es": 11.5}
MAX_BYTES = 150 * 1024 * 1024


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return resolve_model("bundled")


@pytest.fixture(scope="module")
def model(model_dir: Path) -> OnnxModel:
    return OnnxModel(model_dir, RuntimeConfig(threads=2))


def test_bundled_model_is_found_verified_and_carries_its_terms(model_dir: Path) -> None:
    assert model_dir.name == BUNDLED_MODEL
    manifest = load_manifest(model_dir)  # sha256 of every file
    assert manifest.architecture == "gemma3_text"
    assert manifest.precision == "int8"
    assert manifest.prompt is not None and set(manifest.prompt.languages) == {"de", "es"}
    assert sum(entry.bytes for entry in manifest.files) <= MAX_BYTES
    names = {entry.path for entry in manifest.files}
    assert {"tokenizer.json", "ATTRIBUTION.md", "MODEL_CARD.md", "NOTICE.md"} <= names
    assert "LICENSE-GEMMA-TERMS.md" in names
    notice = (model_dir / "NOTICE.md").read_text(encoding="utf-8")
    # the Notice text the Gemma Terms of Use (section 3.1) require with every copy
    assert (
        "Gemma is provided under and subject to the Gemma Terms of Use found at "
        "ai.google.dev/gemma/terms" in notice
    )


def _score(model: OnnxModel, language: str, sources: list[str], refs: list[str]) -> float:
    translator = OnnxTranslator(model, [language])
    hypotheses = []
    for number, source in enumerate(sources):
        translator.reset()
        result = translator.translate(SourceUpdate(number, source, final=True))[language]
        assert result.final and not result.unstable
        # a subtitle starts at its first letter (Gemma's word mark is no leading space)
        assert result.stable == result.stable.strip(), repr(result.stable)
        hypotheses.append(result.stable)
    assert all(hypotheses), [s for s, h in zip(sources, hypotheses, strict=True) if not h]
    return float(sacrebleu.corpus_bleu(hypotheses, [refs]).score)


@pytest.mark.parametrize("language", ["de", "es"])
def test_bundled_model_translates_held_out_pairs(model: OnnxModel, language: str) -> None:
    held = tatoeba.load_split(DATA).test[language][:PAIRS]
    bleu = _score(model, language, [p.source for p in held], [p.target for p in held])
    assert bleu >= TATOEBA_FLOORS[language], f"en-{language} BLEU {bleu:.2f}"


@pytest.mark.parametrize("language", ["de", "es"])
def test_bundled_model_translates_long_prose(model: OnnxModel, language: str) -> None:
    """Wikipedia sentences (FLORES dev), whole: what real speech needs and what a model
    trained on Tatoeba alone could not do (BLEU about 2)."""
    sources = (DATA / "flores101-dev.eng").read_text(encoding="utf-8").splitlines()
    refs = (DATA / f"flores101-dev.{FLORES_CODES[language]}").read_text(encoding="utf-8")
    bleu = _score(
        model, language, sources[:FLORES_SENTENCES], refs.splitlines()[:FLORES_SENTENCES]
    )
    assert bleu >= FLORES_FLOORS[language], f"FLORES en-{language} BLEU {bleu:.2f}"
