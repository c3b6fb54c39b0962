"""`verify`: an exported model directory under ONNX Runtime against its transformers
checkpoint (fp32), side by side.

The reference runs the prompt and then `decode_steps` greedy steps with its KV cache; the
ONNX model is fed the same tokens (the prompt prefilled in two chunks, so the second one
attends to a cache, then one token per step) and its logits are compared position by
position. fp32 passes when max |Δlogit| ≤ 1e-3 and every greedy token agrees (so a free
greedy decode is identical); fp16/int8/int4 pass when the mean cosine similarity of the
logits is ≥ 0.99, and report the greedy top-1 agreement.

The reference checkpoint: `--reference DIR`, else `reference/` in the model directory
(random-weight exports), else the path `reference.json` recorded at export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from export import moe_split
from export.checkpoint import load_config
from export.errors import ExportError
from export.model_dir import REFERENCE_DIR, REFERENCE_LINK
from subtitled.translate.contract import MODEL_FILE
from subtitled.translate.kvcache import KvCache
from subtitled.translate.manifest import Manifest, load_manifest
from subtitled.translate.runtime import RuntimeConfig, open_session

FP32_MAX_DIFF = 1e-3
MIN_COSINE = 0.99
# A sentence to translate when the model directory has a tokenizer and prompt template.
SAMPLE = "The weather is nice today, so we are going to walk to the old harbour."


@dataclass(frozen=True)
class VerifyReport:
    """What `verify` measured."""

    precision: str
    prompt_tokens: int
    decode_steps: int
    max_abs_logit_diff: float
    mean_cosine: float
    min_cosine: float
    # Share of the greedy steps where ONNX's top-1 token is the reference's.
    top1_agreement: float
    reference_tokens: tuple[int, ...]
    prompt_source: str

    @property
    def tokens_identical(self) -> bool:
        return self.top1_agreement == 1.0

    @property
    def passed(self) -> bool:
        if self.precision == "fp32":
            return self.max_abs_logit_diff <= FP32_MAX_DIFF and self.tokens_identical
        return self.mean_cosine >= MIN_COSINE


def reference_dir(directory: Path, reference: Path | None) -> Path:
    """Where the transformers checkpoint of an exported model is."""
    if reference is not None:
        return reference
    if (directory / REFERENCE_DIR).is_dir():
        return directory / REFERENCE_DIR
    link = directory / REFERENCE_LINK
    if link.is_file():
        try:
            return Path(json.loads(link.read_text(encoding="utf-8"))["checkpoint"])
        except (OSError, ValueError, KeyError) as exc:
            raise ExportError(f"cannot read {link}: {exc}") from exc
    raise ExportError(
        f"no reference checkpoint for {directory}: pass --reference DIR "
        "(the Hugging Face checkpoint directory it was exported from)"
    )


def _prompt(
    directory: Path, manifest: Manifest, vocab: int, prompt_tokens: int, seed: int
) -> tuple[np.ndarray, str]:
    """(1, T) token ids: the sample sentence in the model's prompt template when it has a
    tokenizer and template, else `prompt_tokens` random ids."""
    if manifest.tokenizer is not None and manifest.prompt is not None:
        from tokenizers import Tokenizer

        template = manifest.prompt
        code = next(iter(template.languages), "German")
        text = template.preamble + template.turn(SAMPLE, code)
        ids = Tokenizer.from_file(str(directory / manifest.tokenizer)).encode(text).ids
        if len(ids) >= 2:
            return np.array([ids], np.int64), f"template ({len(ids)} tokens)"
    rows = np.random.default_rng(seed).integers(0, vocab, size=(1, prompt_tokens))
    return rows.astype(np.int64), f"random ({prompt_tokens} tokens)"


def _reference_run(model: Any, prompt: np.ndarray, steps: int) -> tuple[np.ndarray, list[int]]:
    """Logits (T + steps - 1, V) of the prompt and of its greedy continuation."""
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(prompt), use_cache=True)
        logits = [out.logits[0].float().numpy()]
        tokens = [int(logits[-1][-1].argmax())]
        cache = out.cache
        for _ in range(steps - 1):
            out = model(input_ids=torch.tensor([[tokens[-1]]]), cache=cache, use_cache=True)
            cache = out.cache
            logits.append(out.logits[0].float().numpy())
            tokens.append(int(logits[-1][-1].argmax()))
    return np.concatenate(logits), tokens


def _onnx_run(
    directory: Path, manifest: Manifest, prompt: np.ndarray, tokens: list[int]
) -> np.ndarray:
    """ONNX logits for the same inputs through the daemon's cache (`KvCache`): the prompt
    in two chunks, then `tokens[:-1]`."""
    session = open_session(directory / MODEL_FILE, threads=0)
    cache = KvCache(session, manifest.kv_layout, reserve_tokens=RuntimeConfig().reserve_tokens)
    split = max(1, prompt.shape[1] // 2)
    logits = [cache.forward(prompt[0, :split].tolist())]
    if split < prompt.shape[1]:
        logits.append(cache.forward(prompt[0, split:].tolist()))
    for token in tokens[:-1]:
        logits.append(cache.forward([token]))
    return np.concatenate(logits)


def verify(
    directory: Path,
    reference: Path | None = None,
    prompt_tokens: int = 24,
    decode_steps: int = 64,
    seed: int = 0,
) -> VerifyReport:
    """Compare the model directory's ONNX graph with its reference checkpoint."""
    manifest = load_manifest(directory, remembered=False)  # every byte read: see digests.py
    checkpoint = reference_dir(directory, reference)
    auto: Any = transformers.AutoModelForCausalLM  # untyped
    try:
        config = load_config(checkpoint / "config.json")
        if moe_split.is_split(config):  # not a transformers architecture: built here
            model = moe_split.from_config(config, "eager")
            moe_split.load_safetensors(model, checkpoint)
            model = model.eval()
        else:
            model = auto.from_pretrained(
                checkpoint, dtype=torch.float32, attn_implementation="eager"
            ).eval()
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load the reference checkpoint {checkpoint}: {exc}") from exc
    vocab = int(model.config.get_text_config().vocab_size)
    prompt, source = _prompt(directory, manifest, vocab, prompt_tokens, seed)
    ref_logits, tokens = _reference_run(model, prompt, decode_steps)
    onnx_logits = _onnx_run(directory, manifest, prompt, tokens)
    dot = (ref_logits * onnx_logits).sum(-1)
    norms = np.linalg.norm(ref_logits, axis=-1) * np.linalg.norm(onnx_logits, axis=-1)
    cosine = dot / np.maximum(norms, 1e-30)
    # Greedy predictions: the last prompt position, then each decode step.
    greedy = slice(prompt.shape[1] - 1, None)
    agree = onnx_logits[greedy].argmax(-1) == ref_logits[greedy].argmax(-1)
    return VerifyReport(
        precision=manifest.precision,
        prompt_tokens=prompt.shape[1],
        decode_steps=decode_steps,
        max_abs_logit_diff=float(np.abs(onnx_logits - ref_logits).max()),
        mean_cosine=float(cosine.mean()),
        min_cosine=float(cosine.min()),
        top1_agreement=float(agree.mean()),
        reference_tokens=tuple(tokens),
        prompt_source=source,
    )


def format_report(report: VerifyReport) -> str:
    """The figures `python -m export verify` prints."""
    lines = [
        f"precision {report.precision}; prompt {report.prompt_source}, prefilled in two "
        f"chunks; {report.decode_steps} greedy steps of the fp32 reference, teacher-forced",
        f"max |logit difference|   {report.max_abs_logit_diff:.3g}"
        + (f" (limit {FP32_MAX_DIFF:g})" if report.precision == "fp32" else ""),
        f"logit cosine similarity  mean {report.mean_cosine:.5f}, min {report.min_cosine:.5f}"
        + ("" if report.precision == "fp32" else f" (mean limit {MIN_COSINE})"),
        f"greedy top-1 agreement   {100 * report.top1_agreement:.1f}% "
        f"of {report.decode_steps} steps",
    ]
    if report.precision == "fp32":
        lines.append(f"greedy tokens identical: {'yes' if report.tokens_identical else 'no'}")
    lines.append("verify: " + ("passed" if report.passed else "FAILED"))
    return "\n".join(lines)
