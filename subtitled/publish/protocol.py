"""The subtitle wire protocol, version 1: a sans-I/O core.

Nothing here touches a socket or a clock. `Feed` numbers every message the daemon
publishes and keeps the history a reconnecting client needs; the message builders
turn domain data (`SegmentUpdate`, `StatusUpdate`) into JSON objects; the parsers
turn what a client sends (a text frame, a connect query) into typed requests or a
`ClientMessageError` whose `code` names the problem. The asyncio shell in
`server.py` owns the sockets. The format is documented in `PROTOCOL.md`.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import re
import secrets
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

from subtitled import __version__
from subtitled.errors import InvalidArgument, ProtocolError
from subtitled.events import CaptureState, SegmentUpdate, StatusUpdate, Translation

PROTOCOL_VERSION = 1
"""Bumped on any change an existing client could misread; additive fields keep it."""

Mode = Literal["captions-only", "translating"]
JsonObject = dict[str, Any]

# Error codes a client can receive in an `error` message (see PROTOCOL.md).
NOT_TEXT = "not-text"
NOT_JSON = "not-json"
NOT_OBJECT = "not-object"
UNKNOWN_TYPE = "unknown-type"
BAD_FIELD = "bad-field"

MAX_SUBSCRIBED_LANGUAGES = 32
# A BCP 47-shaped tag ("de", "pt-BR", "zh-Hans"); compared exactly, not normalised.
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
_MAX_SINCE_DIGITS = 18


class ClientMessageError(ProtocolError):
    """A client frame or connect query the protocol does not allow.

    `code` is the machine-readable code sent back in the `error` message.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ServiceInfo:
    """What the daemon runs, as announced in `hello` and `/healthz`."""

    asr_model: str
    translation_model: str | None
    source_language: str
    target_languages: tuple[str, ...] = ()
    detected_language: str | None = None
    """The spoken language the ASR identified last (`source_language` 'auto')."""

    @property
    def mode(self) -> Mode:
        """`captions-only` without a translation model, else `translating`."""
        return "captions-only" if self.translation_model is None else "translating"


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, eq=False)
class FeedMessage:
    """One numbered message of the feed (`segment`, `translation` or `status`).

    `payload` is the full JSON object, every translation included; per-client
    language filtering happens in `encode_for`.
    """

    seq: int
    payload: Mapping[str, Any]
    segment_id: int | None = None
    final: bool = False

    @property
    def is_partial(self) -> bool:
        return self.segment_id is not None and not self.final


def _seconds(value: float) -> float | None:
    """Times are sent with millisecond precision; a non-finite time is sent as null."""
    return round(value, 3) if math.isfinite(value) else None


def _translation_payload(translation: Translation) -> JsonObject:
    payload: JsonObject = {"stable": translation.stable, "unstable": translation.unstable}
    if translation.latency_ms is not None:
        payload["latency_ms"] = round(translation.latency_ms, 1)
    if translation.compute_ms is not None:
        payload["compute_ms"] = round(translation.compute_ms, 1)
    return payload


def segment_payload(update: SegmentUpdate, seq: int) -> JsonObject:
    """The `segment` message for one revision of a caption segment."""
    payload: JsonObject = {
        "type": "segment",
        "seq": seq,
        "id": update.segment_id,
        "rev": update.revision,
        "status": update.status,
        "text": update.text,
        "committed": update.committed_text,
        "partial": "".join(w.text for w in update.partial).strip(),
        "words": [
            {"w": w.text, "start": _seconds(w.start_s), "end": _seconds(w.end_s)}
            for w in update.words
        ],
        "start": _seconds(update.audio_start_s),
        "end": _seconds(update.audio_end_s),
        "emitted": _seconds(update.emitted_unix),
        "translations": {
            lang: _translation_payload(t) for lang, t in sorted(update.translations.items())
        },
    }
    # Added in 0.2 (optional; clients that do not know them ignore them).
    if update.language is not None:
        payload["language"] = update.language
    if update.spoken_language is not None and update.spoken_language != update.language:
        payload["spoken"] = update.spoken_language
    return payload


