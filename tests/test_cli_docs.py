"""The command line as a newcomer reads it: the README's command table and `--help`."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from subtitled.cli import _parser, main

README = Path(__file__).resolve().parents[1] / "README.md"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_readme_command_table_lists_every_command() -> None:
    table = README.read_text(encoding="utf-8").split("## Commands", 1)[1].split("\n\n", 2)[1]
    listed = set(re.findall(r"^\| `subtitled ([a-z-]+)", table, re.M))
    assert listed == set(subcommands())


def test_transcribe_offers_no_server_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """`transcribe` serves nothing: --host and --port are not in its help, and are refused."""
    help_text = subcommands()["transcribe"].format_help()
    assert "--host" not in help_text and "--port" not in help_text
    assert "--port" in subcommands()["run"].format_help()
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", "clip.flac", "--port", "9000"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --port" in capsys.readouterr().err
