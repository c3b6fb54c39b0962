"""The transcript journal: every final segment on disk before any client sees it.

One JSON object per line, appended and flushed to the OS before the call returns:

    {"kind": "stream", "id": "3f9c..."}
    {"kind": "session", "number": 3, "started": 1733390000.0, "source": "file:talk.flac"}
    {"kind": "final", "seq": 42, "message": {...the segment message as sent...}}
    {"kind": "reserve", "through": 2000}
    {"kind": "release", "through": 1042}

Sequence numbers must never repeat across restarts, or a client resuming with
`?since=SEQ` would skip or repeat messages. Partials are not journaled, so the
journal also records *reservations* (the hi/lo scheme): before the feed hands out
seq N it has written `reserve` through at least N. A restarted daemon continues
after the highest reservation, so every seq it sends is new, and a client that
saw seq N gets replayed exactly the finals after N. A daemon that shuts down cleanly
releases what it did not use (`release` through its last seq): the next run goes on
from there, so numbering jumps only after a crash. A torn last line (power loss,
`kill -9` mid-write) is dropped on open; everything before it is intact because
each line was written whole before the next.

Durability: a record is in the OS's hands (`write` + `flush`) before `append_final` returns,
so a final a client has seen survives the daemon's death (`kill -9`, a crash). `fsync`, which
also survives a power loss, costs milliseconds to tens of milliseconds on a laptop disk: for
finals it runs on the journal's own thread, off the event loop (one `fsync` covers every
record written since the last), so a power loss can lose the finals of the last moment.
Reservations, the session and stream records are fsync'ed before the call returns: seq
numbers must never repeat, even after a power loss. The `stream` id names this
numbering; it is sent in hello, so a client can tell "the daemon restarted and went
on" (same id) from "numbering began again" (a new journal, or none: a new id).

Each `run` is a *session*: a `session` record opens it and the finals after it belong to
it, so `subtitled transcript --session last|N|all` exports one run (or all of them) and
`--sessions` lists them. Finals journaled before sessions were recorded form session 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from subtitled.errors import SubtitledError
from subtitled.events import SegmentUpdate, Translation, Word

log = logging.getLogger(__name__)

RESERVE_BLOCK = 1000
"""Sequence numbers reserved per journal write (one small record per 1000 messages)."""


def default_journal_path() -> Path:
    """`$XDG_STATE_HOME/subtitled/journal.jsonl` (default `~/.local/state/...`)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "subtitled" / "journal.jsonl"


def new_stream_id() -> str:
    """A fresh id for a numbering of the feed (seq 1, 2, ...)."""
    return secrets.token_hex(8)


class JournalError(SubtitledError):
    """The journal cannot be read or written."""


@dataclass
class Session:
    """One run of the daemon on the journal: when it started, what it listened to, and
    its finals (indexes into `Restored.finals`)."""

    number: int
    started_unix: float | None
    source: str
    finals: list[int] = field(default_factory=list)


@dataclass
class Restored:
    """What a journal held: the final messages, in order, and where numbering resumes."""

    finals: list[dict[str, Any]] = field(default_factory=list)
    reserved_through: int = 0
    stream_id: str | None = None
    sessions: list[Session] = field(default_factory=list)
    """In order; session 0 (finals from before sessions were recorded) only if it has any."""

    def session(self, which: str) -> list[dict[str, Any]]:
        """The finals of session `which`: 'all', 'last' or a session number."""
        if which == "all":
            return list(self.finals)
        numbered = [s for s in self.sessions if s.number > 0 or s.finals]
        if not numbered:
            raise JournalError("the journal holds no session yet")
        if which == "last":
            chosen = numbered[-1]
        else:
            try:
                number = int(which)
            except ValueError:
                raise JournalError(
                    f"--session {which!r}: give 'last', 'all' or a session number"
                ) from None
            found = [s for s in numbered if s.number == number]
            if not found:
                known = ", ".join(str(s.number) for s in numbered)
                raise JournalError(f"no session {number} in the journal (sessions: {known})")
            chosen = found[0]
        return [self.finals[i] for i in chosen.finals]

    @property
    def last_seq(self) -> int:
        """The highest seq that may have been sent: numbering continues after it."""
        last_final = self.finals[-1]["seq"] if self.finals else 0
        return max(self.reserved_through, int(last_final))

    @property
    def next_segment_id(self) -> int:
        return max((int(m["id"]) for m in self.finals), default=-1) + 1


