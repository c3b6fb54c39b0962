"""`subtitled translate`, `transcribe --target`, `subtitled models`, the config keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from subtitled.cli import main
from subtitled.config import Config, replace_path
from subtitled.errors import ConfigError, ModelError
from subtitled.translate import models
from subtitled.translate.models import resolve_model

CLIP = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "speech" / \
    "ljspeech" / "LJ001-0002.flac"


def test_translate_a_file_line_by_line(tiny_model_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.txt"
    source.write_text("In being comparatively modern.\n\nFor although the Chinese took "
                      "impressions from wood blocks.\n", encoding="utf-8")
    code = main(["translate", "--target", "de,es", "--translation-model", str(tiny_model_dir),
                 "--set", "translation.threads=1", str(source)])
    assert code == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""
    assert lines[0].count("\t") == 1 and lines[2].count("\t") == 1


def test_translate_needs_a_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["translate", "--target", "none"]) == ConfigError.exit_code
    assert "--target" in capsys.readouterr().err


def test_translate_with_a_model_that_is_not_there(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["translate", "--target", "de", "--translation-model", str(tmp_path / "x")])
    assert code == ModelError.exit_code
    assert "manifest.json" in capsys.readouterr().err


@pytest.mark.slow
def test_transcribe_with_a_target(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    code = main(["transcribe", str(CLIP), "--target", "de", "--translation-model",
                 str(tiny_model_dir), "--format", "jsonl", "-o", str(out)])
    assert code == 0
    finals = [json.loads(line) for line in out.read_text().splitlines()]
    assert finals and all("de" in f["translations"] for f in finals)
    assert "modern" in " ".join(f["text"] for f in finals).lower()


def test_transcribe_to_subtitles_of_the_source_does_not_translate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """German is the default target, but srt/vtt/txt of the source show no translation:
    transcribe does not load a model for one (a broken one here) unless asked."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json", encoding="utf-8")
    assert main(["transcribe", str(CLIP), "--translation-model", str(broken)]) == 0
    assert "modern" in capsys.readouterr().out.lower()
    code = main(["transcribe", str(CLIP), "--translation-model", str(broken), "--language", "de"])
    assert code == ModelError.exit_code


@pytest.mark.slow
def test_transcribe_with_a_corrupt_model_fails_clearly(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json", encoding="utf-8")
    code = main(["transcribe", str(CLIP), "--target", "de", "--translation-model", str(broken)])
    assert code == ModelError.exit_code
    assert "is not valid JSON" in capsys.readouterr().err


def test_bundled_and_named_models_are_looked_up_in_models_dirs(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / models.BUNDLED_MODEL).symlink_to(tiny_model_dir)
    monkeypatch.setattr(models, "models_dirs", lambda: (tmp_path,))
    assert resolve_model("bundled") == tmp_path / models.BUNDLED_MODEL
    with pytest.raises(ModelError, match="'other' is not installed"):
        resolve_model("other")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "random-gemma4_text-seed0" in out and "(bundled)" in out and "languages de, es" in out


def test_translation_config_keys() -> None:
    config = replace_path(Config(), "translation.targets", "de,es")
    assert config.translation.targets == ("de", "es") and config.translation.model == "bundled"
    with pytest.raises(ConfigError, match=r"translation\.backend"):
        replace_path(Config(), "translation.backend", "cloud")
    with pytest.raises(ConfigError, match=r"translation\.targets: .* names a language twice"):
        replace_path(Config(), "translation.targets", "de,de")


@pytest.mark.parametrize(
    ("fmt", "target", "language", "expected"),
    [
        # (format, --target, --language) -> (targets translated, language written)
        ("srt", None, None, ((), None)),  # the source: nothing to translate
        ("srt", "de", None, (("de",), "de")),  # whoever asks for a target wants it
        ("vtt", "de,es", None, (("de", "es"), "de")),  # the first of several
        ("txt", "de,es", "es", (("de", "es"), "es")),
        ("srt", None, "de", (("de",), "de")),
        ("srt", "de", "en", ((), None)),  # the source language: the transcript
        ("srt", "de", "source", ((), None)),
        ("srt", "none", None, ((), None)),
        ("jsonl", None, None, (("de",), None)),  # jsonl: every translation, default German
        ("jsonl", "es", None, (("es",), None)),
    ],
)
def test_transcribe_languages(
    fmt: str, target: str | None, language: str | None,
    expected: tuple[tuple[str, ...], str | None],
) -> None:
    from subtitled.cli import transcribe_languages

    config = Config() if target is None else replace_path(Config(), "translation.targets", target)
    got = transcribe_languages(fmt, config.translation.targets, target_given=target is not None,
                               language=language, source_language="en")
    assert got == expected


def test_transcribe_language_not_among_the_targets_fails_before_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["transcribe", str(CLIP), "--target", "de", "--language", "fr"])
    assert code == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "--language fr" in err and "--language en writes the transcript" in err
