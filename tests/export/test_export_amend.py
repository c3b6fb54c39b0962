"""`python -m export amend`: prompt keys of an exported model changed in place, its
documentation re-hashed, and never a changed model blessed (on a copy of the bundled model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from export.cli import main
from subtitled.errors import ModelError
from subtitled.translate.manifest import load_manifest
from subtitled.translate.models import resolve_model

TATOEBA_MODEL = "subtitled-moe-small"  # the Tatoeba-only model, kept for these tests


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(resolve_model(TATOEBA_MODEL), copy)
    return copy


def test_prompt_key_and_model_card_are_amended(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = load_manifest(model_dir)
    with (model_dir / "MODEL_CARD.md").open("a") as card:
        card.write("\nAmended.\n")
    with pytest.raises(ModelError, match=r"MODEL_CARD\.md does not match its sha256"):
        load_manifest(model_dir)
    assert main(["amend", str(model_dir), "--prompt", "sentence_words=9"]) == 0
    assert '"sentence_words": 9' in capsys.readouterr().out
    after = load_manifest(model_dir)  # every sha256 checked again
    assert after.prompt is not None and before.prompt is not None
    assert after.prompt.sentence_words == 9
    assert after.prompt.languages == before.prompt.languages
    assert after.prompt.source_turn == before.prompt.source_turn
    unchanged = {f.path: f for f in before.files if f.path != "MODEL_CARD.md"}
    assert unchanged == {f.path: f for f in after.files if f.path != "MODEL_CARD.md"}


def test_a_changed_model_file_or_bad_key_is_refused(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = (model_dir / "manifest.json").read_text()
    assert main(["amend", str(model_dir), "--prompt", "sentence_words=-3"]) == 2
    assert "'sentence_words' must be an integer >= 0" in capsys.readouterr().err
    assert main(["amend", str(model_dir), "--prompt", "temperature=1"]) == 2
    assert "prompt key 'temperature' unknown" in capsys.readouterr().err
    with (model_dir / "tokenizer.json").open("a") as tokenizer:
        tokenizer.write(" ")
    assert main(["amend", str(model_dir), "--prompt", "sentence_words=9"]) == 2
    err = capsys.readouterr().err
    assert "tokenizer.json does not match its sha256" in err and "re-export" in err
    assert (model_dir / "manifest.json").read_text() == manifest
    with pytest.raises(SystemExit):
        main(["amend", str(model_dir), "--prompt", "sentence_words"])
    assert "expected KEY=VALUE" in capsys.readouterr().err
