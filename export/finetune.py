"""`python -m export train --base gemma3-270m`: the translation model fine-tuned from a
pretrained Gemma 3 (read from a GGUF file) instead of trained from scratch.

Why: 15 M parameters trained on 170k short Tatoeba sentences translate short everyday
sentences and invent text for anything longer (FLORES dev BLEU ~2). Knowledge beyond
Tatoeba has to come from pretrained weights; Gemma 3 270M knows English, German and
Spanish, and learns the task from the shared parallel data.

The run folder holds

- `tokenizer.json`: Gemma's tokenizer trimmed to the tokens the training text uses
  (`export.vocab`; the prompt's own strings included) and `vocab.json` (for each new id the
  Gemma id it came from),
- `checkpoint.pt` (model, optimiser, step, data position; every few minutes, so `--resume`
  continues), `log.tsv`,
- `final/` at the end: a Hugging Face `gemma3_text` checkpoint with `tokenizer.json` and
  `subtitled.json` (prompt template, licence), ready for `python -m export onnx --model`.

Training: sequences of `PROMPT` pairs of one language packed to `SEQ_LEN` tokens (earlier
pairs are the context the daemon's cache keeps), next-token loss on the translation and its
end mark only; the tied embeddings stay frozen (their rows are what the vocabulary trim
kept; freezing them is also 1.3x faster per step); bf16 autocast on CPU (2.5x faster than
fp32 on this 2-core AVX-512-BF16 machine, measured: 560-715 vs 224-268 tokens/s), fp32
master weights and AdamW.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from export import moe_split, tatoeba, vocab
from export.errors import ExportError
from export.gguf_config import gemma3_config
from export.gguf_file import GgufFile, hf_tokenizer_json, packaged_gemma3_270m
from export.moe_split import MOE_KEYS
from export.train import _save, learning_rate
from subtitled.translate.contract import MANIFEST_FILE, TOKENIZER_FILE

SEQ_LEN = 256
BATCH = 8
CHECKPOINT_EVERY_S = 300.0
BALANCE_WEIGHT = 0.01
"""Switch load-balancing loss weight for a split model's routers (as `export.train`)."""
MIN_COUNT = 4
"""A Gemma token is kept when the distinct training sentences use it this often (of 58k
used, 67.1k kept with their merge ancestors at 1, 46.7k at 3): the embedding table is a
quarter of the shipped size, which must stay under 150 MB at int8."""

PREAMBLE = "<bos>"
SOURCE_TURN = "English: {source}\n{language}:"
TARGET_END = "\n"
STOPS = ("\n", "<eos>")
"""The prompt: the base model's own few-shot format (it already continues `English: ...\\n
German:` with German), one line per sentence, so the context reads as a parallel text."""

MLQE_FILE = "mlqepe-eng-deu.tsv.gz"
LONG_WORDS = 8
"""Pairs with at least this many English words are taken in every epoch; shorter Tatoeba
pairs are sampled (`SHORT_FRACTION`): real speech is long sentences, and short ones are
what the base model gets right already."""
SHORT_FRACTION = 0.25
MLQE_REPEAT = 2
LICENCE = (
    "Gemma Terms of Use (weights derived from Google's Gemma 3 270M; see "
    "LICENSE-GEMMA-TERMS.md and NOTICE.md); fine-tuned on Tatoeba (CC BY 2.0 FR) and "
    "MLQE-PE (CC0 1.0): see ATTRIBUTION.md"
)
SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")
LICENCE_DIR = Path(__file__).resolve().parent / "licences" / "gemma3"
"""NOTICE.md, LICENSE-GEMMA-TERMS.md, ATTRIBUTION.md: copied into every fine-tuned model
(the Gemma Terms of Use, section 3.1: a copy of the terms and a Notice file)."""


def turn(source: str, code: str) -> str:
    return SOURCE_TURN.replace("{language}", tatoeba.LANGUAGES[code]).replace("{source}", source)


@dataclass(frozen=True)
class Corpus:
    """Training pairs per language (the held-out Tatoeba split removed) and the split."""

    train: dict[str, list[tatoeba.Pair]]
    split: tatoeba.Split


