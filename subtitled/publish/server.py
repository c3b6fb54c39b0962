"""The subtitle server: the asyncio shell around the protocol core.

One port serves the WebSocket feed (`/`), the overlay page (`/overlay`, `/static/`),
`/healthz` and `/metrics`. The pipeline publishes from the event loop thread with
plain calls that never block; each client has its own bounded outbox and sender
task, so a slow or misbehaving client only ever hurts itself.

Lifecycle: `await start()`, then `publish_segment` / `publish_status` as the
pipeline runs, then `await close(drain_timeout_s)`: stop accepting, flush queued
finals for up to the timeout, close every client with 1001 (going away).
"""

from __future__ import annotations

import asyncio
import hmac
import http
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from subtitled import __version__
from subtitled.errors import ConfigError, InvalidState, PortInUse
from subtitled.events import SegmentUpdate, StatusUpdate
from subtitled.publish import routes
from subtitled.publish.journal import Journal
from subtitled.publish.metrics import PublishMetrics
from subtitled.publish.protocol import (
    ClientMessageError,
    Feed,
    FeedMessage,
    JsonObject,
    Replay,
    ServiceInfo,
    encode,
    encode_for,
    hello_payload,
    languages_payload,
    parse_connect_query,
)
from subtitled.publish.session import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_MESSAGE_TOO_BIG,
    ClientSession,
    CloseIntent,
    Outbox,
    Outgoing,
    TokenBucket,
    reply_error_code,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """Settings of the subtitle server; validated on construction.

    `port` 0 picks a free port (see `SubtitleServer.port`). `max_message_bytes`
    bounds a client frame (larger ones close the connection with 1009).
    `client_queue_size` bounds each client's outbox; `max_client_lag` is how many
    messages a client may trail the feed before it is closed with 1013.
    `client_rate_per_s` and `client_burst` bound what a client may send (over the
    limit: 1008). `allowed_origins` lists extra browser origins allowed to open the
    feed (`"*"`: any); pages served by this server are always allowed.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    max_message_bytes: int = 64 * 1024
    client_queue_size: int = 256
    history_size: int = 10_000
    max_client_lag: int = 1024
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    close_timeout_s: float = 5.0
    client_rate_per_s: float = 20.0
    client_burst: int = 40
    static_dir: Path | None = None
    allowed_origins: tuple[str, ...] = ()
    token: str | None = None
    """Shared secret clients must present (header `Authorization: Bearer TOKEN` or
    query `?token=TOKEN`). Required to bind anything but a loopback address."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port: {self.port} is not a port number (0-65535)")
        positive_ints = {
            "max_message_bytes": self.max_message_bytes,
            "client_queue_size": self.client_queue_size,
            "history_size": self.history_size,
            "max_client_lag": self.max_client_lag,
            "client_burst": self.client_burst,
        }
        for key, value in positive_ints.items():
            if value < 1:
                raise ConfigError(f"server.{key}: {value} is invalid; expected an integer >= 1")
        positive_floats = {
            "ping_interval_s": self.ping_interval_s,
            "ping_timeout_s": self.ping_timeout_s,
            "close_timeout_s": self.close_timeout_s,
            "client_rate_per_s": self.client_rate_per_s,
        }
        for key, number in positive_floats.items():
            if number is not None and not number > 0:
                raise ConfigError(f"server.{key}: {number} is invalid; expected a number > 0")
        if self.static_dir is not None and not self.static_dir.is_dir():
            raise ConfigError(f"server.static_dir: {self.static_dir} is not a directory")


class _Client:
    """Shell-side state of one feed connection (the logic is in `ClientSession`)."""

    def __init__(self, ws: ServerConnection, session: ClientSession) -> None:
        self.ws = ws
        self.session = session
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()  # set when everything queued has been written
        self.sender: asyncio.Task[None] | None = None
        self.closing = False

    def wake(self) -> None:
        self.idle.clear()
        self.wakeup.set()


