"""`subtitled bench-translate`: streaming translation with and without KV-cache reuse."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `bench-translate` on the top-level subcommands."""
    bench = commands.add_parser("bench-translate", help="benchmark streaming translation")
    bench.set_defaults(handler=lambda args: 2)
