"""`python -m export train|evaluate`: arguments; the work is in `export.train` (torch) and
`export.evaluate`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "parallel"


def _run(args: argparse.Namespace) -> int:
    from export.train import run  # torch and transformers: only here

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
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument(
        "--init",
        type=Path,
        help="start from the weights of an exported model directory (same geometry and "
        "tokenizer; quantised weights come back as the values they stand for)",
    )
    train.add_argument("--peak-lr", type=float, default=2e-3, help="peak learning rate")
    train.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    train.add_argument("--vocab-size", type=int, default=8000)
    train.add_argument(
        "--eval-pairs", type=int, default=2000, help="held-out pairs scored at the end"
    )
    train.set_defaults(run=_run)
    from export import evaluate

    evaluate.add_parser(commands, DATA_DIR)
