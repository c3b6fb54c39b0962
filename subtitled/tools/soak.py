"""`subtitled soak`: the daemon for a long time under many clients, measured.

A `subtitled run --source stdin` child is fed real speech at 1x (the LJ Speech
clips of a manifest joined into a long-form, or the bundled demo recording;
looped to the length of the run), with its journal in a temporary folder.
`clients` WebSocket clients stay connected the whole time; every tenth one
disconnects every few minutes and resumes with `?since=SEQ&stream=ID`, as the
protocol tells clients to. Every `sample_s` the child's resident memory and CPU
time are read from /proc. At the end (issue 7's soak criteria):

- memory: RSS after warm-up (the first `WARMUP_S`) against the end of the run, in
  percent: the median of the samples in the `WINDOW_S` after warm-up against the
  median of the last `WINDOW_S`; at most `MAX_GROWTH_PERCENT`. RSS moves with the
  content, up by 20-50 MB for a minute or two while a long window or translation is
  in flight: a median over five minutes sees past that, a leak raises it;
- latency drift: committed-word latency (the emission time of the revision that
  first commits a word minus the wall time its audio ended, as in `subtitled
  bench`), seen by an always-connected client, in the first `WINDOW_S` of audio
  against the last; the p50 may grow by at most `MAX_DRIFT_S`;
- delivery: for every client, the messages it received against the journal: no
  final missing (after the seq it joined at), no seq received twice, seqs strictly
  increasing, and, for always-connected clients, no gap in the seq numbering at all.

Everything reported is measured in this run; nothing is assumed. What is recorded and
how it is judged lives in `subtitled.tools.soak_report`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from subtitled import SAMPLE_RATE_HZ
from subtitled.capture import decode_file
from subtitled.errors import InvalidState, SubtitledError
from subtitled.publish.journal import read_journal
from subtitled.tools.soak_report import ClientLog, CommitTracker, summarise, summary_text

log = logging.getLogger(__name__)

RECONNECT_EVERY = 10
"""Every tenth client reconnects with `since` during the run."""
RECONNECT_GAP_S = 2.0
READY_TIMEOUT_S = 120.0
GAP_S = 0.3
"""Silence between joined clips, and between loops of the audio."""


def speech_audio(manifest: Path | None, gap_s: float = GAP_S) -> npt.NDArray[np.float32]:
    """The LJ Speech clips of `manifest`, in order, or the demo; each followed by a gap."""
    import csv
    from importlib import resources

    gap = np.zeros(int(gap_s * SAMPLE_RATE_HZ), dtype=np.float32)
    if manifest is None:
        with resources.as_file(resources.files("subtitled") / "data" / "demo.flac") as path:
            return np.concatenate([decode_file(path), gap])
    with manifest.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if "ljspeech" in r["path"]]
    parts: list[npt.NDArray[np.float32]] = []
    for row in rows:
        parts += [decode_file(manifest.parent / row["path"]), gap]
    return np.concatenate(parts)


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU time of a process, from /proc (fields 14 and 15 of stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def client(
    url: str, log_: ClientLog, stop: asyncio.Event, tracker: CommitTracker | None = None
) -> None:
    """One feed client; with `reconnect_every_s`, it leaves and resumes with `since`."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    while not stop.is_set():
        query = ""
        if log_.resume_seq is not None:
            query = f"?since={log_.resume_seq}&stream={log_.stream}"
        leave_at = math.inf
        if log_.reconnect_every_s is not None:
            leave_at = time.monotonic() + log_.reconnect_every_s
            if leave_at > log_.reconnect_until:
                leave_at = math.inf
        replaying = 0
        try:
            async with connect(url + query, max_queue=None) as ws:
                while not stop.is_set() and time.monotonic() < leave_at:
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout=1.0)
                    except TimeoutError:
                        continue
                    message = json.loads(raw)
                    if message.get("type") == "hello" and "resume" in message:
                        replaying = int(message["resume"].get("replayed", 0))
                    elif "seq" in message and replaying:
                        replaying -= 1
                        log_.receive(message, time.time(), replaying=True)
                        if tracker is not None:
                            tracker.feed(message)
                        continue
                    log_.receive(message, time.time(), replaying=False)
                    if tracker is not None:
                        tracker.feed(message)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else "no close frame"
            log_.closed = f"closed by the server ({code})"
            return
        except OSError as exc:
            log_.closed = f"cannot connect: {exc}"
            return
        if stop.is_set():
            return
        log_.reconnects += 1
        await asyncio.sleep(RECONNECT_GAP_S)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _reconnects(i: int, clients: int) -> bool:
    """Every tenth client leaves and resumes (and the last one, in a small soak)."""
    return (i + 1) % RECONNECT_EVERY == 0 or (i == clients - 1 and clients > 1)


