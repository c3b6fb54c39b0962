"""Streaming translation of one source stream into one or more target languages.

`LanguageStream` joins the pieces for one target language: the conversation (finished
pairs as context), the stability policy of the open sentence, and a decoder over its own
KV cache. `OnnxTranslator` holds one model and one `LanguageStream` per target language;
all languages are fed from the same ASR pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from subtitled.errors import InvalidArgument, ModelError
from subtitled.events import Translation
from subtitled.translate.decoder import Decoder, GreedyDecoder
from subtitled.translate.policy import DecodePolicy, StabilityPolicy, StableText, clause_cut
from subtitled.translate.prompt import Conversation
from subtitled.translate.runtime import OnnxModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceUpdate:
    """The source text of one ASR segment as it stands now."""

    segment_id: int
    text: str
    final: bool
    words: int = 0
    emitted_unix: float = 0.0


@dataclass(frozen=True)
class LanguageResult:
    """One language's translation after an update, with what it cost."""

    stable: str
    unstable: str
    stable_tokens: int
    total_tokens: int
    prefilled: int
    """Tokens prefilled by this update (decode steps not counted)."""
    compute_s: float
    final: bool
    decode_steps: int = 0


class Translator(Protocol):
    """What the daemon's translation stage drives (ONNX model, OpenAI-compatible server,
    or a test double). Calls are blocking and run in a worker thread."""

    name: str
    languages: tuple[str, ...]

    def translate(self, update: SourceUpdate) -> dict[str, LanguageResult]:
        """Translate the segment as it stands into every target language."""
        ...

    def reset(self) -> None:
        """Forget all context (after a failure): fresh caches, no open sentence."""
        ...


def _split_text(stable: str, full: str, fallback: str) -> str:
    return full[len(stable) :] if full.startswith(stable) else fallback


@dataclass
class _Spent:
    """What one update cost, over the clauses it decoded."""

    prefilled: int = 0
    decode_steps: int = 0
    compute_s: float = 0.0


@dataclass(frozen=True)
class _Clause:
    stable: str
    full: str
    unstable: str
    stable_tokens: int
    total_tokens: int


def _join(before: str, after: str) -> str:
    if not before or not after:
        return before + after
    return f"{before.rstrip()} {after.lstrip()}"


