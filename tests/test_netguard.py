"""No network, proven: the whole pipeline under an audit hook that records every connect."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from subtitled.netguard import is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True),
     (b"127.0.0.1", True), ("10.0.0.1", False), ("8.8.8.8", False), ("::ffff:1.2.3.4", False),
     ("huggingface.co", False), ("", False), (None, False),
     # One rule for every caller: bind addresses, Host headers, URLs.
     ("[::1]", True), ("LOCALHOST", True), ("ip6-localhost", True), ("fe80::1%eth0", False),
     ("0.0.0.0", False), ("::", False), ("localhost.example.com", False)],
)
def test_is_loopback(host: object, loopback: bool) -> None:
    assert is_loopback(host) is loopback


SCRIPT = textwrap.dedent("""
    import io, json, re, socket, sys, threading
    connects = []
    def record(event, args):
        if event in ("socket.connect", "socket.sendto", "socket.getaddrinfo"):
            connects.append([event, repr(args[-1] if event != "socket.getaddrinfo" else args[0])])
    sys.addaudithook(record)
    from subtitled.cli import main

    class Banner(io.StringIO):
        # The demo's stdout: the feed URL it prints, on a free port it picked itself.
        def __init__(self):
            super().__init__()
            self.url = threading.Event()
        def write(self, text):
            found = re.search(r"feed:\\s+(ws://\\S+)", self.getvalue() + text)
            if found and not self.url.is_set():
                self.feed = found.group(1)
                self.url.set()
            return super().write(text)

    # A client on loopback while the demo runs: allowed, and recorded.
    def client():
        if not banner.url.wait(120):
            connects.append(["client-error", "no feed URL printed"])
            return
        from websockets.sync.client import connect
        try:
            with connect(banner.feed) as ws:
                ws.recv(timeout=5)
        except Exception as exc:
            connects.append(["client-error", repr(exc)])
    banner = Banner()
    sys.stdout = banner
    threading.Thread(target=client, daemon=True).start()
    code = main(["demo", "--fast", "--port", "0"])
    # And an outside connect is refused by subtitled's own guard.
    try:
        socket.create_connection(("10.255.255.1", 80), timeout=0.1)
        refused = False
    except PermissionError:
        refused = True
    sys.stdout = sys.__stdout__
    print(json.dumps({"code": code, "connects": connects, "refused": refused}))
""")


@pytest.mark.slow
def test_pipeline_connects_only_to_loopback(tmp_path: Path) -> None:
    script = tmp_path / "audit.py"
    script.write_text(SCRIPT)
    run = subprocess.run([sys.executable, str(script)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["code"] == 0 and result["refused"] is True
    connects = result["connects"]
    assert not [c for c in connects if c[0] == "client-error"], connects
    assert any(event == "socket.connect" for event, _ in connects), connects  # the client
    for event, target in connects[:-1]:  # the last is the refused outside connect
        assert "127.0.0.1" in target or "localhost" in target or "::1" in target, (event, target)
