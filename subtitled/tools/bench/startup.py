"""Start-up time: `subtitled run` from launch to READY, to the first caption, and to
translation being live, measured on real processes (`subtitled bench-startup`).

Each run launches `python -m subtitled run --source file:CLIP` on a free port with its own
`$NOTIFY_SOCKET` (the sd_notify datagram socket systemd would give it) and journal folder,
and a WebSocket client that keeps trying to connect from the moment of launch:
- READY: the `READY=1` datagram (models loaded, port bound: what systemd waits for);
- first caption: the first `segment` message with words (so it includes the clip's
  silence before its first word, reported beside it);
- translation live: the first `hello` naming a translation model (it loads in the
  background while captions already flow).
The daemon is then stopped with SIGINT. Times are wall clock from launch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from subtitled.errors import SubtitledError


@dataclass(frozen=True)
class StartupRun:
    """One launch; None where the moment never came within the timeout."""

    ready_s: float | None
    first_caption_s: float | None
    first_word_audio_s: float | None
    """Where the first caption's first word starts in the clip."""
    translation_live_s: float | None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _notified_ready(sock: socket.socket) -> bool:
    while True:
        try:
            message = sock.recv(4096)
        except BlockingIOError:
            return False
        if b"READY=1" in message.split(b"\n"):
            return True


def launch_once(
    clip: Path, targets: str, timeout_s: float = 120.0, extra: Sequence[str] = ()
) -> StartupRun:
    """Launch one daemon on `clip` and time it (see the module docstring)."""
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import ClientConnection, connect

    with tempfile.TemporaryDirectory(prefix="subtitled-startup-") as tmp:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(Path(tmp) / "notify"))
        notify.setblocking(False)
        port = _free_port()
        env = {**os.environ, "NOTIFY_SOCKET": str(Path(tmp) / "notify"),
               "XDG_STATE_HOME": tmp, "XDG_CONFIG_HOME": tmp}
        command = [sys.executable, "-m", "subtitled", "run", "--source", f"file:{clip}",
                   "--port", str(port), "--target", targets, *extra]
        started = time.monotonic()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        ready = caption = word = live = None
        ws: ClientConnection | None = None
        want_translation = targets != "none"
        stack = contextlib.ExitStack()
        try:
            while time.monotonic() - started < timeout_s and proc.poll() is None:
                now = time.monotonic() - started
                if ready is None and _notified_ready(notify):
                    ready = now
                if ws is None:
                    with contextlib.suppress(OSError, WebSocketException):
                        ws = stack.enter_context(
                            connect(f"ws://127.0.0.1:{port}/", open_timeout=1)
                        )
                    if ws is None:
                        time.sleep(0.02)
                        continue
                try:
                    message: dict[str, Any] = json.loads(ws.recv(timeout=0.05))
                except TimeoutError:
                    message = {}
                now = time.monotonic() - started
                kind = message.get("type")
                if kind == "hello" and (message.get("models") or {}).get("translation"):
                    live = live if live is not None else now
                if kind == "segment" and message.get("words") and caption is None:
                    caption = now
                    word = message["words"][0].get("start")
                done = ready is not None and caption is not None
                if done and (live is not None or not want_translation):
                    break
        finally:
            stack.close()
            notify.close()
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if ready is None and proc.returncode not in (0, -signal.SIGINT, 130):
            stderr = proc.stderr.read() if proc.stderr is not None else ""
            raise SubtitledError(f"subtitled run failed ({proc.returncode}): {stderr[-2000:]}")
        return StartupRun(ready, caption, word, live)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: Sequence[StartupRun]) -> dict[str, Any]:
    """Medians over the runs, and every run."""
    return {
        "runs": len(runs),
        "ready_s": _median([r.ready_s for r in runs]),
        "first_caption_s": _median([r.first_caption_s for r in runs]),
        "first_word_audio_s": _median([r.first_word_audio_s for r in runs]),
        "translation_live_s": _median([r.translation_live_s for r in runs]),
        "each": [r.__dict__ for r in runs],
    }


def format_summary(summary: dict[str, Any]) -> str:
    def fmt(key: str) -> str:
        value = summary[key]
        return "never" if value is None else f"{value:.2f} s"

    return "\n".join([
        f"subtitled bench-startup: median of {summary['runs']} launches of `subtitled run`",
        f"  to READY (models loaded, port bound)   {fmt('ready_s')}",
        f"  to the first caption                   {fmt('first_caption_s')}"
        f"  (its first word starts at {fmt('first_word_audio_s')} in the clip)",
        f"  to translation live                    {fmt('translation_live_s')}",
    ])


def run_startup_bench(
    clip: Path, runs: int, targets: str, progress: Callable[[str], None]
) -> dict[str, Any]:
    results = []
    for i in range(runs):
        progress(f"bench-startup: launch {i + 1} of {runs}")
        results.append(launch_once(clip, targets))
    return summarise(results)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `bench-startup` on the top-level subcommands."""
    bench = commands.add_parser(
        "bench-startup", help="time from `subtitled run` to READY, first caption, translation"
    )
    bench.add_argument("--clip", type=Path,
                       help="audio file to caption (default: the demo recording)")
    bench.add_argument("--runs", type=int, default=3, help="launches (the median is reported)")
    bench.add_argument("--target", default="de", metavar="LANGS",
                       help="translation targets of the launched daemon ('none': captions only)")
    bench.add_argument("--out", type=Path, help="write the JSON report here")
    bench.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from importlib import resources

    from subtitled.errors import ConfigError

    if args.runs < 1:
        raise ConfigError(f"--runs: {args.runs} is invalid; expected >= 1")
    clip = args.clip or Path(str(resources.files("subtitled") / "data" / "demo.flac"))
    if not clip.is_file():
        raise ConfigError(f"--clip: {clip} does not exist")
    summary = run_startup_bench(
        clip, args.runs, args.target, lambda line: print(line, file=sys.stderr, flush=True)
    )
    summary["clip"] = str(clip)
    summary["target"] = args.target
    print(format_summary(summary))
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(f"\nreport: {args.out}")
    return 0
