"""Safe by default: loopback unless a token is set; the token is checked on every route."""

from __future__ import annotations

import asyncio
import http.client
import json

import pytest

from subtitled.errors import ConfigError
from subtitled.publish import ServerConfig, ServiceInfo, SubtitleServer

INFO = ServiceInfo(asr_model="whisper-tiny.en", translation_model=None, source_language="en")


def get(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path, headers=headers or {})
    status = conn.getresponse().status
    conn.close()
    return status


def test_non_loopback_bind_needs_a_token() -> None:
    async def scenario() -> None:
        server = SubtitleServer(INFO, ServerConfig(host="0.0.0.0", port=0))
        with pytest.raises(ConfigError, match=r"server\.token"):
            await server.start()

    asyncio.run(scenario())


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_token_required_on_every_route_but_healthz(host: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async def scenario() -> None:
        server = SubtitleServer(INFO, ServerConfig(host=host, port=0, token="s3cret"))
        await server.start()
        try:
            port = server.port
            statuses = await asyncio.to_thread(lambda: {
                "overlay": get(port, "/overlay"),
                "overlay+token": get(port, "/overlay?token=s3cret"),
                "metrics+wrong": get(port, "/metrics?token=s3cre"),
                "metrics+bearer": get(port, "/metrics", {"Authorization": "Bearer s3cret"}),
                "healthz": get(port, "/healthz"),
            })
            assert statuses == {"overlay": 401, "overlay+token": 200, "metrics+wrong": 401,
                                "metrics+bearer": 200, "healthz": 200}
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"ws://127.0.0.1:{port}/"):
                    pass
            assert refused.value.response.status_code == 401
            async with connect(f"ws://127.0.0.1:{port}/?token=s3cret") as ws:
                assert json.loads(await ws.recv())["type"] == "hello"
            headers = {"Authorization": "Bearer s3cret"}
            async with connect(f"ws://127.0.0.1:{port}/", additional_headers=headers) as ws:
                assert json.loads(await ws.recv())["type"] == "hello"
        finally:
            await server.close()

    asyncio.run(scenario())
