"""The `[translation]` section of the configuration, nested like the ASR's: the model and
where it runs at the top, `[translation.policy]` (what is translated when, and how much
context it keeps), `[translation.server]` (the `openai` backend's server)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from subtitled.errors import ConfigError

log = logging.getLogger(__name__)

Backend = Literal["onnx", "openai"]
Provider = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class TranslationPolicyConfig:
    """`[translation.policy]`: when words are translated and become stable."""

    agreement: int = 2
    """Successive hypotheses that must agree before translated words become stable."""
    include_partial: bool = False
    """Translate the ASR's unstable tail too (earlier but more rollbacks), not only
    committed words."""
    sentence_words: int | None = None
    """Translate sentences longer than this many words clause by clause (0: never).
    Unset: the model's own setting (its manifest's `prompt.sentence_words`; the bundled
    model says none, the Tatoeba-only model 12; exported models, none)."""
    context_tokens: int = 512
    """Prompt budget: finished sentences stay as context until it is reached, then the
    oldest are dropped (down to half of it) at once."""
    max_new_tokens: int = 256
    """Hard cap on one sentence's translation (besides 2x the source + 8 tokens)."""

    def __post_init__(self) -> None:
        _at_least("policy.agreement", self.agreement, 1)
        if self.sentence_words is not None:
            _at_least("policy.sentence_words", self.sentence_words, 0)
        _at_least("policy.context_tokens", self.context_tokens, 64)
        _at_least("policy.max_new_tokens", self.max_new_tokens, 1)


@dataclass(frozen=True)
class TranslationServerConfig:
    """`[translation.server]`: backend 'openai', an OpenAI-compatible server on this
    machine (Ollama, LM Studio, llama.cpp's server)."""

    url: str = "http://127.0.0.1:11434/v1"
    """The server's base URL; must be a loopback address."""
    model: str = ""
    """The model name the server knows (e.g. 'gemma3:4b')."""
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ConfigError(
                f"translation.server.timeout_s: {self.timeout_s} is invalid; expected more than 0"
            )


@dataclass(frozen=True)
class TranslationConfig:
    """Streaming translation. No target language means captions-only mode."""

    targets: tuple[str, ...] = ("de",)
    """Target language codes (e.g. ["de", "es"]); one ASR pass feeds them all. [] (or
    `--target none`): captions only. German by default, with the bundled model; when
    the model is missing or broken the daemon logs why and serves captions only."""
    model: str = "bundled"
    """'bundled' (the model shipped in models/), a model name in models/, or the path of
    a model directory made by `python -m export`."""
    backend: Backend = "onnx"
    """'onnx' (the model above, with incremental KV-cache reuse) or 'openai' (the server
    of `[translation.server]`; no cache control)."""
    threads: int = 2
    """ONNX Runtime intra-op threads (0: its default)."""
    provider: Provider = "auto"
    """'auto' (CUDA when onnxruntime-gpu sees a GPU, else CPU), 'cpu' or 'cuda'."""
    policy: TranslationPolicyConfig = field(default_factory=TranslationPolicyConfig)
    server: TranslationServerConfig = field(default_factory=TranslationServerConfig)

    def __post_init__(self) -> None:
        for code in self.targets:
            if not code or not code.replace("-", "").isalnum() or len(code) > 16:
                raise ConfigError(
                    f"translation.targets: {code!r} is not a language code (e.g. 'de', 'pt-BR')"
                )
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"translation.targets: {list(self.targets)} names a language twice")
        _at_least("threads", self.threads, 0)


MOVED_KEYS = {
    "agreement": "policy.agreement",
    "include_partial": "policy.include_partial",
    "sentence_words": "policy.sentence_words",
    "context_tokens": "policy.context_tokens",
    "max_new_tokens": "policy.max_new_tokens",
    "server_url": "server.url",
    "server_model": "server.model",
    "server_timeout_s": "server.timeout_s",
}
"""Keys of `[translation]` before it was nested -> where they are now. Old files
and `--set` keys still work, with a warning naming the new key."""


def moved_key(key: str) -> str | None:
    """The new dotted key (under `translation.`) of an old flat one, else None."""
    new = MOVED_KEYS.get(key)
    if new is not None:
        log.warning("translation.%s is now translation.%s: please update the configuration",
                    key, new)
    return new


def nest_moved_keys(table: dict[str, object]) -> dict[str, object]:
    """A `[translation]` TOML table with old flat keys moved to their nested tables."""
    out = dict(table)
    for old in [k for k in out if k in MOVED_KEYS]:
        new = moved_key(old)
        assert new is not None
        section, name = new.split(".")
        sub = out.setdefault(section, {})
        if not isinstance(sub, dict):
            raise ConfigError(f"translation.{section}: expected a table")
        if name in sub:
            raise ConfigError(f"translation.{old} and translation.{new} are both set: keep {new}")
        sub[name] = out.pop(old)
    return out


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"translation.{key}: {value} is invalid; expected an integer >= {low}")
