"""`python -m export train`: the bundled translation model, a small Gemma 4 architecture MoE
(`gemma4_text`, `enable_moe_block`, 8 experts top-2 beside the dense MLP, sliding and full
attention layers with K=V on the full ones) trained from scratch on Tatoeba en->de and en->es.

The run folder holds `tokenizer.json`, `split.json` (the seed and sizes of the held-out
split), `checkpoint.pt` (model, optimiser, step, data position; written every few minutes,
so `--resume` continues), `log.tsv`, and at the end `final/`: a Hugging Face checkpoint
(config.json, model.safetensors, tokenizer.json, subtitled.json with the prompt template)
that `python -m export onnx --model RUN/final` exports, plus `scores.json` (sacreBLEU on the
held-out pairs with the PyTorch fp32 model).

Training is next-token loss on the translation tokens only (the source turn is context),
with a Switch-style load-balancing loss on the routers so all experts are used.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer

from export import tatoeba
from export.errors import ExportError
from subtitled.translate.contract import TOKENIZER_FILE

log = logging.getLogger(__name__)
SEQ_LEN = 256
BATCH = 12
CHECKPOINT_EVERY_S = 600.0
BALANCE_WEIGHT = 0.01
REWARM_STEPS = 100


def model_config(vocab_size: int, special: dict[str, int]) -> dict[str, Any]:
    """The bundled model's geometry: Gemma 4 26B-A4B's shape family at ~15 M parameters."""
    return {
        "model_type": "gemma4_text",
        "vocab_size": vocab_size,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_global_key_value_heads": 1,
        "head_dim": 64,
        "global_head_dim": 128,
        "attention_k_eq_v": True,
        "hidden_activation": "gelu_pytorch_tanh",
        "enable_moe_block": True,
        "num_experts": 8,
        "top_k_experts": 2,
        "moe_intermediate_size": 256,
        "sliding_window": 64,
        "max_position_embeddings": SEQ_LEN,
        "final_logit_softcapping": 30.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "hidden_size_per_layer_input": 0,
        "num_kv_shared_layers": 0,
        "attention_dropout": 0.0,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {
                "rope_type": "proportional",
                "rope_theta": 1000000.0,
                "partial_rotary_factor": 0.25,
            },
        },
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention"] * 2,
        "pad_token_id": special[tatoeba.PAD],
        "bos_token_id": special[tatoeba.BOS],
        "eos_token_id": special[tatoeba.EOS],
    }


def build_model(config: dict[str, Any], seed: int) -> Any:
    torch.manual_seed(seed)
    settings = {k: v for k, v in config.items() if k != "model_type"}
    hf_config = transformers.AutoConfig.for_model(config["model_type"], **settings)
    hf_config._attn_implementation = "sdpa"
    auto: Any = transformers.AutoModelForCausalLM
    return auto.from_config(hf_config)


@dataclass
class Batches:
    """The packed training stream, resumable by (epoch, index)."""

    items: dict[str, list[tatoeba.Encoded]]
    seed: int
    bos: int
    pad: int
    epoch: int = 0
    index: int = 0

    def _epoch(self) -> list[tuple[list[int], list[bool]]]:
        # one language per sequence, as one cache per language holds it at run time
        rng = random.Random(f"{self.seed}:epoch:{self.epoch}")
        sequences = [
            sequence
            for code in sorted(self.items)
            for sequence in tatoeba.pack(self.items[code], SEQ_LEN, self.bos, rng)
        ]
        rng.shuffle(sequences)
        return sequences

    def __post_init__(self) -> None:
        self._sequences = self._epoch()

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.index + BATCH > len(self._sequences):
            self.epoch += 1
            self.index = 0
            self._sequences = self._epoch()
        chunk = self._sequences[self.index : self.index + BATCH]
        self.index += BATCH
        width = SEQ_LEN  # one shape for every step
        ids = torch.full((len(chunk), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, (tokens, target) in enumerate(chunk):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(target)] = torch.tensor(target)
        return ids, mask

    def epoch_fraction(self) -> float:
        return self.epoch + self.index / max(1, len(self._sequences))


class Balance:
    """Collects router outputs through forward hooks; `loss()` is the Switch Transformer
    load-balancing term E * sum_e f_e * P_e (Fedus et al. 2021, eq. 4), per layer, averaged."""

    def __init__(self, model: Any) -> None:
        self.terms: list[torch.Tensor] = []
        for layer in model.model.layers:
            if getattr(layer, "router", None) is not None:
                layer.router.register_forward_hook(self._hook)

    def _hook(self, module: Any, inputs: Any, outputs: Any) -> None:
        probabilities, _, index = outputs  # (N, E), (N, k)
        experts = probabilities.shape[-1]
        counts = torch.zeros(experts).index_add_(0, index.reshape(-1), torch.ones(index.numel()))
        fraction = counts / index.numel()
        self.terms.append(experts * (fraction * probabilities.mean(0)).sum())

    def loss(self) -> torch.Tensor:
        value = torch.stack(self.terms).mean() if self.terms else torch.zeros(())
        self.terms = []
        return value


def translation_loss(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the next token at the masked positions only: logits are computed
    for those rows alone (the tied 8k-vocab head is the largest matmul)."""
    hidden = model.model(input_ids=ids).last_hidden_state  # (B, T, H)
    rows = hidden[mask]  # (N, H)
    labels = torch.roll(ids, -1, dims=1)[mask]  # (N,)
    logits = rows @ model.model.embed_tokens.weight.T  # (N, V)
    cap = model.config.final_logit_softcapping
    logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(logits, labels)