def read_journal(path: Path) -> Restored:
    """Parse a journal; a torn or garbled line is skipped with a warning."""
    restored = Restored()
    if not path.exists():
        return restored
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise JournalError(f"cannot read the transcript journal {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            kind = record["kind"]
            if kind == "final":
                message = record["message"]
                if message["seq"] != record["seq"] or not isinstance(message["id"], int):
                    raise ValueError("seq or id mismatch")
                if not restored.sessions:
                    restored.sessions.append(Session(0, None, "before sessions were recorded"))
                restored.sessions[-1].finals.append(len(restored.finals))
                restored.finals.append(message)
            elif kind == "session":
                started = record.get("started")
                restored.sessions.append(
                    Session(
                        int(record["number"]),
                        float(started) if started is not None else None,
                        str(record.get("source", "")),
                    )
                )
            elif kind == "stream":
                restored.stream_id = restored.stream_id or str(record["id"])
            elif kind == "reserve":
                restored.reserved_through = max(restored.reserved_through, int(record["through"]))
            elif kind == "release":
                # Written after the last send: nothing above it was ever handed out.
                restored.reserved_through = int(record["through"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s:%d: skipped an unreadable journal line (%s)", path, number, exc)
    return restored


class Journal:
    """Appends finals and seq reservations to the journal file, durably."""

    def __init__(self, path: Path, source: str = "") -> None:
        self.path = path
        self.source = source
        """What this run listens to, recorded with its session."""
        self.session = 0
        self.reserved_through = 0
        self.restored = Restored()
        self._file: TextIO | None = None
        self._syncer: _Syncer | None = None

    def open(self) -> Restored:
        """Read what is there, then open for appending. Returns the restored history."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            restored = read_journal(self.path)
            self._repair_tail()
            self._file = self.path.open("a", encoding="utf-8")
            self._syncer = _Syncer(self._file.fileno(), str(self.path))
        except OSError as exc:
            raise JournalError(f"cannot open the transcript journal {self.path}: {exc}") from exc
        self.reserved_through = restored.last_seq
        if restored.stream_id is None:
            restored.stream_id = new_stream_id()
            self._write({"kind": "stream", "id": restored.stream_id})
        self.session = max((s.number for s in restored.sessions), default=0) + 1
        started = round(time.time(), 3)
        self._write(
            {"kind": "session", "number": self.session, "started": started, "source": self.source}
        )
        restored.sessions.append(Session(self.session, started, self.source))
        self.restored = restored
        return restored

    def _repair_tail(self) -> None:
        """A file not ending in a newline had its last write torn: end it cleanly."""
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def ensure_reserved(self, seq: int) -> None:
        """Make sure `seq` is covered by a reservation on disk before it is used."""
        if seq > self.reserved_through:
            through = seq + RESERVE_BLOCK - 1
            self._write({"kind": "reserve", "through": through})
            self.reserved_through = through

    def release(self, last_seq: int) -> None:
        """A clean shutdown: no seq above `last_seq` was handed out, so the reservation
        beyond it is given back and the next run numbers on from `last_seq + 1`. Call it
        only once nothing more will be sent."""
        if self._file is not None and last_seq < self.reserved_through:
            self._write({"kind": "release", "through": last_seq})
            self.reserved_through = last_seq

    def append_final(self, seq: int, message: Mapping[str, Any]) -> None:
        """Write a final: flushed to the OS on return, fsync'ed soon after on the journal's
        own thread (see the module's note on durability)."""
        self._write({"kind": "final", "seq": seq, "message": message}, sync=False)

    def _write(self, record: Mapping[str, Any], *, sync: bool = True) -> None:
        if self._file is None or self._syncer is None:
            raise JournalError("the journal is not open")
        try:
            self._file.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())
            else:
                self._syncer.dirty()
        except OSError as exc:
            raise JournalError(f"cannot write the transcript journal {self.path}: {exc}") from exc

    @property
    def sync_failures(self) -> int:
        """Background fsyncs that failed (each is logged)."""
        return 0 if self._syncer is None else self._syncer.failures

    def wait_synced(self, timeout_s: float | None = None) -> bool:
        """Block until every final written so far is fsync'ed; False on timeout."""
        return True if self._syncer is None else self._syncer.wait(timeout_s)

    def close(self) -> None:
        """fsync what is written and close the file."""
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


class _Syncer:
    """The journal's fsync thread: after `dirty()`, one `fsync` covers every record written
    before it began (group commit). A failure is logged and counted; the next write tries
    again."""

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self._name = name
        self._cond = threading.Condition()
        self._written = 0  # dirty() calls so far
        self._synced = 0  # of them, covered by a finished fsync
        self._stopping = False
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="journal-fsync", daemon=True)
        self._thread.start()

    def dirty(self) -> None:
        with self._cond:
            self._written += 1
            self._cond.notify_all()

    def wait(self, timeout_s: float | None) -> bool:
        with self._cond:
            target = self._written
            return self._cond.wait_for(lambda: self._synced >= target, timeout_s)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._written > self._synced or self._stopping)
                if self._written == self._synced:
                    return  # stopping, nothing left
                target = self._written
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self.failures += 1
                log.error("cannot fsync the transcript journal %s: %s", self._name, exc)
            with self._cond:
                self._synced = target
                self._cond.notify_all()


def segment_from_message(message: Mapping[str, Any]) -> SegmentUpdate:
    """A final `segment` message (as journaled) back to a `SegmentUpdate`."""
    words = tuple(
        Word(text=str(w["w"]), start_s=float(w["start"] or 0.0), end_s=float(w["end"] or 0.0))
        for w in message["words"]
    )
    translations = {
        lang: Translation(stable=str(t["stable"]), unstable=str(t.get("unstable", "")))
        for lang, t in message.get("translations", {}).items()
    }
    return SegmentUpdate(
        segment_id=int(message["id"]),
        revision=int(message["rev"]),
        status="final",
        committed=words,
        partial=(),
        emitted_unix=float(message["emitted"] or 0.0),
        translations=translations,
        language=message.get("language"),
        spoken_language=message.get("spoken"),
    )


def journal_segments(path: Path, session: str = "all") -> Iterator[SegmentUpdate]:
    """The final segments of a journal (of one session: 'last', a number, or 'all'), for
    `subtitled transcript`."""
    if not path.exists():
        raise JournalError(f"no transcript journal at {path}")
    for message in read_journal(path).session(session):
        yield segment_from_message(message)


def format_sessions(path: Path) -> str:
    """One line per session: number, start, source, segments, speech time."""
    if not path.exists():
        raise JournalError(f"no transcript journal at {path}")
    restored = read_journal(path)
    lines = [f"{'session':>7}  {'started':<19}  {'segments':>8}  {'speech':>8}  source"]
    for entry in restored.sessions:
        messages = [restored.finals[i] for i in entry.finals]
        if entry.number == 0 and not messages:
            continue
        started = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.started_unix))
            if entry.started_unix is not None
            else "-"
        )
        ends = [w["end"] for m in messages for w in m["words"] if w.get("end") is not None]
        starts = [w["start"] for m in messages for w in m["words"] if w.get("start") is not None]
        speech = f"{max(ends) - min(starts):7.1f}s" if ends and starts else f"{'-':>8}"
        lines.append(
            f"{entry.number:>7}  {started:<19}  {len(messages):>8}  {speech}  {entry.source}"
        )
    return "\n".join(lines) + "\n"