async def soak(
    manifest: Path | None,
    minutes: float,
    clients: int,
    sample_s: float = 10.0,
    resume_every_s: float = 90.0,
) -> dict[str, Any]:
    """Run the soak and return its report (see the module docstring).

    Resuming clients leave after `resume_every_s` (plus 30 s more for each tenth client,
    so they do not all leave together), stay away `RECONNECT_GAP_S`, and resume.
    """
    audio = speech_audio(manifest)
    total_samples = int(minutes * 60 * SAMPLE_RATE_HZ)
    loops = math.ceil(total_samples / len(audio))
    pcm = (np.tile(audio, loops)[:total_samples] * 32767).astype("<i2").tobytes()
    duration_s = total_samples / SAMPLE_RATE_HZ
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = Path(tempfile.mkdtemp(prefix="subtitled-soak-"))
    env = dict(os.environ, XDG_STATE_HOME=str(state))
    stderr = (state / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "subtitled",
            "run",
            "--port",
            str(port),
            "--source",
            "stdin",
            "--set",
            "server.client_queue_size=4096",
        ],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    url = f"ws://127.0.0.1:{port}/"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not await asyncio.to_thread(_healthy, f"http://127.0.0.1:{port}/healthz"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SubtitledError(f"the daemon did not start; see {state / 'daemon.log'}")
        await asyncio.sleep(0.5)
    logs = [
        ClientLog(
            reconnect_every_s=resume_every_s + 30.0 * (i // RECONNECT_EVERY)
            if _reconnects(i, clients)
            else None
        )
        for i in range(clients)
    ]
    # no client leaves in the last 30 s (set before they start: read on first connect)
    for log_ in logs:
        log_.reconnect_until = time.monotonic() + 1.0 + duration_s - 30.0
    tracker = CommitTracker()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(client(url, log_, stop, tracker if i == 0 else None))
        for i, log_ in enumerate(logs)
    ]
    await asyncio.sleep(1)  # all connected before the first audio

    def feed() -> None:
        if proc.stdin is None:
            raise InvalidState("the daemon has no stdin pipe")
        try:
            proc.stdin.write(pcm)  # paced at 1x by the daemon's stdin source
            proc.stdin.close()
        except BrokenPipeError:
            log.error("the daemon stopped reading its input")

    started = time.time()
    writer = asyncio.create_task(asyncio.to_thread(feed))
    samples: list[tuple[float, float, float, float]] = []
    while proc.poll() is None:
        try:
            sample = (time.time() - started, rss_mb(proc.pid), cpu_s(proc.pid), os.getloadavg()[0])
        except (OSError, ValueError, IndexError):  # it exited between poll and read
            break
        samples.append(sample)
        print(
            f"\rsoak: {sample[0] / 60:5.1f} of {minutes:g} min, RSS {sample[1]:.0f} MB, "
            f"{len(tracker.words)} words committed",
            end="",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.sleep(sample_s)
    print(file=sys.stderr)
    await writer
    await asyncio.sleep(2)
    stop.set()
    for log_, result in zip(
        logs, await asyncio.gather(*tasks, return_exceptions=True), strict=True
    ):
        if isinstance(result, BaseException):
            log_.closed = f"client failed: {result!r}"
    stderr.close()
    journal = read_journal(state / "subtitled" / "journal.jsonl").finals
    report = summarise(journal, logs, samples, tracker.words, started, duration_s)
    report["audio"] = {
        "source": str(manifest) if manifest else "bundled demo",
        "seconds": round(duration_s, 1),
        "loop_seconds": round(len(audio) / SAMPLE_RATE_HZ, 1),
    }
    report["daemon_exit_code"] = proc.returncode
    report["state_dir"] = str(state)
    print(summary_text(report), file=sys.stderr)
    return report