def initialise(model: Any, config: dict[str, Any], directory: Path) -> None:
    """Load the weights of the exported model in `directory` (dequantised, see
    `export.restore`): every parameter but a tied head must be there, in the same shape."""
    from export.restore import restore_into

    loaded = restore_into(model, config, directory)
    print(f"initialised from {directory}: {loaded} tensors", flush=True)


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _save(path: Path, state: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)


def _prepare(args: argparse.Namespace) -> tuple[Tokenizer, tatoeba.Split]:
    run = args.out
    run.mkdir(parents=True, exist_ok=True)
    print(f"reading {args.data}", flush=True)
    split = tatoeba.load_split(args.data, args.eval_pairs, args.seed)
    for code in tatoeba.LANGUAGES:
        print(f"  en-{code}: {len(split.train[code])} train, {len(split.test[code])} held out")
    tokenizer_path = run / TOKENIZER_FILE
    if args.init is not None:
        # the model's own tokenizer: its ids are what the restored embeddings mean
        shipped = (args.init / TOKENIZER_FILE).read_bytes()
        if tokenizer_path.exists() and tokenizer_path.read_bytes() != shipped:
            raise ExportError(f"{tokenizer_path} is not the tokenizer of {args.init}")
        tokenizer_path.write_bytes(shipped)
    if tokenizer_path.exists():
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    else:
        print(f"training BPE tokenizer, {args.vocab_size} tokens", flush=True)
        texts = (
            text
            for pairs in split.train.values()
            for pair in pairs
            for text in (pair.source, pair.target)
        )
        tokenizer = tatoeba.train_tokenizer(texts, args.vocab_size)
        tokenizer.save(str(tokenizer_path))
    (run / "split.json").write_text(
        json.dumps(
            {
                "seed": args.seed,
                "test_pairs": args.eval_pairs,
                "train": {k: len(v) for k, v in split.train.items()},
            }
        )
        + "\n"
    )
    return tokenizer, split


