"""The daemon with translation, in process: a real clip through whisper tiny.en, the tiny
random translation model, a real WebSocket client subscribed to one language."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from subtitled.capture import parse_source
from subtitled.config import Config, replace_path
from subtitled.daemon import Daemon, RunOptions

pytestmark = pytest.mark.slow

CLIP = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "speech" / \
    "ljspeech" / "LJ001-0002.flac"


def config_for(model: Path) -> Config:
    config = Config()
    for key, value in [("server.port", 0), ("translation.targets", "de,es"),
                       ("translation.model", str(model)), ("translation.threads", 1),
                       ("journal.enabled", False)]:
        config = replace_path(config, key, value)
    return config


async def run_with_client(config: Config, languages: str) -> tuple[list[dict[str, Any]],
                                                                    dict[str, Any]]:
    from websockets.asyncio.client import connect

    daemon = Daemon(config, RunOptions(source=parse_source(f"file:{CLIP}"), realtime=True))
    await daemon.start()
    assert daemon.server is not None
    for _ in range(200):  # the model loads in the background
        if daemon._loading is not None and daemon._loading.done():
            break
        await asyncio.sleep(0.05)
    messages: list[dict[str, Any]] = []
    async with connect(f"{daemon.server.url}?languages={languages}") as ws:
        serving = asyncio.create_task(daemon.serve())
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            messages.append(message)
            if message.get("status") == "final":
                break
        await serving
    base = daemon.server.url.replace("ws://", "http://").rstrip("/")
    health = await asyncio.to_thread(
        lambda: json.loads(urllib.request.urlopen(base + "/healthz").read())
    )
    metrics = await asyncio.to_thread(
        lambda: urllib.request.urlopen(base + "/metrics").read().decode()
    )
    health["metrics_text"] = metrics
    await daemon.close()
    return messages, health


def test_translations_reach_a_subscribed_client(tiny_model_dir: Path) -> None:
    messages, health = asyncio.run(run_with_client(config_for(tiny_model_dir), "de"))
    hello = messages[0]
    assert hello["type"] == "hello" and hello["mode"] == "translating"
    assert hello["models"]["translation"].startswith("random-gemma4_text")
    assert hello["languages"]["targets"] == ["de", "es"] and hello["subscribed"] == ["de"]
    assert health["mode"] == "translating" and health["languages"]["targets"] == ["de", "es"]
    final = messages[-1]
    assert "modern" in final["text"].lower()
    assert set(final["translations"]) == {"de"}  # only what the client subscribed to
    assert {"stable", "unstable", "latency_ms", "compute_ms"} <= set(final["translations"]["de"])
    assert final["translations"]["de"]["unstable"] == ""
    updates = [line for line in health["metrics_text"].splitlines()
               if line.startswith("subtitled_translation_updates ")]
    assert updates and float(updates[0].split()[1]) >= 1


def test_corrupt_model_is_logged_and_captions_go_on(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Path(shutil.copytree(tiny_model_dir, tmp_path / "broken"))
    (broken / "model.onnx").write_bytes(b"not a model")
    with caplog.at_level(logging.INFO):
        messages, health = asyncio.run(run_with_client(config_for(broken), "de"))
    assert "translation is off, captions continue" in caplog.text
    assert "model.onnx does not match its sha256" in caplog.text
    assert messages[0]["mode"] == "captions-only" and health["mode"] == "captions-only"
    assert "modern" in messages[-1]["text"].lower()
    assert messages[-1]["translations"] == {}
