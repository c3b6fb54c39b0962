"""The no-network promise, enforced in-process.

`install()` adds a `sys.addaudithook` hook that refuses (PermissionError) any
`socket.connect`, `socket.sendto` or `socket.getaddrinfo` aimed at something other
than this machine's loopback, and puts the model-hub libraries that faster-whisper
pulls in (huggingface_hub, transformers) into offline mode. Unix sockets (the
systemd notify socket, PulseAudio) are local by construction and always allowed.
Audit hooks cannot be removed: install once, in the process that runs the daemon.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import sys
from typing import Any

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
_LOCAL_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: object) -> bool:
    """True for a loopback address or name (127.0.0.0/8, ::1 with or without brackets or a
    scope, localhost): the one rule for what "this machine only" means, used by the
    network guard, the server's bind and Host checks, and the OpenAI-compatible backend."""
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event in ("socket.connect", "socket.sendto"):
        sock, address = args[0], args[-1]
        inet = getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6)
        if inet and isinstance(address, tuple) and not is_loopback(address[0]):
            raise PermissionError(f"subtitled makes no network connections ({address[0]})")
    elif event == "socket.getaddrinfo":
        host = args[0]
        if host is not None and not is_loopback(host):
            raise PermissionError(f"subtitled resolves no network names ({host!r})")


@functools.cache
def install() -> None:
    """Offline mode for hub libraries, and the audit hook. Runs once per process."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    sys.addaudithook(_hook)