def translation_payload(update: SegmentUpdate, seq: int) -> JsonObject:
    """The `translation` message: new translations for revision `rev` of segment `id`,
    whose words were sent before (added in 0.2)."""
    return {
        "type": "translation",
        "seq": seq,
        "id": update.segment_id,
        "rev": update.revision,
        "emitted": _seconds(update.emitted_unix),
        "translations": {
            lang: _translation_payload(t) for lang, t in sorted(update.translations.items())
        },
    }


def languages_payload(info: ServiceInfo) -> JsonObject:
    """`languages` of `hello` and `/healthz`: configured source, targets, identified."""
    return {
        "source": info.source_language,
        "targets": list(info.target_languages),
        "detected": info.detected_language,
    }


def status_payload(status: StatusUpdate, seq: int) -> JsonObject:
    """The `status` message: capture state and a human-readable detail."""
    return {
        "type": "status",
        "seq": seq,
        "capture": status.capture,
        "detail": status.detail,
        "overflow_count": status.overflow_count,
    }


@dataclass(frozen=True)
class Replay:
    """What `Feed.since` returns: the missed messages, oldest first.

    `complete` is False when some finals the client missed are no longer in the
    history (it was away too long), or when `since` is ahead of the feed (the
    daemon restarted and numbering began again); the client then has a gap.
    """

    since: int
    messages: tuple[FeedMessage, ...]
    complete: bool


def hello_payload(
    info: ServiceInfo,
    *,
    seq: int,
    capture: CaptureState,
    subscribed: frozenset[str] | None,
    replay: Replay | None = None,
    stream: str | None = None,
) -> JsonObject:
    """The `hello` message, first on every connection (and again if the info changes)."""
    message: JsonObject = {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "version": __version__,
        "models": {"asr": info.asr_model, "translation": info.translation_model},
        "languages": languages_payload(info),
        "mode": info.mode,
        "seq": seq,
        "stream": stream,
        "capture": capture,
        "subscribed": None if subscribed is None else sorted(subscribed),
    }
    if replay is not None:
        message["resume"] = {
            "since": replay.since,
            "replayed": len(replay.messages),
            "complete": replay.complete,
        }
    return message


def error_payload(code: str, message: str) -> JsonObject:
    """The `error` message sent in reply to a frame the protocol does not allow."""
    return {"type": "error", "code": code, "message": message}


def pong_payload() -> JsonObject:
    return {"type": "pong"}


def subscribed_payload(languages: frozenset[str] | None) -> JsonObject:
    """The acknowledgement of a `subscribe` request."""
    return {"type": "subscribed", "languages": None if languages is None else sorted(languages)}


def encode(payload: Mapping[str, Any]) -> str:
    """Compact UTF-8 JSON, the form every message takes on the wire."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def encode_for(message: FeedMessage, languages: frozenset[str] | None) -> str | None:
    """Encode a feed message for a client subscribed to `languages` (None: all); None
    when it has nothing for that client (a `translation` in no language it wants)."""
    payload = message.payload
    translations = payload.get("translations")
    if languages is not None and translations:
        payload = dict(payload)
        payload["translations"] = {k: v for k, v in translations.items() if k in languages}
    if payload.get("type") == "translation" and not payload.get("translations"):
        return None
    return encode(payload)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Ping:
    """`{"type": "ping"}`: answered by `{"type": "pong"}`."""


@dataclass(frozen=True)
class Subscribe:
    """`{"type": "subscribe", "languages": [...]}`: None (JSON null) means all targets."""

    languages: frozenset[str] | None


ClientRequest = Ping | Subscribe


def parse_languages(value: object, where: str) -> frozenset[str] | None:
    """Validate a list of language tags; None stays None (all languages)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ClientMessageError(BAD_FIELD, f"{where} must be a list of language tags or null")
    if len(value) > MAX_SUBSCRIBED_LANGUAGES:
        raise ClientMessageError(
            BAD_FIELD, f"{where} lists {len(value)} languages; at most {MAX_SUBSCRIBED_LANGUAGES}"
        )
    for tag in value:
        if not _LANGUAGE_TAG.fullmatch(tag):
            raise ClientMessageError(
                BAD_FIELD, f"{where}: {tag[:40]!r} is not a language tag like 'de' or 'pt-BR'"
            )
    return frozenset(value)