class SubtitleServer:
    """Fans subtitles out to WebSocket clients and serves the overlay, health and metrics.

    Call every method from the event loop thread. `registry` is the Prometheus
    registry `/metrics` exposes; the pipeline may register its own metrics on it.
    """

    def __init__(
        self,
        info: ServiceInfo,
        config: ServerConfig | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        self.journal = journal
        self.registry = CollectorRegistry()
        self._metrics = PublishMetrics.create(self.registry)
        self._info = info
        self._feed = Feed(history_size=self.config.history_size)
        self._static_dir = self.config.static_dir or routes.default_static_dir()
        self._loopback = routes.is_loopback_host(self.config.host)
        self._clients: set[_Client] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ws_server: Server | None = None
        self._port: int | None = None
        self._closing = False
        self._started_at = time.monotonic()
        self._power: dict[str, object] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and start serving. Raises ConfigError if the address cannot be used."""
        if self._ws_server is not None:
            raise InvalidState("SubtitleServer.start() called twice")
        if self.journal is not None:
            restored = self.journal.open()
            self._feed.restore(restored.finals, restored.last_seq, restored.stream_id)
        cfg = self.config
        if not self._loopback and not cfg.token:
            raise ConfigError(
                f"server.host {cfg.host!r} is not a loopback address: set server.token "
                "(or SUBTITLED_TOKEN) so that only clients that know it can read the captions"
            )
        try:
            self._ws_server = await serve(
                self._handle_feed,
                cfg.host,
                cfg.port,
                process_request=self._process_request,
                server_header=routes.SERVER_HEADER,
                # Loopback fan-out: compression would cost CPU and memory per client.
                compression=None,
                max_size=cfg.max_message_bytes,
                ping_interval=cfg.ping_interval_s,
                ping_timeout=cfg.ping_timeout_s,
                close_timeout=cfg.close_timeout_s,
            )
        except OSError as exc:
            raise PortInUse(
                f"server.port: cannot listen on {cfg.host}:{cfg.port} ({exc.strerror or exc}); "
                "choose another host or port"
            ) from exc
        self._port = self._ws_server.sockets[0].getsockname()[1]
        self._started_at = time.monotonic()
        logger.info("subtitle feed at %s, overlay at %s", self.url, self.overlay_url)

    async def close(self, drain_timeout_s: float = 2.0) -> None:
        """Stop accepting clients, flush queued finals for up to `drain_timeout_s`, close all.

        Queued partials are dropped first (only finals are worth the wait); every
        client is then closed with 1001 (going away). Idempotent.
        """
        if self._ws_server is None or self._closing:
            return
        self._closing = True
        server = self._ws_server
        server.close(close_connections=False)  # stop listening; handshakes get 503
        clients = [c for c in self._clients if not c.closing]
        for client in clients:
            self._count_dropped(client.session.outbox.drop_partials())
        waits = [asyncio.ensure_future(c.idle.wait()) for c in clients]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=drain_timeout_s)
            for wait in pending:
                wait.cancel()
            if pending:
                logger.warning("%d client(s) still had messages queued at shutdown", len(pending))
        for client in clients:
            self._close_client(client, CloseIntent(CLOSE_GOING_AWAY, "server shutting down"))
        await server.wait_closed()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self.journal is not None:
            self.journal.release(self._feed.last_seq)  # nothing is sent after this
        logger.info("subtitle server closed")

    async def __aenter__(self) -> SubtitleServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        """The port actually bound (useful when `config.port` is 0)."""
        if self._port is None:
            raise InvalidState("SubtitleServer.port is known only after start()")
        return self._port

    @property
    def _url_host(self) -> str:
        host = self.config.host
        if host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if host == "::":
            return "[::1]"
        return f"[{host}]" if ":" in host else host

    @property
    def url(self) -> str:
        """The WebSocket feed URL, e.g. `ws://127.0.0.1:8765/`."""
        return f"ws://{self._url_host}:{self.port}/"

    @property
    def overlay_url(self) -> str:
        """The overlay page URL, for a browser or an OBS browser source."""
        return f"http://{self._url_host}:{self.port}/overlay"

    @property
    def info(self) -> ServiceInfo:
        return self._info

    @property
    def last_seq(self) -> int:
        """The seq of the latest message published (0 before any)."""
        return self._feed.last_seq

    @property
    def client_count(self) -> int:
        return len(self._clients)

    # ------------------------------------------------------------------ publishing

    def publish_segment(self, update: SegmentUpdate) -> int:
        """Publish one segment revision (or, when `update.retranslated`, new translations
        of the last one) to every client; never blocks. Returns its seq."""
        if self.journal is not None:
            self.journal.ensure_reserved(self._feed.last_seq + 1)
        if update.retranslated:
            message = self._feed.publish_translation(update)
            self._metrics.translations_published.inc()
            self._fan_out(message)
            return message.seq
        message = self._feed.publish_segment(update)
        if self.journal is not None and message.final:
            # On disk before any client sees it: a final is never lost, even to kill -9.
            self.journal.append_final(message.seq, message.payload)
        self._metrics.segments_published.labels(update.status).inc()
        self._fan_out(message)
        return message.seq

    def publish_status(self, status: StatusUpdate) -> int:
        """Publish a capture status to every client; never blocks. Returns its seq."""
        if self.journal is not None:
            self.journal.ensure_reserved(self._feed.last_seq + 1)
        message = self._feed.publish_status(status)
        self._metrics.statuses_published.labels(status.capture).inc()
        self._fan_out(message)
        return message.seq

    def set_power(
        self, profile: str, source: str, translation_threads: int | None = None
    ) -> None:
        """The power profile in force, the power source (`subtitled.power`) and the
        translation model's threads (None: no model loaded), for `/healthz` (`power`) and
        `/metrics` (`subtitled_power_profile`)."""
        self._power = {"profile": profile, "source": source}
        if translation_threads is not None:
            self._power["translation_threads"] = translation_threads
        self._metrics.power_profile.clear()
        self._metrics.power_profile.labels(profile, source).set(1)

    def update_info(self, info: ServiceInfo) -> None:
        """Change what `hello` and `/healthz` announce; connected clients get a new hello."""
        self._info = info
        for client in self._clients:
            if not client.closing:
                hello = self._hello(client.session.languages)
                client.session.outbox.push_control(Outgoing(encode(hello)))
                client.wake()

    def _fan_out(self, message: FeedMessage) -> None:
        encoded: dict[frozenset[str] | None, str | None] = {}  # one encoding per subscription
        for client in list(self._clients):
            if client.closing:
                continue
            languages = client.session.languages
            if languages in encoded:
                text = encoded[languages]
            else:
                text = encoded[languages] = encode_for(message, languages)
            if text is None:
                continue  # nothing in it for this client
            item = Outgoing(text, message.seq, message.segment_id, droppable=message.is_partial)
            result = client.session.outbox.push(item)
            self._count_dropped(result.dropped)
            if result.close is not None:
                self._metrics.slow_clients_closed.inc()
                logger.warning("closing client %s: %s", _peer(client.ws), result.close.reason)
                self._close_client(client, result.close)
            else:
                client.wake()

    def _count_dropped(self, dropped: int) -> None:
        if dropped:
            self._metrics.partials_dropped.inc(dropped)

    def _hello(self, languages: frozenset[str] | None, replay: Replay | None = None) -> JsonObject:
        return hello_payload(
            self._info,
            seq=self._feed.last_seq,
            capture=self._feed.capture,
            subscribed=languages,
            replay=replay,
            stream=self._feed.stream_id,
        )

    # ------------------------------------------------------------------ feed clients

    async def _handle_feed(self, ws: ServerConnection) -> None:
        """One feed connection: queue hello and the replay, then read until it closes."""
        if self._closing:
            await ws.close(CLOSE_GOING_AWAY, "server shutting down")
            return
        path = ws.request.path if ws.request is not None else "/"
        params = parse_connect_query(urlsplit(path).query)  # validated in _process_request
        cfg = self.config
        session = ClientSession(
            outbox=Outbox(cfg.client_queue_size, cfg.max_client_lag, start_seq=self._feed.last_seq),
            bucket=TokenBucket(cfg.client_rate_per_s, cfg.client_burst),
            languages=params.languages,
        )
        # No await from here to registration: the replay and the live feed meet
        # exactly at start_seq, so nothing is missed or sent twice.
        replay = None if params.since is None else self._feed.since(params.since, params.stream)
        session.outbox.push_backlog(Outgoing(encode(self._hello(params.languages, replay))))
        for message in replay.messages if replay is not None else ():
            text = encode_for(message, params.languages)
            if text is None:
                continue
            session.outbox.push_backlog(Outgoing(text, message.seq, message.segment_id))
        client = _Client(ws, session)
        self._clients.add(client)
        self._metrics.clients.inc()
        client.sender = asyncio.create_task(self._send_loop(client))
        logger.info("client %s connected (since=%s)", _peer(ws), params.since)
        try:
            await self._receive_loop(client)
        finally:
            self._clients.discard(client)
            self._metrics.clients.dec()
            client.sender.cancel()
            await asyncio.wait([client.sender])
            logger.info("client %s disconnected (code %s)", _peer(ws), ws.close_code)

    async def _receive_loop(self, client: _Client) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for data in client.ws:
                if client.closing:
                    continue
                reply = client.session.receive(data, loop.time())
                code = reply_error_code(reply)
                if code is not None:
                    self._metrics.protocol_errors.labels(code).inc()
                if isinstance(reply, CloseIntent):
                    logger.warning("closing client %s: %s", _peer(client.ws), reply.reason)
                    self._close_client(client, reply)
                else:
                    client.session.outbox.push_control(Outgoing(encode(reply)))
                    client.wake()
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CLOSE_MESSAGE_TOO_BIG:
                self._metrics.protocol_errors.labels("message-too-big").inc()

    async def _send_loop(self, client: _Client) -> None:
        outbox = client.session.outbox
        try:
            while True:
                item = outbox.pop()
                if item is None:
                    client.idle.set()
                    client.wakeup.clear()
                    await client.wakeup.wait()
                    continue
                await client.ws.send(item.text)
                outbox.delivered(item)
                self._metrics.messages_sent.inc()
        except ConnectionClosed:
            client.idle.set()
        except Exception:  # a bug here must not leave the client connected but unfed
            logger.exception("sending to client %s failed", _peer(client.ws))
            self._close_client(client, CloseIntent(CLOSE_INTERNAL_ERROR, "internal error"))

    def _close_client(self, client: _Client, intent: CloseIntent) -> None:
        """Stop feeding a client and start its closing handshake, without awaiting it."""
        if client.closing:
            return
        client.closing = True
        client.idle.set()
        if client.sender is not None:
            client.sender.cancel()
        task = asyncio.create_task(self._close_connection(client.ws, intent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_connection(self, ws: ServerConnection, intent: CloseIntent) -> None:
        # websockets bounds the closing handshake by close_timeout, but not the wait
        # for a stalled peer to accept the close frame: bound the whole close here.
        try:
            async with asyncio.timeout(self.config.close_timeout_s):
                await ws.close(intent.code, intent.reason)
        except TimeoutError:
            logger.info("client %s did not read its close frame; aborting", _peer(ws))
            ws.transport.abort()

    # ------------------------------------------------------------------ HTTP routes

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """Route a request: None lets the WebSocket handshake of `/` proceed."""
        url = urlsplit(request.path)
        host = _header(request, "Host")
        if not routes.host_allowed(host, bound_to_loopback=self._loopback):
            return routes.text_response(http.HTTPStatus.FORBIDDEN, "unexpected Host header")
        if url.path != "/healthz" and not self._token_ok(request, url.query):
            self._metrics.protocol_errors.labels("bad-token").inc()
            return routes.text_response(http.HTTPStatus.UNAUTHORIZED, "a valid token is required")
        if url.path == "/":
            return self._check_feed_request(request, url.query, host)
        if url.path == "/healthz":
            body = json.dumps(self._health()).encode()
            return routes.response(http.HTTPStatus.OK, body, "application/json")
        if url.path == "/metrics":
            return routes.response(
                http.HTTPStatus.OK, generate_latest(self.registry), CONTENT_TYPE_LATEST
            )
        relative = routes.static_target(url.path)
        if relative is not None:
            return await self._static(relative)
        return routes.text_response(http.HTTPStatus.NOT_FOUND, "not found")

    def _token_ok(self, request: Request, query: str) -> bool:
        """No token configured, or the request carries it (compared in constant time)."""
        expected = self.config.token
        if not expected:
            return True
        offered = ""
        authorization = _header(request, "Authorization") or ""
        if authorization.startswith("Bearer "):
            offered = authorization[len("Bearer ") :].strip()
        else:
            offered = parse_qs(query).get("token", [""])[-1]
        return hmac.compare_digest(offered.encode(), expected.encode())

    def _check_feed_request(
        self, request: Request, query: str, host: str | None
    ) -> Response | None:
        origin = _header(request, "Origin")
        if not routes.origin_allowed(origin, host, self.config.allowed_origins):
            self._metrics.protocol_errors.labels("origin-refused").inc()
            return routes.text_response(
                http.HTTPStatus.FORBIDDEN, f"origin {origin!r} may not open the feed"
            )
        try:
            parse_connect_query(query)
        except ClientMessageError as exc:
            self._metrics.protocol_errors.labels(exc.code).inc()
            return routes.text_response(http.HTTPStatus.BAD_REQUEST, exc.message)
        if self._closing:
            return routes.text_response(http.HTTPStatus.SERVICE_UNAVAILABLE, "server shutting down")
        return None

    async def _static(self, relative: str) -> Response:
        path = routes.resolve_static(self._static_dir, relative)
        if path is None:
            return routes.text_response(http.HTTPStatus.NOT_FOUND, "not found")
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except OSError:
            logger.warning("cannot read static file %s", path, exc_info=True)
            return routes.text_response(http.HTTPStatus.NOT_FOUND, "not found")
        if len(body) > routes.MAX_STATIC_BYTES:
            return routes.text_response(http.HTTPStatus.NOT_FOUND, "not found")
        return routes.response(http.HTTPStatus.OK, body, routes.content_type(path), cache=True)

    def _health(self) -> dict[str, Any]:
        info = self._info
        return {
            "status": "ok",
            "version": __version__,
            "mode": info.mode,
            "models": {"asr": info.asr_model, "translation": info.translation_model},
            "languages": languages_payload(info),
            "capture": self._feed.capture,
            "capture_detail": self._feed.capture_detail,
            "clients": len(self._clients),
            "seq": self._feed.last_seq,
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "power": self._power,
        }


def _header(request: Request, name: str) -> str | None:
    """A header's value; None when absent, "" (never allowed) when repeated."""
    values = request.headers.get_all(name)
    if not values:
        return None
    return values[0] if len(values) == 1 else ""


def _peer(ws: ServerConnection) -> str:
    try:
        address = ws.remote_address
    except Exception:  # the transport may already be gone
        return "?"
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
