"""Tatoeba parallel data for the bundled model: reading, the held-out split, the tokenizer
and the packed training sequences. No torch here, so tests and the runtime's scorers can
rebuild the held-out split from `../shared/data/parallel` alone.

The split holds out whole English sentences (with every translation of them, in both
languages), fixed by seed, before anything is trained: a held-out English sentence never
appears in training, not even as the source of the other language's pairs.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from export.errors import ExportError

LANGUAGES: dict[str, str] = {"de": "German", "es": "Spanish"}
FILES: dict[str, str] = {"de": "tatoeba-eng-deu.tsv.gz", "es": "tatoeba-eng-spa.tsv.gz"}
# The bundled model's prompt: one language tag per source turn, so one cache per language
# keeps finished pairs as context. `source_turn` and friends go into the manifest as data.
BOS, EOS, PAD, UNK, SEP = "<bos>", "<eos>", "<pad>", "<unk>", "<sep>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK, SEP, *(f"<2{code}>" for code in LANGUAGES))
PREAMBLE = BOS
SOURCE_TURN = "<2{code}>{source}" + SEP
TARGET_END = EOS


@dataclass(frozen=True)
class Pair:
    """One English sentence and its translation into `language`."""

    language: str
    source: str
    target: str


@dataclass(frozen=True)
class Split:
    """Training and held-out pairs per language."""

    train: dict[str, list[Pair]]
    test: dict[str, list[Pair]]


def read_pairs(path: Path, language: str) -> list[Pair]:
    """`English<TAB>translation` lines of a gzip TSV; exact duplicates dropped, order kept."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read parallel data {path}: {exc}") from exc
    seen: set[tuple[str, str]] = set()
    pairs: list[Pair] = []
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise ExportError(f"{path}:{number}: expected English<TAB>translation")
        source, target = fields[0].strip(), fields[1].strip()
        if source and target and (source, target) not in seen:
            seen.add((source, target))
            pairs.append(Pair(language, source, target))
    return pairs


def split_pairs(pairs: dict[str, list[Pair]], test_pairs: int = 2000, seed: int = 1234) -> Split:
    """Hold out `test_pairs` pairs per language by whole English sentences, seeded."""
    test: dict[str, list[Pair]] = {}
    held: set[str] = set()
    for language in sorted(pairs):
        groups: dict[str, list[Pair]] = {}
        for pair in pairs[language]:
            groups.setdefault(pair.source, []).append(pair)
        sources = sorted(groups)
        random.Random(f"{seed}:{language}").shuffle(sources)
        chosen: list[Pair] = []
        for source in sources:
            if len(chosen) >= test_pairs:
                break
            group = groups[source]
            if len(chosen) + len(group) <= test_pairs:
                chosen.extend(group)
                held.add(source)
        test[language] = chosen
    train = {
        language: [pair for pair in items if pair.source not in held]
        for language, items in pairs.items()
    }
    return Split(train, test)


def load_split(data_dir: Path, test_pairs: int = 2000, seed: int = 1234) -> Split:
    """Read both languages from `data_dir` and split them."""
    pairs = {code: read_pairs(data_dir / name, code) for code, name in FILES.items()}
    return split_pairs(pairs, test_pairs, seed)


def source_turn(source: str, language: str) -> str:
    """The prompt text that asks for `source` in `language`."""
    return SOURCE_TURN.replace("{code}", language).replace("{source}", source)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A BPE tokenizer (NFKC, SentencePiece-style word marks, byte fallback off) whose first
    ids are `SPECIALS`, trained on `texts`."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.NFKC()
    # words keep SentencePiece's leading mark; punctuation is split off so "favor." and
    # "favor" share a token (the decoder glues unmarked pieces to the previous word)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()]
    )
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        min_frequency=2,
        limit_alphabet=300,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def special_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of a special token; a tokenizer without it is not ours."""
    value = tokenizer.token_to_id(token)
    if value is None:
        raise ExportError(f"tokenizer has no {token!r} token")
    return int(value)


@dataclass(frozen=True)
class Encoded:
    """One pair as token ids: the prompt part (no loss) and the answer part (loss)."""

    prompt: tuple[int, ...]
    answer: tuple[int, ...]


def encode_pairs(tokenizer: Tokenizer, pairs: Sequence[Pair], max_tokens: int) -> list[Encoded]:
    """Token ids of each pair's source turn and of its translation + end mark; pairs longer
    than `max_tokens` in all are dropped."""
    prompts = tokenizer.encode_batch(
        [source_turn(p.source, p.language) for p in pairs], add_special_tokens=False
    )
    answers = tokenizer.encode_batch([p.target for p in pairs], add_special_tokens=False)
    end = special_id(tokenizer, EOS)
    encoded = []
    for prompt, answer in zip(prompts, answers, strict=True):
        item = Encoded(tuple(prompt.ids), (*answer.ids, end))
        if len(item.prompt) + len(item.answer) < max_tokens:
            encoded.append(item)
    return encoded


def pack(
    items: Sequence[Encoded], seq_len: int, bos: int, rng: random.Random
) -> Iterator[tuple[list[int], list[bool]]]:
    """Shuffle `items` (pairs of one language) and pack them into sequences
    `<bos> turn answer turn answer ...` of at most `seq_len` tokens; yields (ids, loss mask
    over the *next* token of each position). Earlier pairs in a sequence are the context
    the runtime keeps in its cache."""
    order = list(range(len(items)))
    rng.shuffle(order)
    ids: list[int] = [bos]
    target: list[bool] = [False]
    for index in order:
        item = items[index]
        size = len(item.prompt) + len(item.answer)
        if len(ids) + size > seq_len:
            yield ids, [*target[1:], False]
            ids, target = [bos], [False]
        ids.extend(item.prompt)
        target.extend([False] * len(item.prompt))
        ids.extend(item.answer)
        target.extend([True] * len(item.answer))
    if len(ids) > 1:
        yield ids, [*target[1:], False]
