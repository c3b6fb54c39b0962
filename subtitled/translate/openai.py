"""A second backend: an OpenAI-compatible chat server on this machine (Ollama, LM Studio,
llama.cpp's server), for users who already run one.

Same streaming policy as the ONNX backend, over words instead of tokens: the open
sentence is translated again on each update and words become stable once successive
translations agree. Such a server gives no control over its KV cache, so every update
sends the whole sentence (and a few finished pairs as context) again; whatever prefix
caching the server does on its own is invisible here. It is contacted only when
`translation.backend = "openai"`, and only on a loopback address.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from subtitled.errors import ConfigError, ModelError
from subtitled.netguard import is_loopback
from subtitled.translate.config import TranslationConfig
from subtitled.translate.policy import StabilityPolicy, StableText
from subtitled.translate.stream import LanguageResult, SourceUpdate

log = logging.getLogger(__name__)

CONTEXT_PAIRS = 3
"""Finished sentence pairs sent along as context."""
NAMES = {"de": "German", "es": "Spanish", "fr": "French", "it": "Italian", "pt": "Portuguese",
         "nl": "Dutch", "pl": "Polish", "ja": "Japanese", "zh": "Chinese", "en": "English"}


def check_loopback(url: str) -> str:
    """`url` if its host is a loopback address or `localhost`; else a `ConfigError`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"translation.server.url {url!r}: must be http:// or https://")
    if not is_loopback(host):
        raise ConfigError(
            f"translation.server.url {url!r}: only a loopback address (127.0.0.1, ::1, "
            "localhost) is allowed; nothing leaves this machine"
        )
    return url.rstrip("/")


class _Language:
    def __init__(self, code: str, agreement: int) -> None:
        self.code = code
        self.agreement = agreement
        self.pairs: deque[tuple[str, str]] = deque(maxlen=CONTEXT_PAIRS)
        self.segment: int | None = None
        self.source = ""
        self.last: LanguageResult | None = None
        self.policy: StabilityPolicy[str] = StabilityPolicy(agreement)
        self.shown = StableText()

    def close(self) -> None:
        if self.source and self.policy.stable:
            self.pairs.append((self.source, " ".join(self.policy.stable)))
        self.segment, self.source, self.last = None, "", None
        self.policy = StabilityPolicy(self.agreement)
        self.shown = StableText()


class OpenAiTranslator:
    """Translator over an OpenAI-compatible `/chat/completions` endpoint on loopback."""

    def __init__(self, config: TranslationConfig) -> None:
        if not config.server.model:
            raise ConfigError("translation.server.model: name the server's model, "
                              "e.g. 'gemma3:4b'")
        self.url = check_loopback(config.server.url) + "/chat/completions"
        self.config = config
        self.languages = config.targets
        self.name = f"{config.server.model} via {config.server.url} (no cache control)"
        self._streams = {code: _Language(code, config.policy.agreement) for code in self.languages}
        log.warning("translation backend 'openai': %s; the server gets the whole sentence "
                    "on every update (no KV-cache control from here)", config.server.url)

    def reset(self) -> None:
        agreement = self.config.policy.agreement
        self._streams = {code: _Language(code, agreement) for code in self.languages}

    def _messages(self, stream: _Language, source: str) -> list[dict[str, str]]:
        language = NAMES.get(stream.code, stream.code)
        messages = [{"role": "system", "content": (
            f"You translate live speech transcripts into {language}. Reply with the "
            f"{language} translation only, no notes.")}]
        for src, tgt in stream.pairs:
            messages += [{"role": "user", "content": src}, {"role": "assistant", "content": tgt}]
        messages.append({"role": "user", "content": source})
        return messages

    def _complete(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps({
            "model": self.config.server.model, "messages": messages, "temperature": 0,
            "max_tokens": self.config.policy.max_new_tokens, "stream": False,
        }).encode()
        request = urllib.request.Request(
            self.url, body, {"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.server.timeout_s) as reply:
                data: Any = json.loads(reply.read())
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"translation server {self.url}: {exc}") from exc
        try:
            return str(data["choices"][0]["message"]["content"]).strip()
        except (KeyError, IndexError, TypeError) as exc:
            raise ModelError(f"translation server {self.url}: unexpected reply") from exc

    def translate(self, update: SourceUpdate) -> dict[str, LanguageResult]:
        return {code: self._update(s, update) for code, s in self._streams.items()}

    def _update(self, stream: _Language, update: SourceUpdate) -> LanguageResult:
        if stream.segment is not None and stream.segment != update.segment_id:
            stream.close()
        stream.segment = update.segment_id
        source = update.text.strip()
        if stream.last is not None and source == stream.source and not update.final:
            return stream.last
        if not source:
            if update.final:
                stream.close()
            return LanguageResult("", "", 0, 0, 0, 0.0, update.final)
        started = time.perf_counter()
        words = self._complete(self._messages(stream, source)).split()
        verdict = stream.policy.update(words, update.final)
        stable = stream.shown.offer(" ".join(verdict.stable))
        result = LanguageResult(
            stable=stable,
            unstable=(" " if stable and verdict.unstable else "") + " ".join(verdict.unstable),
            stable_tokens=len(verdict.stable),
            total_tokens=len(verdict.stable) + len(verdict.unstable),
            prefilled=0,
            compute_s=time.perf_counter() - started,
            final=update.final,
        )
        stream.source, stream.last = source, result
        if update.final:
            stream.close()
        return result