def run(args: argparse.Namespace) -> int:
    """Train (or resume), then write `final/` and score it."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer, split = _prepare(args)
    vocab = {name: tatoeba.special_id(tokenizer, name) for name in tatoeba.SPECIALS}
    config = model_config(tokenizer.get_vocab_size(), vocab)
    model = build_model(config, args.seed)
    params = sum(p.numel() for p in model.parameters())
    if args.init is not None and not (args.resume and (args.out / "checkpoint.pt").exists()):
        initialise(model, config, args.init)
    print(f"model: gemma4_text MoE, {params / 1e6:.2f} M parameters", flush=True)
    items = {
        code: tatoeba.encode_pairs(tokenizer, pairs, SEQ_LEN // 2)
        for code, pairs in split.train.items()
    }
    batches = Batches(items, args.seed, vocab[tatoeba.BOS], vocab[tatoeba.PAD])
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01)
    checkpoint = args.out / "checkpoint.pt"
    step, total, elapsed = 0, 0, 0.0
    if args.resume and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step, total, elapsed = state["step"], state["total"], state["elapsed"]
        batches.epoch, batches.index = state["epoch"], state["index"]
        batches.__post_init__()
        batches.index = state["index"]
        print(f"resumed at step {step}/{total}", flush=True)
    rewarm_from = -1
    if args.steps:
        if step and args.steps != total:
            # a resumed run with a new length: its cosine schedule jumps, so ramp up to it
            rewarm_from = step
            print(f"new schedule: {args.steps} steps, re-warming the learning rate", flush=True)
        total = args.steps
    balance = Balance(model)
    model.train()
    budget_s = args.minutes * 60.0
    started = time.monotonic() - elapsed
    last_save = time.monotonic()
    log_file = (args.out / "log.tsv").open("a", encoding="utf-8")
    smoothed = None
    while total == 0 or step < total:
        ids, mask = batches.next()
        warmup = min(300, max(total // 12, 40)) if total else 80
        lr = learning_rate(step, total or 10**9, args.peak_lr, warmup)
        if rewarm_from >= 0:
            lr *= min(1.0, (step - rewarm_from + 1) / REWARM_STEPS)
        for group in optimiser.param_groups:
            group["lr"] = lr
        loss = translation_loss(model, ids, mask)
        aux = balance.loss()
        total_loss: Any = loss + BALANCE_WEIGHT * aux
        total_loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        step += 1
        now = time.monotonic()
        spent = now - started
        smoothed = loss.item() if smoothed is None else 0.98 * smoothed + 0.02 * loss.item()
        if total == 0 and step == 40 and not args.steps:
            # fix the schedule from measured speed, so the run ends near the budget
            total = max(200, int(budget_s / (spent / step)))
            print(f"schedule: {total} steps ({spent / step:.2f} s/step)", flush=True)
        if step % 25 == 0:
            eta = (total - step) * spent / step if total else float("nan")
            print(
                f"step {step}/{total or '?'} epoch {batches.epoch_fraction():.2f} "
                f"loss {smoothed:.3f} balance {aux.item():.3f} lr {lr:.2e} "
                f"elapsed {spent / 60:.1f} min ETA {eta / 60:.1f} min",
                flush=True,
            )
            log_file.write(f"{step}\t{spent:.1f}\t{smoothed:.4f}\t{aux.item():.4f}\t{lr:.3e}\n")
            log_file.flush()
        if now - last_save > CHECKPOINT_EVERY_S or (total and step >= total):
            _save(
                checkpoint,
                {
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "step": step,
                    "total": total,
                    "elapsed": spent,
                    "epoch": batches.epoch,
                    "index": batches.index,
                },
            )
            last_save = now
        if spent > budget_s * 1.15:
            print(f"time budget exceeded at step {step}/{total}: stopping early", flush=True)
            break
    log_file.close()
    final = write_final(model, tokenizer, config, args.out)
    print(f"wrote {final}", flush=True)
    scores = score(model, tokenizer, split, args.out)
    print(json.dumps(scores, indent=2), flush=True)
    return 0


SENTENCE_WORDS = 12
"""The longest source the trained model is asked to translate in one piece (the
manifest's `prompt.sentence_words`): Tatoeba sentences are mostly shorter; FLORES dev en->de,
split above 12 words at clause punctuation, chrF 13.7 -> 19.2."""


def write_final(model: Any, tokenizer: Any, config: dict[str, Any], run_dir: Path) -> Path:
    final = run_dir / "final"
    final.mkdir(exist_ok=True)
    model.eval()
    model.save_pretrained(final, safe_serialization=True)
    tokenizer.save(str(final / TOKENIZER_FILE))
    meta = {
        "name": "subtitled-tatoeba-moe",
        "licence": "CC BY 2.0 FR (weights trained on Tatoeba sentences; see ATTRIBUTION.md)",
        "max_positions": config["max_position_embeddings"],
        "prompt": {
            "preamble": tatoeba.PREAMBLE,
            "source_turn": tatoeba.SOURCE_TURN,
            "target_end": tatoeba.TARGET_END,
            "stop": [tatoeba.EOS],
            "languages": dict(tatoeba.LANGUAGES),
            # trained on short sentences (Tatoeba): longer ones go clause by clause
            "sentence_words": SENTENCE_WORDS,
        },
    }
    (final / "subtitled.json").write_text(json.dumps(meta, indent=2) + "\n")
    return final


@torch.no_grad()
def translate_batch(
    model: Any, tokenizer: Any, sources: list[str], language: str, max_new: int = 64
) -> list[str]:
    """Greedy translations of single sentences (no context), batched with left padding."""
    bos = tokenizer.token_to_id(tatoeba.BOS)
    eos = tokenizer.token_to_id(tatoeba.EOS)
    pad = tokenizer.token_to_id(tatoeba.PAD)
    prompts = [
        [bos, *tokenizer.encode(tatoeba.source_turn(s, language), add_special_tokens=False).ids]
        for s in sources
    ]
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        attention[row, width - len(prompt) :] = 1
    output = model.generate(
        input_ids=ids,
        attention_mask=attention,
        max_new_tokens=max_new,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    texts = []
    for row in output[:, width:].tolist():
        if eos in row:
            row = row[: row.index(eos)]
        texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return texts


def score(model: Any, tokenizer: Any, split: tatoeba.Split, run_dir: Path) -> dict[str, Any]:
    """sacreBLEU BLEU and chrF of the fp32 PyTorch model on the held-out pairs and FLORES dev."""
    import sacrebleu

    model.eval()
    results: dict[str, Any] = {}
    data_dir = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "parallel"
    flores_codes = {"de": "deu", "es": "spa"}
    for code in tatoeba.LANGUAGES:
        sets = {
            "tatoeba": ([p.source for p in split.test[code]], [p.target for p in split.test[code]])
        }
        flores_src = data_dir / "flores101-dev.eng"
        if flores_src.exists():
            sets["flores"] = (
                flores_src.read_text(encoding="utf-8").splitlines(),
                (data_dir / f"flores101-dev.{flores_codes[code]}")
                .read_text(encoding="utf-8")
                .splitlines(),
            )
        for name, (sources, references) in sets.items():
            hypotheses: list[str] = []
            started = time.monotonic()
            for start in range(0, len(sources), 64):
                hypotheses += translate_batch(
                    model,
                    tokenizer,
                    sources[start : start + 64],
                    code,
                    96 if name == "flores" else 64,
                )
            bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
            chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
            results[f"{name}-en-{code}"] = {
                "pairs": len(sources),
                "bleu": round(bleu, 2),
                "chrf": round(chrf, 2),
                "seconds": round(time.monotonic() - started, 1),
            }
            print(f"{name} en-{code}: BLEU {bleu:.2f} chrF {chrf:.2f}", flush=True)
            (run_dir / f"hyp-{name}-{code}.txt").write_text("\n".join(hypotheses) + "\n")
    (run_dir / "scores.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run as: python -m export train")
