"""A private PulseAudio daemon with one null sink, for end-to-end capture tests.

The daemon runs in the foreground of a child process we own (`--daemonize=no`), so it is
stopped by its pid, never by name. Its runtime directory is a fresh 0700 temporary
directory; the test process reaches it through `XDG_RUNTIME_DIR` and `PULSE_SERVER`,
which libpulse (pactl, paplay, and the ALSA `pulse` plugin inside PortAudio) all read.
`auth-anonymous=1` spares clients the daemon's cookie, and `XDG_CONFIG_HOME` keeps the
daemon's cookie and state out of the user's home.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
"""The shared data folder; every checkout has `shared/` next to the repository."""

SPEECH = SHARED_DATA / "speech"

DEBIAN_PACKAGES = "pulseaudio pulseaudio-utils libasound2-plugins libportaudio2"
MISSING_REASON = (
    "PulseAudio is not installed; end-to-end capture tests need it "
    f"(Debian/Ubuntu: apt-get install -y {DEBIAN_PACKAGES})"
)
START_TIMEOUT_S = 15.0
PAPLAY_FORMATS = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".au"}  # libsndfile reads these


def pulse_missing() -> str | None:
    """Why a private PulseAudio cannot be started here, or None when it can."""
    for exe in ("pulseaudio", "pactl", "paplay"):
        if shutil.which(exe) is None:
            return f"{exe} not found. {MISSING_REASON}"
    return None


@dataclass
class PulseServer:
    """A running private PulseAudio daemon whose default sink is the null sink `sink`."""

    runtime_dir: Path
    process: subprocess.Popen[bytes]
    sink: str = "cap"
    log_path: Path = field(default_factory=Path)

    @property
    def env(self) -> dict[str, str]:
        """Environment for client processes (a copy of ours plus the server's address)."""
        env = dict(os.environ)
        env.update(client_env(self.runtime_dir))
        return env

    @property
    def monitor(self) -> str:
        return f"{self.sink}.monitor"

    def pactl(self, *args: str) -> str:
        done = subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10
        )
        if done.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def sink_module(self) -> int | None:
        """Index of the module that provides the null sink, or None when it is unloaded."""
        for line in self.pactl("list", "short", "modules").splitlines():
            fields = line.split("\t")
            if (
                len(fields) >= 3
                and fields[1] == "module-null-sink"
                and f"sink_name={self.sink}" in fields[2]
            ):
                return int(fields[0])
        return None

    def load_sink(self) -> None:
        """Create the null sink (again) and make it the default sink."""
        self.pactl("load-module", "module-null-sink", f"sink_name={self.sink}")
        self.pactl("set-default-sink", self.sink)

    def unload_sink(self) -> None:
        """Remove the null sink, and with it its monitor source: a capture device vanishes."""
        module = self.sink_module()
        if module is not None:
            self.pactl("unload-module", str(module))

    def play(self, path: Path, *, wait: bool = True) -> subprocess.Popen[bytes]:
        """Play an audio file into the sink with paplay; returns the (finished) process.

        paplay reads what libsndfile reads (WAV, FLAC, Ogg); other files are decoded to a
        16 kHz WAV first with subtitled's own decoder.
        """
        if path.suffix.lower() not in PAPLAY_FORMATS:
            path = self._as_wav(path)
        proc = subprocess.Popen(
            ["paplay", f"--device={self.sink}", str(path)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if wait else subprocess.DEVNULL,
        )
        if wait:
            _, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"paplay {path} failed: {err.decode(errors='replace')}")
        return proc

    def _as_wav(self, path: Path) -> Path:
        from subtitled import SAMPLE_RATE_HZ
        from subtitled.capture import decode_file

        samples = decode_file(path)
        out = self.runtime_dir / f"{path.stem}.wav"
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
        with wave.open(str(out), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE_HZ)
            wav.writeframes(pcm.tobytes())
        return out

    def stop(self) -> None:
        """Stop the daemon we started (by its pid) and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def client_env(runtime_dir: Path) -> dict[str, str]:
    return {
        "XDG_RUNTIME_DIR": str(runtime_dir),
        "PULSE_SERVER": f"unix:{runtime_dir / 'pulse' / 'native'}",
    }


def start_pulse(runtime_dir: Path, sink: str = "cap") -> PulseServer:
    """Start `pulseaudio` on `runtime_dir` with one null sink `sink`; wait until it answers."""
    runtime_dir.chmod(0o700)
    config_home = runtime_dir / "config"
    config_home.mkdir(mode=0o700, exist_ok=True)
    log_path = runtime_dir / "pulseaudio.log"
    env = dict(os.environ)
    env.update(client_env(runtime_dir))
    env["XDG_CONFIG_HOME"] = str(config_home)
    env.pop("PULSE_SOURCE", None)
    args = [
        "pulseaudio",
        "--daemonize=no",  # our child, stopped by pid
        "--system=no",
        "--exit-idle-time=-1",
        "--disallow-exit",
        "--realtime=no",
        "--high-priority=no",
        "-n",  # no default.pa: only the modules below
        f"--load=module-null-sink sink_name={sink}",
        "--load=module-native-protocol-unix auth-anonymous=1",
        f"--log-target=newfile:{log_path}",
    ]
    with open(runtime_dir / "pulseaudio.stderr", "wb") as stderr:
        process = subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
    server = PulseServer(runtime_dir=runtime_dir, process=process, sink=sink, log_path=log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            err = (runtime_dir / "pulseaudio.stderr").read_text(errors="replace")
            raise RuntimeError(f"pulseaudio exited with {process.returncode}: {err}{_log(server)}")
        try:
            server.pactl("info")
            break
        except (RuntimeError, subprocess.TimeoutExpired):
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"pulseaudio did not answer within {START_TIMEOUT_S} s{_log(server)}"
                ) from None
            time.sleep(0.1)
    server.pactl("set-default-sink", sink)
    return server


def _log(server: PulseServer) -> str:
    try:
        return "\n" + server.log_path.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


@contextmanager
def private_pulse(sink: str = "cap") -> Iterator[PulseServer]:
    """A private PulseAudio for the duration of the block; sets our own env to reach it."""
    runtime_dir = Path(tempfile.mkdtemp(prefix="subtitled-pulse-"))
    saved = {key: os.environ.get(key) for key in ("XDG_RUNTIME_DIR", "PULSE_SERVER")}
    server = None
    try:
        server = start_pulse(runtime_dir, sink)
        os.environ.update(client_env(runtime_dir))
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if server is not None:
            server.stop()
        shutil.rmtree(runtime_dir, ignore_errors=True)