def parse_client_message(data: str | bytes) -> ClientRequest:
    """Parse one client frame. Unknown fields are ignored, for forward compatibility.

    Raises `ClientMessageError` naming the problem: a binary frame (`not-text`),
    invalid JSON (`not-json`), a JSON value that is not an object (`not-object`),
    a `type` the server does not know (`unknown-type`), or a missing or
    ill-typed field (`bad-field`).
    """
    if not isinstance(data, str):
        raise ClientMessageError(NOT_TEXT, "send JSON in text frames, not binary frames")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge number, deep nesting
        raise ClientMessageError(NOT_JSON, f"not valid JSON: {str(exc)[:80]}") from exc
    if not isinstance(value, dict):
        raise ClientMessageError(NOT_OBJECT, "a message must be a JSON object")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise ClientMessageError(BAD_FIELD, "'type' must be a string")
    if kind == "ping":
        return Ping()
    if kind == "subscribe":
        if "languages" not in value:
            raise ClientMessageError(BAD_FIELD, "subscribe needs 'languages' (a list, or null)")
        return Subscribe(parse_languages(value["languages"], "'languages'"))
    raise ClientMessageError(
        UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}; expected 'ping' or 'subscribe'"
    )


@dataclass(frozen=True)
class ConnectParams:
    """Options of the feed's connect URL: `/?since=SEQ&languages=de,es`."""

    since: int | None = None
    languages: frozenset[str] | None = None
    stream: str | None = None


def parse_connect_query(query: str) -> ConnectParams:
    """Parse the query string of a feed connection (without the leading `?`).

    `since` is a non-negative integer; `languages` a comma-separated list, where
    an empty value means no translations. Unknown parameters are ignored.
    """
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=16)
    except ValueError as exc:
        raise ClientMessageError(BAD_FIELD, f"bad query string: {exc}") from exc
    since: int | None = None
    if "since" in params:
        raw = params["since"][-1]
        if not raw.isdigit() or not raw.isascii() or len(raw) > _MAX_SINCE_DIGITS:
            raise ClientMessageError(BAD_FIELD, f"since={raw[:40]!r}: expected a sequence number")
        since = int(raw)
    languages: frozenset[str] | None = None
    if "languages" in params:
        raw = params["languages"][-1]
        tags = [t.strip() for t in raw.split(",") if t.strip()]
        languages = parse_languages(tags, "languages")
    stream: str | None = None
    if "stream" in params:
        stream = params["stream"][-1][:64] or None
    return ConnectParams(since=since, languages=languages, stream=stream)


# --------------------------------------------------------------------------- feed


@dataclass
class _Latest:
    """The latest status, kept so that a resuming client learns what it missed."""

    message: FeedMessage | None = None
    capture: CaptureState = "starting"
    detail: str = ""


