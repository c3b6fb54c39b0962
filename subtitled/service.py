"""Running as a systemd service: the notify protocol, the watchdog, and unit install.

The notify protocol (sd_notify(3)) is one datagram per message to the AF_UNIX socket
named in `$NOTIFY_SOCKET` (a leading '@' means the abstract namespace):
`READY=1` once models are loaded and the port is bound, `STATUS=...` lines,
`RELOADING=1` / `READY=1` around a reload, `STOPPING=1`, and `WATCHDOG=1` pings at
half of `$WATCHDOG_USEC`. The pings come from a task on the daemon's own event loop,
so a stalled loop stops pinging and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path

from subtitled.errors import ConfigError

log = logging.getLogger(__name__)

UNIT_NAME = "subtitled.service"


class Notifier:
    """sd_notify over `$NOTIFY_SOCKET`; does nothing when not run by systemd."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and mine else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> None:
        if self.address is None:
            return
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:  # systemd went away: nothing to tell
            log.debug("sd_notify %r failed: %s", message, exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        self.send("RELOADING=1", "STATUS=reloading the configuration")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: finishing captured audio")

    async def watchdog(self) -> None:
        """Ping at half the watchdog interval for as long as the loop runs."""
        if self.watchdog_s is None or self.address is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s / 2)


def user_unit_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user" / UNIT_NAME


SHIPPED_EXEC_START = "ExecStart=/usr/bin/env subtitled run"


def unit_text() -> str:
    """The shipped user unit (`systemd/subtitled.service`), run by this installation."""
    template = (resources.files("subtitled") / "data" / "subtitled.service").read_text()
    executable = shutil.which("subtitled") or f"{sys.executable} -m subtitled"
    if SHIPPED_EXEC_START not in template:
        raise ConfigError("the packaged unit file has no ExecStart line to fill in")
    return template.replace(SHIPPED_EXEC_START, f"ExecStart={executable} run")


def install(enable: bool = True) -> Path:
    """Write the user unit and (optionally) enable and start it."""
    path = user_unit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unit_text(), encoding="utf-8")
    if enable:
        _systemctl("daemon-reload")
        _systemctl("enable", "--now", UNIT_NAME)
    return path


def uninstall() -> Path:
    """Stop, disable and remove the user unit."""
    path = user_unit_path()
    if path.exists():
        _systemctl("disable", "--now", UNIT_NAME, check=False)
        path.unlink()
        _systemctl("daemon-reload", check=False)
    return path


def _systemctl(*args: str, check: bool = True) -> None:
    if shutil.which("systemctl") is None:
        raise ConfigError("systemctl not found: this machine does not run systemd")
    done = subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise ConfigError(f"systemctl --user {' '.join(args)} failed: {done.stderr.strip()}")
