"""The OpenAI-compatible backend against a fake server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from subtitled.errors import ConfigError, ModelError
from subtitled.translate.config import TranslationConfig, TranslationServerConfig
from subtitled.translate.models import load_translator
from subtitled.translate.openai import OpenAiTranslator, check_loopback
from subtitled.translate.stream import SourceUpdate

DICTIONARY = {"hello": "hallo", "my": "mein", "dear": "lieber", "friend": "Freund"}


class FakeServer(ThreadingHTTPServer):
    requests: list[dict[str, Any]]


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, **body})
        source = body["messages"][-1]["content"]
        text = " ".join(DICTIONARY.get(w, w) for w in source.split())
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[FakeServer]:
    httpd = FakeServer(("127.0.0.1", 0), Handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def config_for(server: FakeServer) -> TranslationConfig:
    return TranslationConfig(
        targets=("de",), backend="openai",
        server=TranslationServerConfig(
            url=f"http://127.0.0.1:{server.server_address[1]}/v1", model="fake:1b"
        ),
    )


def test_streams_a_sentence_with_the_same_policy(server: FakeServer) -> None:
    translator = load_translator(config_for(server))
    assert isinstance(translator, OpenAiTranslator)
    assert "no cache control" in translator.name
    steps = ["hello", "hello my", "hello my dear", "hello my dear friend"]
    results = [translator.translate(SourceUpdate(0, s, final=i == 3))["de"]
               for i, s in enumerate(steps)]
    assert [r.stable for r in results] == ["", "hallo", "hallo mein", "hallo mein lieber Freund"]
    assert results[2].unstable == " lieber"
    assert all(r.prefilled == 0 for r in results)  # it cannot know
    # The finished pair is sent as context with the next sentence.
    translator.translate(SourceUpdate(1, "friend", final=True))
    last = server.requests[-1]
    assert last["path"] == "/v1/chat/completions" and last["model"] == "fake:1b"
    assert last["temperature"] == 0
    assert {"role": "assistant", "content": "hallo mein lieber Freund"} in last["messages"]


def test_unchanged_source_is_not_sent_again(server: FakeServer) -> None:
    translator = load_translator(config_for(server))
    translator.translate(SourceUpdate(0, "hello", final=False))
    translator.translate(SourceUpdate(0, "hello", final=False))
    assert len(server.requests) == 1


@pytest.mark.parametrize("url", ["http://192.168.1.5:11434/v1", "http://example.com/v1",
                                 "ftp://127.0.0.1/v1"])
def test_only_loopback_servers(url: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.url"):
        check_loopback(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1234/v1", "http://localhost:11434/v1",
                                 "http://[::1]:8080/v1"])
def test_loopback_urls_pass(url: str) -> None:
    assert check_loopback(url) == url


def test_a_dead_server_is_a_model_error() -> None:
    config = TranslationConfig(
        targets=("de",), backend="openai",
        server=TranslationServerConfig(url="http://127.0.0.1:9/v1", model="x", timeout_s=2),
    )
    with pytest.raises(ModelError, match="translation server"):
        load_translator(config).translate(SourceUpdate(0, "hello", final=True))
