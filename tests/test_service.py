"""systemd integration: the notify protocol, the watchdog, SIGHUP reload, unit files."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from subtitled import service
from subtitled.service import Notifier

REPO = Path(__file__).resolve().parents[1]
UNITS = [REPO / "systemd" / "subtitled.service", REPO / "systemd" / "subtitled-system.service"]


def listener(tmp_path: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(0.5)
    return sock, path


def receive_until(sock: socket.socket, wanted: str, timeout_s: float) -> list[str]:
    """Datagrams until one contains `wanted`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            continue
        seen.append(message)
        if wanted in message.split("\n"):
            return seen
    raise AssertionError(f"no {wanted!r} within {timeout_s} s; got {seen}")


def test_notifier_sends_datagrams(tmp_path: Path) -> None:
    sock, path = listener(tmp_path)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    assert notifier.enabled and notifier.watchdog_s == 0.2
    notifier.ready("all good")
    assert sock.recv(4096).decode() == "READY=1\nSTATUS=all good"

    async def pings() -> None:
        task = asyncio.create_task(notifier.watchdog())
        await asyncio.sleep(0.35)
        task.cancel()

    asyncio.run(pings())
    assert [sock.recv(4096), sock.recv(4096)] == [b"WATCHDOG=1", b"WATCHDOG=1"]


def test_notifier_without_systemd_does_nothing() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_s is None
    notifier.ready("ignored")  # no socket: no error
    # A watchdog meant for another process (WATCHDOG_PID) is not ours to ping.
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"}).watchdog_s \
        is None


needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not found (Debian package: systemd)",
)


@needs_analyze
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_shipped_units_verify(unit: Path, tmp_path: Path) -> None:
    user = "system" not in unit.name
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    tmp_path.chmod(0o700)
    args = ["systemd-analyze", "verify", *(["--user"] if user else []), str(unit)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_packaged_unit_is_the_one_in_systemd() -> None:
    """`subtitled service install` writes the unit packaged in subtitled/data; the repo's
    systemd/ folder shows the same unit to people who install by hand. One file, twice."""
    from importlib import resources

    packaged = resources.files("subtitled") / "data" / "subtitled.service"
    repo = Path(__file__).resolve().parents[1] / "systemd" / "subtitled.service"
    assert packaged.read_bytes() == repo.read_bytes()


@needs_analyze
def test_installed_unit_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = service.install(enable=False)
    assert path == tmp_path / "config" / "systemd" / "user" / "subtitled.service"
    text = path.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert Path(exec_start.split("=", 1)[1].split()[0]).is_absolute()
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    done = subprocess.run(["systemd-analyze", "verify", "--user", str(path)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_daemon_under_a_notify_socket(tmp_path: Path) -> None:
    """READY after the port is bound, watchdog pings, SIGHUP reload keeps clients, SIGTERM."""
    from websockets.sync.client import connect

    sock, path = listener(tmp_path)
    config_dir = tmp_path / "subtitled"
    config_dir.mkdir()
    (config_dir / "config.toml").write_text("[streaming]\nstep_s = 0.5\n")
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000",
               XDG_CONFIG_HOME=str(tmp_path))
    # stdin never ends and never speaks: the daemon idles, as a service on a quiet mic would.
    proc = subprocess.Popen(
        [sys.executable, "-m", "subtitled", "run", "--port", "0", "--source", "stdin"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        seen = receive_until(sock, "READY=1", 60)
        assert proc.stdout is not None
        url = next(line.split()[1] for line in iter(proc.stdout.readline, "")
                   if line.startswith("feed:"))
        receive_until(sock, "WATCHDOG=1", 5)
        with connect(url) as ws:
            hello = json.loads(ws.recv())
            assert hello["type"] == "hello"
            (config_dir / "config.toml").write_text("[streaming]\nstep_s = 0.6\n")
            proc.send_signal(signal.SIGHUP)
            seen = receive_until(sock, "RELOADING=1", 10)
            receive_until(sock, "READY=1", 30)
            ws.send(json.dumps({"type": "ping"}))  # the client survived the reload
            replies = [json.loads(ws.recv(timeout=5))]
            while replies[-1]["type"] != "pong" and len(replies) < 20:
                replies.append(json.loads(ws.recv(timeout=5)))
            assert replies[-1]["type"] == "pong", replies
        proc.send_signal(signal.SIGTERM)
        receive_until(sock, "STOPPING=1", 10)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "configuration reloaded" in err
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert seen