def load_corpus(data_dir: Path, test_pairs: int, seed: int) -> Corpus:
    split = tatoeba.load_split(data_dir, test_pairs, seed)
    train = {code: list(pairs) for code, pairs in split.train.items()}
    mlqe = data_dir / MLQE_FILE
    if mlqe.exists():
        train["de"] += tatoeba.read_pairs(mlqe, "de") * MLQE_REPEAT
    return Corpus(train, split)


JOIN_MIN_WORDS = 5
SENTENCE_ENDS = (".", "!", "?")


def joined_pairs(pairs: Sequence[tatoeba.Pair], count: int, seed: str) -> list[tatoeba.Pair]:
    """`count` synthetic long pairs, each two or three whole-sentence pairs (of at least
    `JOIN_MIN_WORDS` English words) joined source to source and target to target.

    Tatoeba's pairs are short (en-es: 1.1k of 116k have 15+ words) and a model trained on
    them ends a long sentence after its first clause or two; joined pairs teach it to
    translate every part of a long line, in order (concatenation augmentation)."""
    pool = [
        p for p in pairs
        if len(p.source.split()) >= JOIN_MIN_WORDS
        and p.source.endswith(SENTENCE_ENDS) and p.target.endswith(SENTENCE_ENDS)
    ]
    if count <= 0 or len(pool) < 3:
        return []
    rng = random.Random(seed)
    joined = []
    for _ in range(count):
        parts = rng.sample(pool, rng.choice((2, 3)))
        joined.append(
            tatoeba.Pair(
                parts[0].language,
                " ".join(p.source for p in parts),
                " ".join(p.target for p in parts),
            )
        )
    return joined


def trimmed_tokenizer(
    gguf: GgufFile, corpus: Corpus, run: Path, init: Path | None = None
) -> tuple[Tokenizer, list[int]]:
    """The trimmed tokenizer of the run (made once, then read back: its ids are what the
    checkpoint's embeddings mean); with `init`, that model's own."""
    path, ids_path = run / TOKENIZER_FILE, run / "vocab.json"
    if init is not None:
        shipped = (init / TOKENIZER_FILE).read_bytes()
        if path.exists() and path.read_bytes() != shipped:
            raise ExportError(f"{path} is not the tokenizer of {init}")
        path.write_bytes(shipped)
        if (init / "vocab.json").exists():
            shutil.copy2(init / "vocab.json", ids_path)
        tokenizer = Tokenizer.from_str(shipped.decode("utf-8"))
        return tokenizer, list(range(tokenizer.get_vocab_size()))
    if path.exists() and ids_path.exists():
        return Tokenizer.from_file(str(path)), list(json.loads(ids_path.read_text())["old_ids"])
    full_json = hf_tokenizer_json(gguf)
    full = Tokenizer.from_str(full_json)
    # each distinct text once (MLQE-PE is repeated in training, not in the count)
    texts = list(
        dict.fromkeys(
            text for pairs in corpus.train.values() for p in pairs for text in (p.source, p.target)
        )
    )
    # the prompt's own strings, as often as they will be used
    texts += [turn("", code) + TARGET_END for code in tatoeba.LANGUAGES] * 1000
    counts = vocab.count_tokens(full, texts)
    trimmed = vocab.trim(full_json, counts, MIN_COUNT, SPECIALS)
    path.write_text(trimmed.tokenizer_json, encoding="utf-8")
    ids_path.write_text(json.dumps({"min_count": MIN_COUNT, "old_ids": trimmed.old_ids}) + "\n")
    print(f"vocabulary trimmed: {len(trimmed.old_ids)} of {len(counts)} used tokens", flush=True)
    return Tokenizer.from_str(trimmed.tokenizer_json), trimmed.old_ids


def build_model(config: dict[str, Any]) -> Any:
    """transformers' Gemma3ForCausalLM of `config`; with `num_experts` in it, each layer's
    MLP split into routed experts (`export.moe_split`)."""
    return moe_split.from_config(config)