@dataclass
class Feed:
    """Numbers published messages and keeps the history resuming clients replay.

    Every message gets the next `seq` (1, 2, ...). The history keeps the last
    `history_size` finals, the latest partial of each still-open segment (at most
    `max_open_segments`) with the latest `translation` of it, and the latest status.
    A partial superseded by a later revision or by its final, a translation superseded
    by a later one or by a revision (which carries the translations as they stand), and
    a status superseded by a later one, is not replayed: the newer message carries
    everything a client needs.
    """

    history_size: int = 10_000
    max_open_segments: int = 64
    stream_id: str = field(default_factory=lambda: secrets.token_hex(8))
    """Names this numbering (sent in hello); kept across restarts by the journal."""
    last_seq: int = field(default=0, init=False)
    _finals: deque[FeedMessage] = field(default_factory=deque, init=False, repr=False)
    _open: OrderedDict[int, FeedMessage] = field(
        default_factory=OrderedDict, init=False, repr=False
    )
    _retranslated: dict[int, FeedMessage] = field(default_factory=dict, init=False, repr=False)
    _status: _Latest = field(default_factory=_Latest, init=False, repr=False)
    _evicted_through: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.history_size < 1:
            raise InvalidArgument(f"history_size must be at least 1, got {self.history_size}")
        if self.max_open_segments < 1:
            raise InvalidArgument(
                f"max_open_segments must be at least 1, got {self.max_open_segments}"
            )

    @property
    def capture(self) -> CaptureState:
        """The capture state of the latest status (`starting` before any)."""
        return self._status.capture

    @property
    def capture_detail(self) -> str:
        return self._status.detail

    @property
    def oldest_final_seq(self) -> int | None:
        return self._finals[0].seq if self._finals else None

    def __len__(self) -> int:
        """Messages held in the history."""
        held = len(self._finals) + len(self._open) + len(self._retranslated)
        return held + (self._status.message is not None)

    def restore(
        self, finals: Sequence[Mapping[str, Any]], last_seq: int, stream_id: str | None = None
    ) -> None:
        """Load journaled final messages into an empty feed; numbering goes on after
        `last_seq` (which may be past the last final: see `publish.journal`)."""
        if self.last_seq:
            raise InvalidArgument("restore() needs an empty feed")
        for payload in finals[-self.history_size :]:
            self._finals.append(
                FeedMessage(seq=int(payload["seq"]), payload=payload,
                            segment_id=int(payload["id"]), final=True)
            )
        if len(finals) > self.history_size:
            self._evicted_through = self._finals[0].seq - 1
        self.last_seq = max(last_seq, self._finals[-1].seq if self._finals else 0)
        if stream_id is not None:
            self.stream_id = stream_id

    def publish_segment(self, update: SegmentUpdate) -> FeedMessage:
        """Number a segment revision and record it in the history."""
        self.last_seq += 1
        final = update.status == "final"
        message = FeedMessage(
            seq=self.last_seq,
            payload=segment_payload(update, self.last_seq),
            segment_id=update.segment_id,
            final=final,
        )
        self._open.pop(update.segment_id, None)
        self._retranslated.pop(update.segment_id, None)
        if final:
            self._finals.append(message)
            if len(self._finals) > self.history_size:
                self._evicted_through = self._finals.popleft().seq
        else:
            self._open[update.segment_id] = message
            if len(self._open) > self.max_open_segments:
                # A segment that never finalised: its partial is stale, not missed.
                stale, _ = self._open.popitem(last=False)
                self._retranslated.pop(stale, None)
        return message

    def publish_translation(self, update: SegmentUpdate) -> FeedMessage:
        """Number new translations of a published revision (`update.retranslated`)."""
        self.last_seq += 1
        message = FeedMessage(
            seq=self.last_seq,
            payload=translation_payload(update, self.last_seq),
            segment_id=update.segment_id,
        )
        if update.segment_id in self._open:
            self._retranslated[update.segment_id] = message
        return message

    def publish_status(self, status: StatusUpdate) -> FeedMessage:
        """Number a status update; it supersedes the previous one in the history."""
        self.last_seq += 1
        message = FeedMessage(seq=self.last_seq, payload=status_payload(status, self.last_seq))
        self._status = _Latest(message, status.capture, status.detail)
        return message

    def since(self, seq: int, stream: str | None = None) -> Replay:
        """The messages a client that last saw `seq` missed, in seq order, no duplicates.

        `stream` is the numbering the client's `seq` belongs to (from its hello); a
        different one means the client's seq means nothing here: it gets everything
        held, marked incomplete.
        """
        if seq < 0:
            raise InvalidArgument(f"since must be >= 0, got {seq}")
        if (stream is not None and stream != self.stream_id) or seq > self.last_seq:
            # Numbering restarted (a new daemon): everything held is new to the client.
            return Replay(seq, self._history_after(0), complete=False)
        complete = seq >= self._evicted_through
        return Replay(seq, self._history_after(seq), complete=complete)

    def _history_after(self, seq: int) -> tuple[FeedMessage, ...]:
        start = bisect.bisect_right(self._finals, seq, key=lambda m: m.seq)
        finals = list(itertools.islice(self._finals, start, None))
        others = [m for m in self._open.values() if m.seq > seq]
        others += [m for m in self._retranslated.values() if m.seq > seq]
        status = self._status.message
        if status is not None and status.seq > seq:
            others.append(status)
        if not others:
            return tuple(finals)
        return tuple(sorted(finals + others, key=lambda m: m.seq))
