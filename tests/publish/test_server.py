"""The subtitle server over real loopback sockets (port 0), one event loop per test."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from subtitled import __version__
from subtitled.errors import ConfigError, PortInUse
from subtitled.events import StatusUpdate, Translation
from subtitled.publish import PROTOCOL_VERSION, ServerConfig, ServiceInfo, SubtitleServer

from .factories import final, partial, segment

INFO = ServiceInfo("tiny.en", "gemma-moe-small", "en", ("de", "es"))
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout_s: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


@asynccontextmanager
async def serving(info: ServiceInfo = INFO, **overrides: Any) -> AsyncIterator[SubtitleServer]:
    settings: dict[str, Any] = {"port": 0, "close_timeout_s": 1.0, "ping_interval_s": None}
    settings.update(overrides)
    server = SubtitleServer(info, ServerConfig(**settings))
    await server.start()
    try:
        yield server
    finally:
        await server.close(drain_timeout_s=0.5)


async def recv_json(ws: ClientConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    return message


async def recv_until_final(ws: ClientConnection, segment_id: int) -> list[dict[str, Any]]:
    """Every message up to and including the final of `segment_id`."""
    received = []
    while True:
        message = await recv_json(ws)
        received.append(message)
        if message.get("status") == "final" and message["id"] == segment_id:
            return received


async def http_get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request_headers = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    head = f"GET {path} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in request_headers.items()) + "\r\n"
    writer.write(head.encode())
    data = await asyncio.wait_for(reader.read(), 5.0)  # the server closes after responding
    writer.close()
    status_head, _, body = data.partition(b"\r\n\r\n")
    lines = status_head.decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v.strip() for k, _, v in fields}, body


def sample(server: SubtitleServer, name: str) -> float:
    value = server.registry.get_sample_value(name)
    return 0.0 if value is None else value


def finals(messages: list[dict[str, Any]]) -> list[int]:
    return [m["id"] for m in messages if m.get("status") == "final"]


# ------------------------------------------------------------------ hello, HTTP routes


def test_hello_announces_the_service() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.publish_status(StatusUpdate("running"))
            assert server.url == f"ws://127.0.0.1:{server.port}/"
            async with connect(server.url) as ws:
                hello = await recv_json(ws)
            assert hello == {
                "type": "hello",
                "protocol": PROTOCOL_VERSION,
                "version": __version__,
                "models": {"asr": "tiny.en", "translation": "gemma-moe-small"},
                "languages": {"source": "en", "targets": ["de", "es"], "detected": None},
                "mode": "translating",
                "seq": 1,
                "stream": server._feed.stream_id,
                "capture": "running",
                "subscribed": None,
            }

    run(scenario())


def test_update_info_sends_a_new_hello() -> None:
    async def scenario() -> None:
        async with serving(ServiceInfo("tiny.en", None, "en")) as server, connect(server.url) as ws:
            assert (await recv_json(ws))["mode"] == "captions-only"
            server.update_info(INFO)
            hello = await recv_json(ws)
            assert (hello["type"], hello["mode"]) == ("hello", "translating")

    run(scenario())


def test_healthz() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.publish_segment(final(1))
            async with connect(server.url) as ws:
                await recv_json(ws)
                status, headers, body = await http_get(server.port, "/healthz")
        assert status == 200
        assert headers["content-type"] == "application/json"
        health = json.loads(body)
        assert health.pop("uptime_s") >= 0
        assert health == {
            "status": "ok",
            "version": __version__,
            "mode": "translating",
            "models": {"asr": "tiny.en", "translation": "gemma-moe-small"},
            "languages": {"source": "en", "targets": ["de", "es"], "detected": None},
            "capture": "starting",
            "capture_detail": "",
            "clients": 1,
            "seq": 1,
            "power": None,  # until the daemon says which profile it runs
        }

    run(scenario())


def test_healthz_and_metrics_show_the_power_profile() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.set_power("battery", "battery")
            server.set_power("performance", "ac")
            _, _, body = await http_get(server.port, "/healthz")
            assert json.loads(body)["power"] == {"profile": "performance", "source": "ac"}
            value = server.registry.get_sample_value
            assert value("subtitled_power_profile", {"profile": "performance", "source": "ac"}) == 1
            # Only the profile in force is reported, not every one it has been.
            assert value("subtitled_power_profile", {"profile": "battery", "source": "battery"}) \
                is None

    run(scenario())


def test_metrics_are_prometheus_text_and_extensible() -> None:
    async def scenario() -> None:
        async with serving() as server:
            pipeline_metric = Counter("pipeline_things", "Things", registry=server.registry)
            pipeline_metric.inc(3)
            async with connect(server.url) as ws:
                await recv_json(ws)
                server.publish_segment(partial(1, 0))
                server.publish_segment(final(1))
                await recv_until_final(ws, 1)
                await ws.send("not json")
                await recv_json(ws)
                status, headers, body = await http_get(server.port, "/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }
        assert samples[("subtitled_ws_clients", ())] == 1
        assert samples[("subtitled_ws_messages_sent_total", ())] == 4  # hello, 2 segments, error
        assert samples[("subtitled_segments_published_total", (("status", "final"),))] == 1
        assert samples[("subtitled_segments_published_total", (("status", "partial"),))] == 1
        assert samples[("subtitled_ws_protocol_errors_total", (("code", "not-json"),))] == 1
        assert samples[("subtitled_ws_partials_dropped_total", ())] == 0
        assert samples[("subtitled_ws_slow_clients_closed_total", ())] == 0
        assert samples[("pipeline_things_total", ())] == 3

    run(scenario())


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/overlay", {}, 200),
        ("/static/overlay.html", {}, 200),
        ("/static/../../etc/passwd", {}, 404),
        ("/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", {}, 404),
        ("/static/..%2f..%2fserver.py", {}, 404),
        ("/static/", {}, 404),
        ("/../server.py", {}, 404),
        ("/nowhere", {}, 404),
        ("/healthz", {"Host": "attacker.example:8765"}, 403),  # DNS rebinding
    ],
)
def test_http_routes(path: str, headers: dict[str, str], status: int) -> None:
    async def scenario() -> tuple[int, dict[str, str], bytes]:
        async with serving() as server:
            assert server.overlay_url == f"http://127.0.0.1:{server.port}/overlay"
            return await http_get(server.port, path, headers)

    got_status, got_headers, body = run(scenario())
    assert got_status == status
    if status == 200:
        assert got_headers["content-type"] == "text/html; charset=utf-8"
        assert b"/static/overlay.js" in body
    else:
        assert b"root:" not in body


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/?since=abc", {}, 400),
        ("/?languages=not%20a%20tag", {}, 400),
        ("/", {"Origin": "https://evil.example"}, 403),
        ("/", {"Origin": "http://127.0.0.1:1"}, 403),
    ],
)
def test_feed_handshake_refused(path: str, headers: dict[str, str], status: int) -> None:
    async def scenario() -> None:
        async with serving() as server:
            with pytest.raises(InvalidStatus) as caught:
                async with connect(server.url.rstrip("/") + path, additional_headers=headers):
                    pass
            assert caught.value.response.status_code == status

    run(scenario())


def test_same_origin_page_may_open_the_feed() -> None:
    async def scenario() -> None:
        async with serving() as server:
            origin = f"http://127.0.0.1:{server.port}"
            async with connect(server.url, additional_headers={"Origin": origin}) as ws:
                assert (await recv_json(ws))["type"] == "hello"

    run(scenario())


# ------------------------------------------------------------------ feed behaviour


def test_language_subscription_filters_translations() -> None:
    async def scenario() -> None:
        translations = {"de": Translation("Hallo"), "es": Translation("Hola")}
        async with serving() as server, connect(server.url + "?languages=de") as ws:
            assert (await recv_json(ws))["subscribed"] == ["de"]
            server.publish_segment(segment(1, translations=translations))
            assert (await recv_json(ws))["translations"] == {
                "de": {"stable": "Hallo", "unstable": ""}
            }
            await ws.send(json.dumps({"type": "subscribe", "languages": []}))
            assert await recv_json(ws) == {"type": "subscribed", "languages": []}
            server.publish_segment(segment(2, translations=translations))
            assert (await recv_json(ws))["translations"] == {}
            # New translations of a partial: nothing for a client that wants none.
            server.publish_segment(partial(3, 0))
            server.publish_segment(
                dataclasses.replace(partial(3, 0), translations=translations, retranslated=True)
            )
            assert (await recv_json(ws))["type"] == "segment"
            await ws.send('{"type": "ping"}')
            assert await recv_json(ws) == {"type": "pong"}

    run(scenario())


def test_new_translations_of_a_partial_are_a_translation_message() -> None:
    async def scenario() -> None:
        hallo = {"de": Translation("Hallo"), "es": Translation("Hola")}
        async with serving() as server, connect(server.url + "?languages=de") as ws:
            await recv_json(ws)
            server.publish_segment(partial(4, 2, "hello there"))
            server.publish_segment(
                dataclasses.replace(partial(4, 2, "hello there"), translations=hallo,
                                    retranslated=True)
            )
            server.publish_segment(final(4))
            received = [await recv_json(ws) for _ in range(3)]
            assert [(m["type"], m["seq"], m.get("rev")) for m in received] == [
                ("segment", 1, 2), ("translation", 2, 2), ("segment", 3, 99)
            ]
            assert received[1]["id"] == 4 and "words" not in received[1]
            assert received[1]["translations"] == {"de": {"stable": "Hallo", "unstable": ""}}
            assert sample(server, "subtitled_translations_published_total") == 1
            for status in ("partial", "final"):
                assert server.registry.get_sample_value(
                    "subtitled_segments_published_total", {"status": status}) == 1

    run(scenario())


def test_resume_with_since_replays_exactly_the_missed_messages() -> None:
    async def scenario() -> None:
        async with serving() as server:
            async with connect(server.url) as ws:
                await recv_json(ws)
                for i in range(5):
                    server.publish_segment(partial(i, 0))
                    server.publish_segment(final(i))
                seen = await recv_until_final(ws, 2)
            last_seq = seen[-1]["seq"]
            # While the client is away: missed finals, a superseded partial, an open one.
            for i in range(5, 10):
                server.publish_segment(partial(i, 0))
                server.publish_segment(final(i))
            server.publish_segment(partial(10, 0))
            server.publish_segment(partial(10, 1))
            async with connect(f"{server.url}?since={last_seq}") as ws:
                hello = await recv_json(ws)
                assert hello["resume"]["since"] == last_seq
                assert hello["resume"]["complete"] is True
                server.publish_segment(final(10))  # live, after the replay
                resumed = await recv_until_final(ws, 10)
        seqs = [m["seq"] for m in seen + resumed]
        assert seqs == sorted(set(seqs))  # in order, no duplicates
        assert finals(seen + resumed) == list(range(11))  # no gaps
        assert [m["rev"] for m in resumed if m["id"] == 10] == [1, 99]
        assert hello["resume"]["replayed"] == len(resumed) - 1

    run(scenario())


def test_fifty_clients_receive_every_final_in_order() -> None:
    async def scenario() -> None:
        async with serving() as server:
            clients = await asyncio.gather(*(connect(server.url) for _ in range(50)))
            try:
                await asyncio.gather(*(recv_json(ws) for ws in clients))
                readers = [asyncio.create_task(recv_until_final(ws, 99)) for ws in clients]
                for i in range(100):
                    server.publish_segment(partial(i, 0))
                    server.publish_segment(final(i))
                    await asyncio.sleep(0)
                results = await asyncio.gather(*readers)
            finally:
                await asyncio.gather(*(ws.close() for ws in clients))
        for received in results:
            assert finals(received) == list(range(100))
            seqs = [m["seq"] for m in received]
            assert seqs == sorted(set(seqs))

    run(scenario())


def test_close_flushes_queued_finals_then_says_going_away() -> None:
    async def scenario() -> None:
        server = SubtitleServer(INFO, ServerConfig(port=0, ping_interval_s=None))
        await server.start()
        async with connect(server.url) as ws:
            await recv_json(ws)
            for i in range(20):
                server.publish_segment(final(i))
            closing = asyncio.create_task(server.close(drain_timeout_s=2.0))
            received = [json.loads(m) async for m in ws]  # ends cleanly on 1001
            await closing
            assert ws.close_code == 1001
        assert finals(received) == list(range(20))

    run(scenario())


# ------------------------------------------------------------------ misbehaving clients


def test_slow_client_is_closed_while_fast_client_gets_everything() -> None:
    async def scenario() -> None:
        async with serving(client_queue_size=64, close_timeout_s=5.0) as server:
            # A client that never reads: a tiny receive buffer, and websockets stops
            # reading the socket once one message is waiting.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
            sock.connect(("127.0.0.1", server.port))
            sock.setblocking(False)
            async with (
                connect(server.url, sock=sock, max_queue=1) as slow,
                connect(server.url) as fast,
            ):
                await recv_json(slow)
                await recv_json(fast)
                reader = asyncio.create_task(recv_until_final(fast, -1))
                text = "x" * 8000  # one long word: 8 kB messages, cheap to encode
                worst_s, published = 0.0, 0
                while sample(server, "subtitled_ws_slow_clients_closed_total") < 1:
                    assert published < 20_000, "the slow client was never closed"
                    started = time.perf_counter()
                    server.publish_segment(partial(published, 0, text))
                    server.publish_segment(final(published, text=text))
                    worst_s = max(worst_s, time.perf_counter() - started)
                    published += 1
                    await asyncio.sleep(0.001 if published % 4 == 0 else 0)
                server.publish_segment(final(-1))
                received = await reader
                assert finals(received) == [*range(published), -1]
                assert worst_s < 0.1  # publishing never waits for a client
                assert sample(server, "subtitled_ws_slow_clients_closed_total") == 1
                assert sample(server, "subtitled_ws_partials_dropped_total") > 0  # dropped first
                # The slow client still finds the reason once it reads what was sent.
                with pytest.raises(ConnectionClosedError) as caught:
                    async for _ in slow:
                        pass
                assert caught.value.rcvd is not None
                assert caught.value.rcvd.code == 1013
                assert "fell behind" in caught.value.rcvd.reason

    run(scenario())


def test_a_stalled_client_that_never_reads_its_close_frame_is_aborted() -> None:
    async def scenario() -> None:
        async with serving(client_queue_size=4, close_timeout_s=0.3) as server:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.setblocking(False)
            stalled = await connect(server.url, sock=sock, max_queue=1)
            await recv_json(stalled)
            published = 0
            while sample(server, "subtitled_ws_slow_clients_closed_total") < 1:
                server.publish_segment(final(published, text="x" * 8000))
                published += 1
                await asyncio.sleep(0)
            while server.client_count:  # aborted after close_timeout_s
                await asyncio.sleep(0.05)
            stalled.transport.abort()  # it stopped reading, so it never saw the abort
            async with connect(server.url) as newcomer:
                assert (await recv_json(newcomer))["seq"] == published

    run(scenario(), timeout_s=5.0)


def test_malformed_input_is_answered_and_does_not_affect_others() -> None:
    async def scenario() -> None:
        async with serving(max_message_bytes=1024) as server, connect(server.url) as bystander:
            await recv_json(bystander)
            async with connect(server.url) as rude:
                await recv_json(rude)
                cases: list[tuple[str | bytes, str]] = [
                    ("not json", "not-json"),
                    ("[1]", "not-object"),
                    ('{"type": "dance"}', "unknown-type"),
                    ('{"type": "subscribe", "languages": "de"}', "bad-field"),
                    (b"\x01\x02", "not-text"),
                ]
                for frame, code in cases:
                    await rude.send(frame)
                    reply = await recv_json(rude)
                    assert (reply["type"], reply["code"]) == ("error", code)
                    assert reply["message"]
                await rude.send("x" * 2048)  # over max_message_bytes
                with pytest.raises(ConnectionClosed):
                    await recv_json(rude)
                assert rude.close_code == 1009
            while server.client_count > 1:
                await asyncio.sleep(0.01)
            errors = "subtitled_ws_protocol_errors_total"
            assert server.registry.get_sample_value(errors, {"code": "message-too-big"}) == 1
            server.publish_segment(final(1))
            assert finals([await recv_json(bystander)]) == [1]

    run(scenario())


def test_a_client_over_the_rate_limit_is_closed_alone() -> None:
    async def scenario() -> None:
        async with (
            serving(client_rate_per_s=1.0, client_burst=5) as server,
            connect(server.url) as bystander,
        ):
            await recv_json(bystander)
            async with connect(server.url) as spammer:
                await recv_json(spammer)
                for _ in range(20):
                    await spammer.send('{"type": "ping"}')
                with pytest.raises(ConnectionClosed):
                    while True:
                        await recv_json(spammer)
                assert spammer.close_code == 1008
            server.publish_segment(final(1))
            assert finals([await recv_json(bystander)]) == [1]
            await bystander.send('{"type": "ping"}')
            assert await recv_json(bystander) == {"type": "pong"}

    run(scenario())


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"port": 70_000}, "server.port"),
        ({"client_queue_size": 0}, "server.client_queue_size"),
        ({"close_timeout_s": 0.0}, "server.close_timeout_s"),
    ],
)
def test_config_errors_name_the_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        ServerConfig(**overrides)


def test_busy_port_is_a_config_error() -> None:
    async def scenario() -> None:
        async with serving() as first:
            second = SubtitleServer(INFO, ServerConfig(port=first.port))
            with pytest.raises(PortInUse, match="cannot listen"):  # a ConfigError (exit 2)
                await second.start()
            assert issubclass(PortInUse, ConfigError)

    run(scenario())