def load_pretrained(model: Any, gguf: GgufFile, old_ids: Sequence[int]) -> None:
    """Gemma's weights into `model`, the embedding rows the trimmed vocabulary kept."""
    state: dict[str, torch.Tensor] = {}
    for key, values in gguf.tensors():
        if key == "model.embed_tokens.weight":
            values = values[np.asarray(old_ids)]
        state[key] = torch.from_numpy(np.ascontiguousarray(values))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied
    if missing or unexpected:
        raise ExportError(
            f"GGUF weights do not fit the model: missing {missing}, extra {unexpected}"
        )


@dataclass
class Stream:
    """The packed training stream, resumable by (epoch, index)."""

    items: dict[str, list[tatoeba.Encoded]]
    long: dict[str, list[bool]]
    seed: int
    bos: int
    pad: int
    epoch: int = 0
    index: int = 0

    def _epoch(self) -> list[tuple[list[int], list[bool]]]:
        rng = random.Random(f"{self.seed}:epoch:{self.epoch}")
        sequences = []
        for code in sorted(self.items):
            chosen = [
                item
                for item, long in zip(self.items[code], self.long[code], strict=True)
                if long or rng.random() < SHORT_FRACTION
            ]
            sequences += list(tatoeba.pack(chosen, SEQ_LEN, self.bos, rng))
        rng.shuffle(sequences)
        return sequences

    def __post_init__(self) -> None:
        self._sequences = self._epoch()

    def next(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self.index + BATCH > len(self._sequences):
            self.epoch += 1
            self.index = 0
            self._sequences = self._epoch()
        chunk = self._sequences[self.index : self.index + BATCH]
        self.index += BATCH
        width = max(len(tokens) for tokens, _ in chunk)
        ids = torch.full((len(chunk), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, (tokens, target) in enumerate(chunk):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(target)] = torch.tensor(target)
        return ids, mask, sum(len(tokens) for tokens, _ in chunk)

    def epoch_fraction(self) -> float:
        return self.epoch + self.index / max(1, len(self._sequences))


def encode(
    tokenizer: Tokenizer, pairs: Sequence[tatoeba.Pair]
) -> tuple[list[tatoeba.Encoded], list[bool]]:
    """Each pair as the runtime builds it: the source turn and ` translation` + end mark,
    encoded as separate pieces and joined as ids; and whether each is long. Pairs over
    half a sequence are dropped."""
    prompts = tokenizer.encode_batch(
        [turn(p.source, p.language) for p in pairs], add_special_tokens=False
    )
    answers = tokenizer.encode_batch([" " + p.target for p in pairs], add_special_tokens=False)
    end = tuple(tokenizer.encode(TARGET_END, add_special_tokens=False).ids)
    items, long = [], []
    for pair, prompt, answer in zip(pairs, prompts, answers, strict=True):
        item = tatoeba.Encoded(tuple(prompt.ids), (*answer.ids, *end))
        if len(item.prompt) + len(item.answer) < SEQ_LEN // 2:
            items.append(item)
            long.append(len(pair.source.split()) >= LONG_WORDS)
    return items, long


def translation_loss(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the next token at the masked positions only (logits for those rows
    alone: the tied head is the largest matmul)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.model(input_ids=ids).last_hidden_state  # (B, T, H)
        rows = hidden[mask]  # (N, H)
        logits = rows @ model.model.embed_tokens.weight.T  # (N, V)
    labels = torch.roll(ids, -1, dims=1)[mask]
    return torch.nn.functional.cross_entropy(logits.float(), labels)


def _base_gguf(args: argparse.Namespace) -> Path:
    if args.base == "gemma3-270m":
        return packaged_gemma3_270m(args.out / "base")
    path = Path(args.base)
    if not path.is_file():
        raise ExportError(f"--base {args.base}: not 'gemma3-270m' and not a GGUF file")
    return path


def run(args: argparse.Namespace) -> int:
    """Fine-tune (or resume), then write `final/`."""
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    gguf = GgufFile(_base_gguf(args))
    if gguf.architecture != "gemma3":
        raise ExportError(f"--base: a Gemma 3 GGUF is needed, not {gguf.architecture}")
    print(f"reading {args.data}", flush=True)
    corpus = load_corpus(args.data, args.eval_pairs, args.seed)
    tokenizer, old_ids = trimmed_tokenizer(gguf, corpus, args.out, args.init)
    config = gemma3_config(gguf)
    config["vocab_size"] = len(old_ids)
    config["max_position_embeddings"] = max(SEQ_LEN, 1024)
    if args.init is not None:  # its geometry: dense, or already split into experts
        init_config = json.loads((args.init / "config.json").read_text())
        config.update({k: init_config[k] for k in MOE_KEYS if k in init_config})
        if not (args.init / MANIFEST_FILE).exists() and not list(args.init.glob("*.safetensors")):
            raise ExportError(f"--init {args.init}: neither an exported model nor a checkpoint")
    checkpoint = args.out / "checkpoint.pt"
    resuming = args.resume and checkpoint.exists()
    state: dict[str, Any] = torch.load(checkpoint, weights_only=False) if resuming else {}
    config.update(state.get("moe", {}))  # a run that split its MLPs resumes split
    model = build_model(config)
    bos, pad = _special(tokenizer, "<bos>"), _special(tokenizer, "<pad>")
    items, long = {}, {}
    for code, pairs in corpus.train.items():
        items[code], long[code] = encode(tokenizer, pairs)
        joined = joined_pairs(pairs, args.join, f"{args.seed}:join:{code}")
        extra, _ = encode(tokenizer, joined)
        items[code] += extra
        long[code] += [True] * len(extra)  # taken every epoch
        print(
            f"  en-{code}: {len(items[code])} pairs, {sum(long[code])} long "
            f"({len(extra)} joined)",
            flush=True,
        )
    order_seed = args.seed if args.order_seed is None else args.order_seed
    order_seed = state.get("order_seed", order_seed)
    stream = Stream(items, long, order_seed, bos, pad)
    if not resuming:
        if args.init is None:
            load_pretrained(model, gguf, old_ids)
            print(f"initialised from {gguf.path.name}", flush=True)
        elif (args.init / MANIFEST_FILE).exists():
            from export.restore import restore_into

            restore_into(model, config, args.init)
            print(f"initialised from the exported model {args.init}", flush=True)
        else:
            moe_split.load_safetensors(model, args.init)
            print(f"initialised from the checkpoint {args.init}", flush=True)
        if args.experts and not config.get("num_experts"):
            _split(model, config, stream, args)
            stream = Stream(items, long, order_seed, bos, pad)  # the split read some batches
    model.model.embed_tokens.weight.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    print(
        f"model: gemma3_text, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M "
        f"parameters ({sum(p.numel() for p in trainable) / 1e6:.1f} M trained), "
        f"vocabulary {len(old_ids)}",
        flush=True,
    )
    balance = None
    if config.get("num_experts"):
        from export.train import Balance

        balance = Balance(model)
    optimiser = torch.optim.AdamW(trainable, lr=args.peak_lr, betas=(0.9, 0.98), weight_decay=0.0)
    step, total, elapsed, tokens_seen = 0, args.steps, 0.0, 0
    if resuming:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step, elapsed, tokens_seen = state["step"], state["elapsed"], state.get("tokens", 0)
        total = args.steps or state["total"]
        stream.epoch = state["epoch"]
        stream.__post_init__()
        stream.index = state["index"]
        print(f"resumed at step {step}/{total}", flush=True)
        state.clear()  # the model and optimiser hold their own copies
    model.train()
    budget_s = args.minutes * 60.0
    started = time.monotonic() - elapsed
    last_save = time.monotonic()
    smoothed: float | None = None
    with (args.out / "log.tsv").open("a", encoding="utf-8") as log_file:
        while total == 0 or step < total:
            ids, mask, count = stream.next()
            lr = learning_rate(step, total or 10**9, args.peak_lr, args.warmup)
            for group in optimiser.param_groups:
                group["lr"] = lr
            loss = translation_loss(model, ids, mask)
            total_loss: Any = loss if balance is None else loss + BALANCE_WEIGHT * balance.loss()
            total_loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += count
            now = time.monotonic()
            spent = now - started
            smoothed = loss.item() if smoothed is None else 0.95 * smoothed + 0.05 * loss.item()
            if total == 0 and step == 20:
                total = max(100, int(budget_s / (spent / step)))
                print(f"schedule: {total} steps ({spent / step:.2f} s/step)", flush=True)
            if step % 10 == 0:
                eta = (total - step) * spent / step
                print(
                    f"step {step}/{total} epoch {stream.epoch_fraction():.3f} loss {smoothed:.3f} "
                    f"lr {lr:.2e} {tokens_seen / spent:.0f} tok/s elapsed {spent / 60:.1f} min "
                    f"ETA {eta / 60:.1f} min",
                    flush=True,
                )
                log_file.write(f"{step}\t{spent:.1f}\t{tokens_seen}\t{smoothed:.4f}\t{lr:.3e}\n")
                log_file.flush()
            stop_asked = (args.out / "STOP").exists()
            if now - last_save > CHECKPOINT_EVERY_S or step >= total or stop_asked:
                _save(
                    checkpoint,
                    {
                        "model": model.state_dict(),
                        "optimiser": optimiser.state_dict(),
                        "step": step,
                        "total": total,
                        "elapsed": spent,
                        "tokens": tokens_seen,
                        "epoch": stream.epoch,
                        "index": stream.index,
                        "order_seed": order_seed,
                        "moe": {k: config[k] for k in MOE_KEYS if k in config},
                    },
                )
                last_save = now
                if stop_asked:
                    print(f"STOP file found: stopping at step {step}/{total}", flush=True)
                    break
    final = write_final(model, tokenizer, config, args.out, step, tokens_seen)
    print(f"wrote {final}", flush=True)
    return 0


def _split(model: Any, config: dict[str, Any], stream: Stream, args: argparse.Namespace) -> None:
    """The dense MLPs split into `args.experts` routed experts, on the stream's first
    batches (`export.moe_split`)."""
    from export.moe_split import RECORD_TOKENS, expert_count_valid, split_from_dense

    expert_count_valid(config["intermediate_size"], args.experts, args.top_k)
    batches: list[torch.Tensor] = []
    while sum(int(b.numel()) for b in batches) < RECORD_TOKENS:
        ids, _, _ = stream.next()
        batches.append(ids)
    print(f"splitting each MLP into {args.experts} experts, top-{args.top_k}", flush=True)
    model.eval()
    split_from_dense(model, batches, args.experts, args.top_k, lambda line: print(line, flush=True))
    for key in MOE_KEYS:
        config[key] = getattr(model.config, key)


def _special(tokenizer: Tokenizer, token: str) -> int:
    found = tokenizer.token_to_id(token)
    if found is None:
        raise ExportError(f"the trimmed tokenizer lost {token!r}")
    return int(found)


def write_final(
    model: Any, tokenizer: Tokenizer, config: dict[str, Any], run: Path, step: int, tokens: int
) -> Path:
    final = run / "final"
    final.mkdir(exist_ok=True)
    model.eval()
    model.save_pretrained(final, safe_serialization=True)
    shutil.copy2(run / TOKENIZER_FILE, final / TOKENIZER_FILE)  # the exact bytes
    for document in LICENCE_DIR.iterdir():  # the Gemma terms travel with the weights
        shutil.copy2(document, final / document.name)
    meta = {
        "name": "subtitled-gemma3-translate",
        "licence": LICENCE,
        "max_positions": 1024,
        "prompt": {
            "preamble": PREAMBLE,
            "source_turn": SOURCE_TURN,
            "target_end": TARGET_END,
            "stop": list(STOPS),
            "languages": dict(tatoeba.LANGUAGES),
            "sentence_words": 0,
        },
    }
    (final / "subtitled.json").write_text(json.dumps(meta, indent=2) + "\n")
    (run / "trained.json").write_text(json.dumps({"steps": step, "tokens": tokens}) + "\n")
    return final


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run as: python -m export train --base gemma3-270m")
