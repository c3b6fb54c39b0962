"""`python -m export evaluate DIR`: translation quality of an exported model through the
daemon's own runtime (subtitled.translate: ONNX Runtime, KV cache, prompt template).

Scores sacreBLEU BLEU and chrF (default tokenisation) on the Tatoeba pairs held out by
`export.tatoeba` (the same seeded split training used) and on FLORES dev. Each sentence is
translated on its own (`--context` keeps finished sentences in the cache, as the daemon
does). `--reference CHECKPOINT` scores the PyTorch fp32 checkpoint on the same sentences,
side by side, which is how "int8 within 1 BLEU of fp32" is measured.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from export import tatoeba
from export.errors import ExportError
from subtitled.translate.contract import TOKENIZER_FILE

FLORES_CODES = {"de": "deu", "es": "spa"}


def onnx_translate(
    directory: Path,
    language: str,
    context: bool,
    threads: int,
    sentence_words: int | None = None,
) -> Callable[[Sequence[str]], list[str]]:
    """A function translating sentences with the exported model, through the runtime
    (long sentences clause by clause if the model asks for it, or `sentence_words`)."""
    from subtitled.translate.runtime import OnnxModel, RuntimeConfig
    from subtitled.translate.stream import OnnxTranslator, SourceUpdate

    model = OnnxModel(directory, RuntimeConfig(threads=threads))
    translator = OnnxTranslator(model, [language], sentence_words=sentence_words)

    def run(sources: Sequence[str]) -> list[str]:
        outputs = []
        for number, source in enumerate(sources):
            if not context:
                translator.reset()
            result = translator.translate(SourceUpdate(number, source, final=True))[language]
            outputs.append((result.stable + result.unstable).strip())
        return outputs

    return run


def torch_translate(checkpoint: Path, language: str) -> Callable[[Sequence[str]], list[str]]:
    """A function translating sentences with the PyTorch fp32 checkpoint (greedy), in the
    prompt of its `subtitled.json` (pieces encoded apart and joined, as the runtime does)."""
    import torch
    import transformers
    from tokenizers import Tokenizer

    from export.model_dir import read_sidecar

    auto: Any = transformers.AutoModelForCausalLM
    model = auto.from_pretrained(checkpoint, attn_implementation="eager").eval()
    tokenizer = Tokenizer.from_file(str(checkpoint / TOKENIZER_FILE))
    template = read_sidecar(checkpoint).prompt
    if template is None:
        raise ExportError(f"{checkpoint}/subtitled.json has no prompt to translate with")

    def ids(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False).ids) if text else []

    stops = {ids(stop)[0] for stop in template["stop"]}
    preamble = ids(template["preamble"])
    pad = tokenizer.token_to_id("<pad>") or 0

    @torch.no_grad()
    def batch(sources: Sequence[str]) -> list[str]:
        prompts = [preamble + ids(_turn(template, s, language)) for s in sources]
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention[row, width - len(prompt) :] = 1
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=128,
            do_sample=False,
            eos_token_id=sorted(stops),
            pad_token_id=pad,
        )
        texts = []
        for row in output[:, width:].tolist():
            cut = next((i for i, t in enumerate(row) if t in stops), len(row))
            texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
        return texts

    def run(sources: Sequence[str]) -> list[str]:
        outputs: list[str] = []
        for start in range(0, len(sources), 16):
            outputs += batch(sources[start : start + 16])
        return outputs

    return run


def _turn(template: Mapping[str, Any], source: str, language: str) -> str:
    name = template.get("languages", {}).get(language, language)
    return str(template["source_turn"]).replace("{language}", name).replace(
        "{code}", language
    ).replace("{source}", source)


def held_out_sets(
    data_dir: Path, language: str, pairs: int, flores: bool
) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (sources, references): held-out Tatoeba pairs, and FLORES dev if asked."""
    split = tatoeba.load_split(data_dir)
    held = split.test[language][:pairs]
    sets = {"tatoeba": ([p.source for p in held], [p.target for p in held])}
    if flores:
        sources = (data_dir / "flores101-dev.eng").read_text(encoding="utf-8").splitlines()
        references = (
            (data_dir / f"flores101-dev.{FLORES_CODES[language]}")
            .read_text(encoding="utf-8")
            .splitlines()
        )
        sets["flores"] = (sources, references)
    return sets


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    import sacrebleu

    results: dict[str, Any] = {}
    # Beside the PyTorch reference (which decodes whole sentences), whole sentences too.
    split = args.sentence_words
    if split is None and args.reference is not None:
        split = 0
    for language in args.target.split(","):
        systems = {
            f"onnx-{args.directory.name}": onnx_translate(
                args.directory, language, args.context, args.threads, split
            )
        }
        if args.reference is not None:
            systems["torch-fp32"] = torch_translate(args.reference, language)
        for set_name, (sources, references) in held_out_sets(
            args.data, language, args.pairs, args.flores
        ).items():
            for system, translate in systems.items():
                started = time.monotonic()
                hypotheses = translate(sources)
                seconds = time.monotonic() - started
                bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
                chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
                key = f"{set_name}-en-{language}/{system}"
                results[key] = {
                    "sentences": len(sources),
                    "bleu": round(bleu, 2),
                    "chrf": round(chrf, 2),
                    "sentences_per_s": round(len(sources) / seconds, 1),
                }
                print(
                    f"{key}: BLEU {bleu:.2f} chrF {chrf:.2f} "
                    f"({len(sources)} sentences, {len(sources) / seconds:.1f}/s)",
                    flush=True,
                )
                if args.samples:
                    for source, hyp, ref in list(zip(sources, hypotheses, references, strict=True))[
                        : args.samples
                    ]:
                        print(f"    {source!r}\n      -> {hyp!r}\n      ref {ref!r}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def _run(args: argparse.Namespace) -> int:
    evaluate(args)
    return 0


def add_parser(commands: Any, data_dir: Path) -> None:
    """Add the `evaluate` subcommand."""
    parser = commands.add_parser(
        "evaluate", help="BLEU/chrF of an exported translation model through the runtime"
    )
    parser.add_argument("directory", type=Path, help="model directory (manifest.json)")
    parser.add_argument("--target", default="de,es", help="languages, e.g. de,es")
    parser.add_argument("--data", type=Path, default=data_dir, help="folder of the parallel data")
    parser.add_argument("--pairs", type=int, default=2000, help="held-out pairs per language")
    parser.add_argument("--flores", action="store_true", help="score FLORES dev too")
    parser.add_argument("--context", action="store_true", help="keep finished sentences as context")
    parser.add_argument("--reference", type=Path, help="PyTorch checkpoint to score side by side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--sentence-words",
        type=int,
        help="translate sentences longer than this clause by clause (0: never); default: "
        "the model's manifest, or 0 with --reference",
    )
    parser.add_argument("--samples", type=int, default=0, help="print the first N translations")
    parser.add_argument("--out", type=Path, help="write the scores as JSON")
    parser.set_defaults(run=_run)
