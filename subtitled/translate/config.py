"""The `[translation]` section of the configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from subtitled.errors import ConfigError

Backend = Literal["onnx", "openai"]
Provider = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class TranslationConfig:
    """Streaming translation. No target language means captions-only mode."""

    targets: tuple[str, ...] = ("de",)
    """Target language codes (e.g. ["de", "es"]); one ASR pass feeds them all. [] (or
    `--target none`): captions only. German by default, with the bundled model; when
    the model is missing or broken the daemon logs why and serves captions only."""
    model: str = "bundled"
    """'bundled' (the small model shipped in models/), a model name in models/, or
    the path of a model directory made by `python -m export`."""
    backend: Backend = "onnx"
    """'onnx' (the model above, with incremental KV-cache reuse) or 'openai' (an
    OpenAI-compatible server on this machine, e.g. Ollama or LM Studio; no cache control)."""
    threads: int = 2
    """ONNX Runtime intra-op threads (0: its default)."""
    provider: Provider = "auto"
    """'auto' (CUDA when onnxruntime-gpu sees a GPU, else CPU), 'cpu' or 'cuda'."""
    context_tokens: int = 512
    """Prompt budget: finished sentences stay as context until it is reached, then the
    oldest are dropped (down to half of it) at once."""
    agreement: int = 2
    """Successive hypotheses that must agree before translated words become stable."""
    include_partial: bool = False
    """Translate the ASR's unstable tail too (earlier but more rollbacks), not only
    committed words."""
    sentence_words: int | None = None
    """Translate sentences longer than this many words clause by clause (0: never).
    Unset: the model's own setting (its manifest's `prompt.sentence_words`; the bundled
    model, trained on short sentences, says 12; exported models, none)."""
    max_new_tokens: int = 256
    """Hard cap on one sentence's translation (besides 2x the source + 8 tokens)."""
    server_url: str = "http://127.0.0.1:11434/v1"
    """backend 'openai': the server's base URL; must be a loopback address."""
    server_model: str = ""
    """backend 'openai': the model name the server knows (e.g. 'gemma3:4b')."""
    server_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for code in self.targets:
            if not code or not code.replace("-", "").isalnum() or len(code) > 16:
                raise ConfigError(
                    f"translation.targets: {code!r} is not a language code (e.g. 'de', 'pt-BR')"
                )
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"translation.targets: {list(self.targets)} names a language twice")
        _at_least("threads", self.threads, 0)
        _at_least("context_tokens", self.context_tokens, 64)
        _at_least("agreement", self.agreement, 1)
        if self.sentence_words is not None:
            _at_least("sentence_words", self.sentence_words, 0)
        _at_least("max_new_tokens", self.max_new_tokens, 1)
        if not self.server_timeout_s > 0:
            raise ConfigError(
                f"translation.server_timeout_s: {self.server_timeout_s} is invalid; "
                "expected more than 0"
            )


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"translation.{key}: {value} is invalid; expected an integer >= {low}")