class LanguageStream:
    """One target language: context pairs, the open sentence's policy, one KV cache.

    A long segment is translated clause by clause when the model asks for it
    (`sentence_words`, from its manifest or the configuration): each clause that the
    growing source closes becomes a finished pair of the conversation, and its
    translation stays in front of the open clause's.
    """

    def __init__(
        self,
        model: OnnxModel,
        language: str,
        policy: DecodePolicy | None = None,
        *,
        context_tokens: int | None = None,
        reuse: bool = True,
        sentence_words: int | None = None,
    ) -> None:
        self.model = model
        self.language = language
        self.config = policy or DecodePolicy()
        self.decoder: GreedyDecoder = Decoder(model, self.config, reuse=reuse)
        prompt = model.prompt
        if prompt.languages and language not in prompt.languages:
            raise ModelError(
                f"model {model.name} does not translate into {language!r}; it knows "
                f"{', '.join(sorted(prompt.languages))}"
            )
        self.sentence_words = (
            prompt.sentence_words if sentence_words is None else sentence_words
        )
        tokenizer = model.tokenizer
        budget = context_tokens or model.max_positions or 2048
        if model.max_positions:
            budget = min(budget, model.max_positions)
        self._preamble = tokenizer.encode(prompt.preamble)
        self._end = tokenizer.encode(prompt.target_end)
        self._budget = budget
        self.conversation = Conversation(self._preamble, self._end, budget)
        self.open_segment: int | None = None
        self._policy: StabilityPolicy[int] = StabilityPolicy(self.config.agreement)
        self._turn: tuple[int, ...] = ()
        self._shown = StableText()
        self._closed = ""
        self._closed_words = 0
        self._closed_tokens = 0
        self._source = ""
        self._last: LanguageResult | None = None
        self.prefilled_tokens = 0
        self.decode_steps = 0
        self.compute_s = 0.0

    @property
    def context_budget(self) -> int:
        """Tokens the prompt and its decoding may take in all."""
        return self._budget

    def reset(self) -> None:
        self.decoder.reset()
        self.conversation = Conversation(self._preamble, self._end, self._budget)
        self._close()

    def _close_clause(self) -> None:
        self._policy = StabilityPolicy(self.config.agreement)
        self._turn = ()

    def _close(self) -> None:
        self._close_clause()
        self.open_segment = None
        self._shown = StableText()
        self._closed = ""
        self._closed_words = 0
        self._closed_tokens = 0
        self._source = ""
        self._last = None

    def _finish_open(self) -> None:
        """A segment was abandoned without a final: keep what was stable as its pair."""
        if self._turn and self._policy.stable:
            self.conversation.finish(self._turn, self._policy.stable)
        self._close()

    def update(self, segment_id: int, source: str, final: bool) -> LanguageResult:
        """Translate the open segment `source` (the whole segment so far)."""
        if self.open_segment is not None and segment_id != self.open_segment:
            self._finish_open()
        self.open_segment = segment_id
        source = source.strip()
        if self._last is not None and source == self._source and not final:
            return LanguageResult(self._last.stable, self._last.unstable,
                                  self._last.stable_tokens, self._last.total_tokens, 0, 0.0,
                                  False)
        spent = _Spent()
        # Words of clauses already closed are not read again (with partial ASR words a
        # revision may touch them; their translation is shown and stays).
        words = source.split()[self._closed_words :]
        while (cut := clause_cut(words, self.sentence_words)) is not None:
            closed = self._clause(" ".join(words[:cut]), True, spent)
            self._closed = _join(self._closed, closed.stable)
            self._closed_tokens += closed.stable_tokens
            self._closed_words += cut
            words = words[cut:]
        rest = " ".join(words)
        clause = self._clause(rest, final, spent) if rest else _Clause("", "", "", 0, 0)
        stable = self._shown.offer(_join(self._closed, clause.stable))
        result = LanguageResult(
            stable=stable,
            # A final has no tail: an incomplete character at its end is dropped.
            unstable="" if final else _split_text(stable, _join(self._closed, clause.full),
                                                  clause.unstable),
            stable_tokens=self._closed_tokens + clause.stable_tokens,
            total_tokens=self._closed_tokens + clause.total_tokens,
            prefilled=spent.prefilled,
            compute_s=spent.compute_s,
            final=final,
            decode_steps=spent.decode_steps,
        )
        self.prefilled_tokens += spent.prefilled
        self.decode_steps += spent.decode_steps
        self.compute_s += spent.compute_s
        self._source, self._last = source, result
        if final:
            self._close()
        return result

    def _clause(self, source: str, final: bool, spent: _Spent) -> _Clause:
        """Decode the open clause `source`; when `final`, it becomes a finished pair."""
        tokenizer = self.model.tokenizer
        turn = tokenizer.encode(self.model.prompt.turn(source, self.language))
        source_tokens = len(tokenizer.encode(source))
        limit = max(self.config.length_limit(source_tokens), len(self._policy.forced))
        prompt = self.conversation.prompt(turn, limit)
        decoded = self.decoder.decode(prompt, self._policy.forced, limit, self._policy.draft)
        verdict = self._policy.update(decoded.tokens, final)
        spent.prefilled += decoded.prefilled
        spent.decode_steps += decoded.decode_steps
        spent.compute_s += decoded.compute_s
        self._turn = turn
        # A target's first token may carry its word mark (Gemma's "▁Die" after "German:"),
        # which decodes as a leading space
        stable = tokenizer.decode(verdict.stable).lstrip()
        full = tokenizer.decode(verdict.stable + verdict.unstable).lstrip()
        clause = _Clause(
            stable=stable,
            full=full,
            unstable=_split_text(stable, full, tokenizer.decode(verdict.unstable)),
            stable_tokens=len(verdict.stable),
            total_tokens=len(verdict.stable) + len(verdict.unstable),
        )
        if final:
            self.conversation.finish(turn, verdict.stable)
            self._close_clause()
        return clause


class OnnxTranslator:
    """One ONNX model, one `LanguageStream` (one KV cache) per target language."""

    def __init__(
        self,
        model: OnnxModel,
        languages: Sequence[str],
        policy: DecodePolicy | None = None,
        *,
        context_tokens: int | None = None,
        reuse: bool = True,
        sentence_words: int | None = None,
    ) -> None:
        if not languages:
            raise InvalidArgument("no target language")
        self.model = model
        self.name = model.name
        self.languages = tuple(languages)
        self._policy = policy
        self._context_tokens = context_tokens
        self._reuse = reuse
        self._sentence_words = sentence_words
        self.streams = {lang: self._make(lang) for lang in self.languages}

    def _make(self, language: str) -> LanguageStream:
        return LanguageStream(self.model, language, self._policy,
                              context_tokens=self._context_tokens, reuse=self._reuse,
                              sentence_words=self._sentence_words)

    def translate(self, update: SourceUpdate) -> dict[str, LanguageResult]:
        return {
            lang: stream.update(update.segment_id, update.text, update.final)
            for lang, stream in self.streams.items()
        }

    def reset(self) -> None:
        self.streams = {lang: self._make(lang) for lang in self.languages}


def as_translation(result: LanguageResult, latency_ms: float | None = None) -> Translation:
    """The wire form of one language's result."""
    return Translation(
        stable=result.stable,
        unstable=result.unstable,
        latency_ms=latency_ms,
        compute_ms=round(result.compute_s * 1000.0, 1),
    )
