"""The Tatoeba split, tokenizer and packing behind `python -m export train` (no torch)."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from export import tatoeba
from export.errors import ExportError

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "parallel"


def _pairs(language: str, count: int, translations: int = 1) -> list[tatoeba.Pair]:
    return [
        tatoeba.Pair(language, f"Sentence {i}.", f"Satz {i} v{v}.")
        for i in range(count)
        for v in range(translations)
    ]


def test_split_holds_out_whole_english_sentences_in_both_languages() -> None:
    pairs = {"de": _pairs("de", 300, translations=2), "es": _pairs("es", 300)}
    split = tatoeba.split_pairs(pairs, test_pairs=50, seed=7)
    assert len(split.test["de"]) == 50
    assert len(split.test["es"]) == 50
    held = {p.source for items in split.test.values() for p in items}
    for items in split.train.values():
        assert not held & {p.source for p in items}
    # every translation of a held-out sentence is held out with it
    de_held = {p.source for p in split.test["de"]}
    assert all(p.source not in de_held for p in split.train["de"])
    assert len(split.train["de"]) + len(split.test["de"]) <= 600


def test_split_is_fixed_by_seed() -> None:
    pairs = {"de": _pairs("de", 200), "es": _pairs("es", 200)}
    first = tatoeba.split_pairs(pairs, 20, seed=1)
    assert first == tatoeba.split_pairs(pairs, 20, seed=1)
    assert first.test != tatoeba.split_pairs(pairs, 20, seed=2).test


def test_read_pairs_drops_duplicates_and_names_a_bad_line(tmp_path: Path) -> None:
    good = tmp_path / "good.tsv.gz"
    with gzip.open(good, "wt", encoding="utf-8") as stream:
        stream.write("Hi.\tHallo!\nHi.\tHallo!\nHi.\tGrüß Gott!\n")
    assert [p.target for p in tatoeba.read_pairs(good, "de")] == ["Hallo!", "Grüß Gott!"]
    bad = tmp_path / "bad.tsv.gz"
    with gzip.open(bad, "wt", encoding="utf-8") as stream:
        stream.write("Hi.\tHallo!\nno tab here\n")
    with pytest.raises(ExportError, match=r"bad\.tsv\.gz:2"):
        tatoeba.read_pairs(bad, "de")
    with pytest.raises(ExportError, match="cannot read"):
        tatoeba.read_pairs(tmp_path / "missing.tsv.gz", "de")


def test_pack_masks_exactly_the_translation_tokens() -> None:
    items = [
        tatoeba.Encoded(prompt=(5, 10, 11, 4), answer=(20, 21, 2)),
        tatoeba.Encoded(prompt=(5, 12, 4), answer=(22, 2)),
        tatoeba.Encoded(prompt=(5, 13, 14, 15, 4), answer=(23, 24, 25, 2)),
    ]
    sequences = list(tatoeba.pack(items, seq_len=16, bos=1, rng=random.Random(0)))
    assert sum(len(ids) for ids, _ in sequences) - len(sequences) == sum(
        len(i.prompt) + len(i.answer) for i in items
    )
    for ids, mask in sequences:
        assert ids[0] == 1 and len(ids) <= 16 and len(mask) == len(ids)
        predicted = [ids[i + 1] for i in range(len(ids) - 1) if mask[i]]
        expected = [t for item in items if item.prompt[1] in ids for t in item.answer]
        assert sorted(predicted) == sorted(expected)
        # the token before each answer is the separator: the model predicts from it
        assert all(ids[i] in (4, 20, 21, 22, 23, 24, 25) for i in range(len(ids)) if mask[i])


@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data/parallel")
def test_tokenizer_round_trips_real_sentences() -> None:
    pairs = [
        pair
        for code, name in tatoeba.FILES.items()
        for pair in tatoeba.read_pairs(DATA / name, code)[:10000]
    ]
    texts = [t for p in pairs for t in (p.source, p.target)]
    tokenizer = tatoeba.train_tokenizer(texts, 2000)
    encode = tokenizer.encode
    decode = tokenizer.decode
    for text in ["Don't worry, Tom.", "Ich weiß es nicht!", "¿Dónde está el baño?"]:
        ids = encode(text, add_special_tokens=False).ids
        assert decode(ids, skip_special_tokens=True) == text
    turn = encode(tatoeba.source_turn("I see.", "de"), add_special_tokens=False).tokens
    assert turn[0] == "<2de>" and turn[-1] == "<sep>"
    # a growing source keeps its earlier tokens (prefix-stable at word boundaries), which
    # is what lets the runtime reuse its KV cache as ASR commits words
    short = encode("I think that", add_special_tokens=False).ids
    longer = encode("I think that we", add_special_tokens=False).ids
    assert longer[: len(short)] == short
