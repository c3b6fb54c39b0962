"""`subtitled soak`: the daemon for a long time under many clients, measured.

A `subtitled run --source stdin` child is fed real speech at 1x (the LJ Speech
clips of a manifest joined into a long-form, or the bundled demo recording;
looped), with its journal in a temporary folder. `clients` WebSocket
clients stay connected the whole time. Every `sample_s` the child's resident memory
is read from /proc. At the end:

- memory: growth of RSS from the end of warm-up to the end, in percent;
- latency drift: per final segment, emission wall time minus the wall time its
  audio ended (stream start + audio end), first tenth of the run vs last tenth;
- delivery: for every client, the finals it received (by seq) against the journal:
  none missing, none duplicated, seq strictly increasing.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from subtitled import SAMPLE_RATE_HZ
from subtitled.capture import decode_file
from subtitled.publish.journal import read_journal


@dataclass
class ClientLog:
    seqs: list[int] = field(default_factory=list)
    finals: list[int] = field(default_factory=list)
    closed: str = ""


def speech_audio(manifest: Path | None, gap_s: float = 0.3) -> np.ndarray:
    """The LJ Speech clips of `manifest`, in order, joined by short gaps; or the demo."""
    import csv
    from importlib import resources

    if manifest is None:
        with resources.as_file(resources.files("subtitled") / "data" / "demo.flac") as path:
            return decode_file(path)
    with manifest.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if "ljspeech" in r["path"]]
    gap = np.zeros(int(gap_s * SAMPLE_RATE_HZ), dtype=np.float32)
    parts = []
    for row in rows:
        parts += [decode_file(manifest.parent / row["path"]), gap]
    return np.concatenate(parts)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def client(url: str, log: ClientLog, stop: asyncio.Event) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, max_queue=None) as ws:
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=1.0)
            except TimeoutError:
                continue
            message = json.loads(raw)
            if "seq" in message and message.get("type") != "hello":
                log.seqs.append(int(message["seq"]))
                if message.get("status") == "final":
                    log.finals.append(int(message["seq"]))


async def soak(
    manifest: Path | None, minutes: float, clients: int, sample_s: float = 10.0
) -> dict[str, Any]:
    audio = speech_audio(manifest)
    total_samples = int(minutes * 60 * SAMPLE_RATE_HZ)
    loops = int(np.ceil(total_samples / len(audio)))
    pcm = (np.tile(audio, loops)[:total_samples] * 32767).astype("<i2").tobytes()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = Path(tempfile.mkdtemp(prefix="subtitled-soak-"))
    env = dict(os.environ, XDG_STATE_HOME=str(state))
    proc = subprocess.Popen(
        [sys.executable, "-m", "subtitled", "run", "--port", str(port), "--source", "stdin",
         "--set", "server.client_queue_size=4096"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"ws://127.0.0.1:{port}/"
    logs = [ClientLog() for _ in range(clients)]
    stop = asyncio.Event()
    await asyncio.sleep(5)  # the model loads
    tasks = [asyncio.create_task(client(url, log, stop)) for log in logs]
    await asyncio.sleep(1)
    started = time.time()

    def feed() -> None:
        assert proc.stdin is not None
        proc.stdin.write(pcm)  # paced at 1x by the daemon's stdin source
        proc.stdin.close()

    writer = asyncio.create_task(asyncio.to_thread(feed))
    samples: list[tuple[float, float]] = []
    while proc.poll() is None:
        samples.append((time.time() - started, rss_mb(proc.pid)))
        print(f"\rsoak: {samples[-1][0] / 60:5.1f} of {minutes:.0f} min, "
              f"RSS {samples[-1][1]:.0f} MB", end="", file=sys.stderr, flush=True)
        await asyncio.sleep(sample_s)
    print(file=sys.stderr)
    await writer
    await asyncio.sleep(2)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    journal = read_journal(state / "subtitled" / "journal.jsonl").finals
    return summarise(journal, logs, samples, started, minutes)


def summarise(journal: list[dict[str, Any]], logs: list[ClientLog],
              samples: list[tuple[float, float]], started: float, minutes: float) -> dict[str, Any]:
    expected = [int(m["seq"]) for m in journal]
    delivery = {
        "clients": len(logs),
        "finals_journaled": len(expected),
        "clients_missing_finals": sum(1 for log in logs if set(expected) - set(log.finals)),
        "clients_with_duplicates": sum(1 for log in logs if len(set(log.seqs)) != len(log.seqs)),
        "clients_out_of_order": sum(1 for log in logs if log.seqs != sorted(log.seqs)),
    }
    latencies = [(m["end"], m["emitted"] - (started + m["end"])) for m in journal if m["end"]]
    tenth = minutes * 60 / 10
    first = [lat for t, lat in latencies if t < tenth]
    last = [lat for t, lat in latencies if t > minutes * 60 - tenth]
    warm = [rss for t, rss in samples if t >= 120] or [rss for _, rss in samples]
    return {
        "minutes": minutes,
        "delivery": delivery,
        "rss_mb": {"after_warmup": warm[0], "end": warm[-1], "peak": max(warm),
                   "growth_percent": round(100 * (warm[-1] - warm[0]) / warm[0], 2)},
        "final_latency_s": {
            "first_tenth_p50": float(np.median(first)) if first else None,
            "last_tenth_p50": float(np.median(last)) if last else None,
        },
    }
