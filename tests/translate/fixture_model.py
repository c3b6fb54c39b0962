"""Random-weight translation models for tests and for `subtitled bench-translate` before
the bundled model exists: an `export/` random export plus a small BPE tokenizer and the
bundled model's prompt template written into its manifest.

    python tests/translate/fixture_model.py OUT_DIR [--bench]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _p in (ROOT, ROOT / "tests", ROOT / "tests" / "export"):
    if str(_p) not in sys.path:
        sys.path.append(str(_p))

from subtitled.translate.manifest import PromptTemplate, file_entry, load_manifest  # noqa: E402

SPECIAL = ["<pad>", "<bos>", "<eos>", "<sep>", "<2de>", "<2es>"]
PROMPT = PromptTemplate(
    preamble="<bos>",
    source_turn="<2{code}>{source}<sep>",
    target_end="<eos>",
    stop=("<eos>",),
    languages={"de": "German", "es": "Spanish"},
)
SHARED = ROOT.parent / "shared" / "data"


def training_text() -> list[str]:
    lines: list[str] = []
    manifest = SHARED / "speech" / "manifest.tsv"
    if manifest.is_file():
        for row in manifest.read_text(encoding="utf-8").splitlines()[1:]:
            lines.append(row.split("\t")[-1])
    for name in ("flores101-dev.deu", "flores101-dev.spa"):
        path = SHARED / "parallel" / name
        if path.is_file():
            lines += path.read_text(encoding="utf-8").splitlines()[:300]
    return lines or ["the quick brown fox jumps over the lazy dog"]


def write_tokenizer(path: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_text(), trainer)
    tokenizer.save(str(path))


def make_model(config: dict[str, Any], out: Path, seed: int = 0,
               max_positions: int | None = None, kv_cache: str = "shared") -> Path:
    """Export a random model of `config` to `out` and make it a translation model
    (`kv_cache` as `python -m export onnx --kv-cache`)."""
    from export.reference import export_random

    try:  # export takes a Precision object since quantisation landed
        from export.plan import PRECISIONS

        precision: Any = PRECISIONS["fp32"]
        if kv_cache != "shared":
            precision = dataclasses.replace(precision, shared_cache=False)
    except ImportError:
        precision = "fp32"
    import export.reference as reference

    smooth = reference.random_model

    def sharp(config: dict[str, Any], seed: int = 0) -> Any:
        """Norm weights of 1 +- 0.5 (the export's first random init): with the export's
        smoother init (O(1) attention scores) a random model repeats one token whatever
        the input, and tests of streaming decoding need outputs that follow the source."""
        import torch

        model = smooth(config, seed)
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if tensor.dim() == 1 and not name.endswith(("per_expert_scale", "layer_scalar")):
                    noise = torch.randn(tensor.shape, generator=generator)
                    tensor.copy_(1.0 + 0.5 * noise)  # norms and q/k norms: sharp, varied
        return model

    reference.random_model = sharp
    try:
        manifest = export_random(config, out, precision, seed)
    finally:
        reference.random_model = smooth
    write_tokenizer(out / "tokenizer.json", config["vocab_size"])
    files = [f.path for f in manifest.files] + ["tokenizer.json"]
    manifest = dataclasses.replace(
        manifest,
        tokenizer="tokenizer.json",
        prompt=PROMPT,
        max_positions=max_positions or config.get("max_position_embeddings"),
        files=tuple(file_entry(out, f) for f in files),
    )
    manifest.write(out)
    load_manifest(out)
    return out


def tiny_model(base: Path, kv_cache: str = "shared") -> Path:
    """The tiny Gemma-4-shaped test model under `base` (a session's temp root), made once
    and shared by every test package that asks."""
    from export_configs import tiny_gemma4

    out = base / ("tiny_translation" if kv_cache == "shared" else f"tiny_translation_{kv_cache}")
    lock = out / "ready"
    if not lock.is_file():
        make_model(tiny_gemma4(), out, kv_cache=kv_cache)
        lock.write_text("ok\n")
    return out


def bench_config() -> dict[str, Any]:
    """A small Gemma-4-shaped MoE for benchmarks (about 5 M parameters, 4k vocabulary):
    sliding layers with a 128-token window between full K=V layers, 8 experts top-2."""
    from export_configs import tiny_gemma4

    config = tiny_gemma4()
    config.update(
        vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, global_head_dim=64,
        moe_intermediate_size=128, sliding_window=128, max_position_embeddings=4096,
    )
    return config


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--bench", action="store_true", help="the benchmark-sized config")
    args = parser.parse_args()
    if args.bench:
        cfg = bench_config()
    else:
        from export_configs import tiny_gemma4

        cfg = tiny_gemma4()
    make_model(cfg, args.out)
    print(args.out)
