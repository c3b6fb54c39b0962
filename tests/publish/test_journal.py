"""The transcript journal: finals on disk before they are sent, restored after kill -9."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from subtitled.events import SegmentUpdate, Word
from subtitled.publish.journal import RESERVE_BLOCK, Journal, journal_segments, read_journal
from subtitled.publish.protocol import Feed


def final(segment_id: int, text: str) -> SegmentUpdate:
    words = tuple(Word(" " + w, i * 0.5, i * 0.5 + 0.4) for i, w in enumerate(text.split()))
    return SegmentUpdate(segment_id, 0, "final", words, (), 1.0)


def test_numbering_continues_after_reservations(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    feed = Feed()
    feed.restore(journal.open().finals, journal.reserved_through)
    for i in range(3):
        journal.ensure_reserved(feed.last_seq + 1)
        message = feed.publish_segment(final(i, f"segment number {i}"))
        journal.append_final(message.seq, message.payload)
        journal.ensure_reserved(feed.last_seq + 1)
        feed.publish_segment(SegmentUpdate(i + 1, 0, "partial", (), (Word(" x", 0, 1),), 1.0))
    journal.close()
    sent_through = feed.last_seq  # partials were sent but not journaled

    again = Journal(tmp_path / "j.jsonl")
    restored = again.open()
    assert [m["text"] for m in restored.finals] == [f"segment number {i}" for i in range(3)]
    assert restored.last_seq >= sent_through and restored.last_seq == RESERVE_BLOCK
    assert restored.next_segment_id == 3
    feed2 = Feed()
    feed2.restore(restored.finals, restored.last_seq)
    assert feed2.publish_segment(final(3, "after restart")).seq == RESERVE_BLOCK + 1
    # A client that saw everything before the restart misses nothing and gets no repeats.
    assert [m.payload["text"] for m in feed2.since(sent_through).messages] == ["after restart"]


def test_a_clean_shutdown_gives_back_the_unused_numbers(tmp_path: Path) -> None:
    """After a clean shutdown the next run numbers on from the last seq sent, not from the
    end of the reservation (that jump is only needed after a crash)."""
    path = tmp_path / "j.jsonl"
    sent: list[int] = []
    for run in range(3):
        journal = Journal(path)
        feed = Feed()
        restored = journal.open()
        feed.restore(restored.finals, restored.last_seq)
        for i in range(2):
            journal.ensure_reserved(feed.last_seq + 1)
            message = feed.publish_segment(final(2 * run + i, f"run {run} segment {i}"))
            journal.append_final(message.seq, message.payload)
            sent.append(message.seq)
        journal.ensure_reserved(feed.last_seq + 1)
        sent.append(feed.publish_segment(
            SegmentUpdate(2 * run + 2, 0, "partial", (), (Word(" x", 0, 1),), 1.0)).seq)
        journal.release(feed.last_seq)
        journal.close()
    assert sent == list(range(1, 10))
    assert read_journal(path).last_seq == 9
    # A crash (no release) still skips the whole reservation: partials were not journaled.
    crashed = Journal(path)
    crashed.open()
    crashed.ensure_reserved(10)
    crashed.close()
    assert read_journal(path).last_seq == 9 + RESERVE_BLOCK


def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.open()
    journal.ensure_reserved(1)
    feed = Feed()
    message = feed.publish_segment(final(0, "kept"))
    journal.append_final(message.seq, message.payload)
    journal.close()
    with path.open("a") as f:
        f.write('{"kind": "final", "seq": 2, "mess')  # power cut mid-write
    again = Journal(path)
    assert [m["text"] for m in again.open().finals] == ["kept"]
    again.ensure_reserved(RESERVE_BLOCK + 1)
    again.close()
    assert len(read_journal(path).finals) == 1  # and the file is appendable again
    assert [s.text for s in journal_segments(path)] == ["kept"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(port: int, env: dict[str, str], clip: Path) -> subprocess.Popen[bytes]:
    from subtitled.capture import decode_file

    # Trailing silence: a pause is what closes the last segment of a live stream.
    pcm = (decode_file(clip) * 32767).astype("<i2").tobytes() + bytes(2 * 16_000 * 3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "subtitled", "run", "--port", str(port), "--source", "stdin"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(pcm)  # paced in real time by the daemon; the pipe buffers the rest
    proc.stdin.flush()
    return proc


def receive(url: str, until: float, stop_on_final: bool) -> list[dict]:
    from websockets.sync.client import connect

    deadline = time.monotonic() + 60
    while True:
        try:
            ws = connect(url)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    messages = []
    with ws:
        while time.monotonic() < until:
            try:
                message = json.loads(ws.recv(timeout=0.5))
            except TimeoutError:
                continue
            except Exception:  # the daemon was killed under us
                break
            messages.append(message)
            if stop_on_final and message.get("status") == "final":
                break
    return messages


@pytest.mark.slow
def test_kill_9_loses_nothing_and_resume_has_no_gaps(tmp_path: Path) -> None:
    from speech import clips

    every = {c.path.name: c for c in clips()}
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    port = free_port()
    url = f"ws://127.0.0.1:{port}/"
    first = start(port, env, every["LJ001-0001.flac"].path)
    try:
        before = receive(url, time.monotonic() + 60, stop_on_final=True)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    assert any(m.get("status") == "final" for m in before), before
    last_seen = max(m["seq"] for m in before if "seq" in m and m["type"] != "hello")

    second = start(port, env, every["jfk.flac"].path)
    try:
        after = receive(f"{url}?since={last_seen}", time.monotonic() + 25, stop_on_final=False)
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=60)
    hello = after[0]
    assert hello["type"] == "hello" and hello["resume"]["complete"] is True
    finals = [m for m in before + after if m.get("type") == "segment" and m["status"] == "final"]
    journaled = read_journal(tmp_path / "state" / "subtitled" / "journal.jsonl").finals
    # Every journaled final reached the client exactly once, in seq order; ids never repeat.
    assert [m["seq"] for m in finals] == [m["seq"] for m in journaled]
    assert len({m["id"] for m in finals}) == len(finals)
    texts = " ".join(m["text"] for m in finals).lower()
    assert "printing" in texts and "country" in texts


def test_each_open_is_a_session_and_old_finals_are_session_zero(tmp_path: Path) -> None:
    """A journal written before sessions were recorded keeps its finals as session 0;
    each open after that starts a session whose finals can be read on their own."""
    path = tmp_path / "j.jsonl"
    old = {"seq": 1, "id": 0, "rev": 0, "text": "old", "words": [], "emitted": 1.0}
    path.write_text(
        json.dumps({"kind": "stream", "id": "abc"}) + "\n"
        + json.dumps({"kind": "final", "seq": 1, "message": old}) + "\n"
    )
    for number, text in [(1, "first run"), (2, "second run")]:
        journal = Journal(path, source=f"file:{number}.flac")
        feed = Feed()
        restored = journal.open()
        assert journal.session == number
        feed.restore(restored.finals, restored.last_seq)
        journal.ensure_reserved(feed.last_seq + 1)
        message = feed.publish_segment(final(number, text))
        journal.append_final(message.seq, message.payload)
        journal.close()
    restored = read_journal(path)
    assert [(s.number, s.source, len(s.finals)) for s in restored.sessions] == [
        (0, "before sessions were recorded", 1), (1, "file:1.flac", 1), (2, "file:2.flac", 1)
    ]
    assert [m["text"] for m in restored.session("last")] == ["second run"]
    assert [m["text"] for m in restored.session("1")] == ["first run"]
    assert [m["text"] for m in restored.session("all")] == ["old", "first run", "second run"]
    assert [u.segment_id for u in journal_segments(path, "0")] == [0]


def test_finals_are_fsynced_off_the_calling_thread_and_reservations_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop never waits for the disk on a final; a reservation (which keeps seq
    numbers from repeating after a power loss) is on stable storage before it returns."""
    import threading

    calls: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        time.sleep(0.05)  # a slow laptop disk
        calls.append(threading.current_thread().name)
        real_fsync(fd)

    journal = Journal(tmp_path / "j.jsonl")
    journal.open()
    monkeypatch.setattr(os, "fsync", fsync)
    started = time.monotonic()
    for seq in range(1, 6):
        journal.append_final(seq, {"seq": seq, "id": seq, "text": f"final {seq}"})
    returned_s = time.monotonic() - started
    assert returned_s < 0.05, "append_final waited for an fsync"
    # Flushed to the OS at once: another reader (or a restart after kill -9) sees them.
    assert len(read_journal(tmp_path / "j.jsonl").finals) == 5
    assert journal.wait_synced(5.0)
    assert calls and set(calls) == {"journal-fsync"}
    assert len(calls) < 5, "one fsync covers the finals written while the last one ran"
    calls.clear()
    journal.ensure_reserved(RESERVE_BLOCK + 1)
    assert calls == [threading.current_thread().name]
    journal.append_final(6, {"seq": 6, "id": 6, "text": "last"})
    journal.close()  # fsyncs what is written
    assert journal.sync_failures == 0
    assert [m["text"] for m in read_journal(tmp_path / "j.jsonl").finals][-1] == "last"


def test_a_failing_fsync_is_logged_and_writing_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.open()

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    journal.append_final(1, {"seq": 1, "id": 1, "text": "one"})
    assert journal.wait_synced(5.0)
    assert journal.sync_failures == 1
    assert "cannot fsync the transcript journal" in caplog.text
    journal.append_final(2, {"seq": 2, "id": 2, "text": "two"})
    monkeypatch.undo()
    journal.close()
    assert [m["text"] for m in read_journal(tmp_path / "j.jsonl").finals] == ["one", "two"]
