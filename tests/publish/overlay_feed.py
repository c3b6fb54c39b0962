"""Helpers of the overlay browser tests: a scripted subtitle feed and a browser page.

`ScriptedFeed` runs a real `SubtitleServer` on an event loop in its own thread, so
that a synchronous Playwright test can publish hand-made segments to the page and
stop and start the server on the same port (a daemon restart). `BrowserPage`
wraps a Playwright page that records console errors and uncaught exceptions.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from subtitled.events import SegmentUpdate, StatusUpdate
from subtitled.publish import ServerConfig, ServiceInfo, SubtitleServer
from subtitled.publish.journal import Journal

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "overlay"
# What Chromium logs (as console errors) while the daemon is down: the page's own
# /healthz probes failing. Allowed only where a test stops the daemon on purpose.
OFFLINE_NOISE = re.compile(r"Failed to load resource: net::ERR_CONNECTION_(REFUSED|RESET)")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.is_file() or shutil.which(str(CHROMIUM)) is None:
        return f"{CHROMIUM} not found: run .ci/browser-deps.sh (Debian package 'chromium')"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package 'playwright' is not installed: run .ci/browser-deps.sh"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ScriptedFeed:
    """A `SubtitleServer` on a private event loop thread, driven by plain calls."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server: SubtitleServer | None = None

    def _call(self, make: Callable[[], Awaitable[T]], timeout_s: float = 10.0) -> T:
        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout_s)

    def _do(self, function: Callable[[], T]) -> T:
        async def run() -> T:
            return function()

        return self._call(run)

    def start(
        self,
        info: ServiceInfo,
        port: int = 0,
        *,
        journal: Path | None = None,
        then: list[Any] | None = None,
        **config: Any,
    ) -> int:
        """Start a server, keeping a transcript `journal` (as `subtitled run` does) or not.

        `then` (updates) are published before any client can connect; `config`
        overrides `ServerConfig` fields.
        """
        settings: dict[str, Any] = {"port": port, "close_timeout_s": 1.0, "ping_interval_s": None}
        server_config = ServerConfig(**{**settings, **config})

        async def go() -> int:
            server = SubtitleServer(info, server_config, Journal(journal) if journal else None)
            await server.start()
            self.server = server
            for item in then or ():  # no await: nobody connects in between
                self._publish_now(item)
            return server.port

        return self._call(go)

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            self._call(lambda: server.close(drain_timeout_s=0.5))
            if server.journal is not None:
                server.journal.close()

    def _publish_now(self, item: SegmentUpdate | StatusUpdate) -> int:
        assert self.server is not None, "start() the feed first"
        if isinstance(item, StatusUpdate):
            return self.server.publish_status(item)
        return self.server.publish_segment(item)

    def publish(self, *items: SegmentUpdate | StatusUpdate) -> list[int]:
        """Publish segments and statuses in order; returns their seqs."""
        return self._do(lambda: [self._publish_now(item) for item in items])

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.overlay_url

    @property
    def clients(self) -> int:
        """Feed connections open now."""
        server = self.server
        return 0 if server is None else self._do(lambda: server.client_count)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@contextmanager
def scripted_feed() -> Iterator[ScriptedFeed]:
    feed = ScriptedFeed()
    try:
        yield feed
    finally:
        feed.close()


@dataclass
class PageProblems:
    """Console errors and uncaught exceptions a page produced."""

    errors: list[str] = field(default_factory=list)
    allow_offline: bool = False

    def on_console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location})")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"uncaught: {error}")

    def check(self) -> None:
        left = [e for e in self.errors if not (self.allow_offline and OFFLINE_NOISE.search(e))]
        assert not left, "the page reported errors:\n" + "\n".join(left)


def screenshot(page: Any, name: str, *, transparent: bool = False) -> Path:
    """Save a PNG under artifacts/overlay/ (kept by CI as a test artifact)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), omit_background=transparent)
    return path
