"""The wire protocol core: message encoding, client parsing, and the Feed's history."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from subtitled import __version__
from subtitled.errors import ProtocolError
from subtitled.events import SegmentUpdate, StatusUpdate, Translation, Word
from subtitled.publish.protocol import (
    BAD_FIELD,
    NOT_JSON,
    NOT_OBJECT,
    NOT_TEXT,
    PROTOCOL_VERSION,
    UNKNOWN_TYPE,
    ClientMessageError,
    ConnectParams,
    Feed,
    FeedMessage,
    Ping,
    Replay,
    ServiceInfo,
    Subscribe,
    encode,
    encode_for,
    error_payload,
    hello_payload,
    parse_client_message,
    parse_connect_query,
    segment_payload,
    status_payload,
)

from .factories import final, partial, segment

INFO = ServiceInfo("tiny.en", "gemma-moe-small", "en", ("de", "es"))

# ------------------------------------------------------------------ encoding


def test_segment_payload_carries_every_documented_field() -> None:
    update = SegmentUpdate(
        segment_id=7,
        revision=3,
        status="partial",
        committed=(Word(" Hello", 1.0, 1.2), Word(" there", 1.2, 1.50049)),
        partial=(Word(" frie", 1.6, 1.9),),
        emitted_unix=1_700_000_000.12345,
        translations={"es": Translation("Hola"), "de": Translation("Hallo", "da")},
    )
    assert segment_payload(update, seq=42) == {
        "type": "segment",
        "seq": 42,
        "id": 7,
        "rev": 3,
        "status": "partial",
        "text": "Hello there frie",
        "committed": "Hello there",
        "partial": "frie",
        "words": [
            {"w": " Hello", "start": 1.0, "end": 1.2},
            {"w": " there", "start": 1.2, "end": 1.5},
            {"w": " frie", "start": 1.6, "end": 1.9},
        ],
        "start": 1.0,
        "end": 1.9,
        "emitted": 1_700_000_000.123,
        "translations": {
            "de": {"stable": "Hallo", "unstable": "da"},
            "es": {"stable": "Hola", "unstable": ""},
        },
    }


def test_non_finite_times_are_sent_as_null_and_encoding_is_valid_json() -> None:
    update = segment(1, committed="", partial="", emitted_unix=float("nan"))
    payload = segment_payload(update, 1)
    assert payload["emitted"] is None
    assert json.loads(encode(payload)) == payload


def test_status_payload() -> None:
    status = StatusUpdate("lost", "device unplugged", overflow_count=2)
    assert status_payload(status, 9) == {
        "type": "status",
        "seq": 9,
        "capture": "lost",
        "detail": "device unplugged",
        "overflow_count": 2,
    }


@pytest.mark.parametrize(
    ("info", "mode", "translation"),
    [
        (INFO, "translating", "gemma-moe-small"),
        (ServiceInfo("tiny.en", None, "en"), "captions-only", None),
    ],
)
def test_hello_payload(info: ServiceInfo, mode: str, translation: str | None) -> None:
    hello = hello_payload(
        info, seq=5, capture="running", subscribed=frozenset({"es"}), stream="ab12"
    )
    assert hello == {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "version": __version__,
        "models": {"asr": "tiny.en", "translation": translation},
        "languages": {"source": "en", "targets": list(info.target_languages), "detected": None},
        "mode": mode,
        "seq": 5,
        "stream": "ab12",
        "capture": "running",
        "subscribed": ["es"],
    }


def test_since_from_another_stream_replays_everything_held() -> None:
    feed = Feed()
    for i in range(3):
        feed.publish_segment(SegmentUpdate(i, 0, "final", (Word(" w", 0, 1),), (), 0.0))
    same = feed.since(2, feed.stream_id)
    assert [m.seq for m in same.messages] == [3] and same.complete
    other = feed.since(2, "another-stream")
    assert [m.seq for m in other.messages] == [1, 2, 3] and not other.complete


def test_hello_reports_resume() -> None:
    replay = Replay(since=3, messages=(), complete=False)
    hello = hello_payload(INFO, seq=5, capture="starting", subscribed=None, replay=replay)
    assert hello["subscribed"] is None
    assert hello["resume"] == {"since": 3, "replayed": 0, "complete": False}


@pytest.mark.parametrize(
    ("languages", "expected"),
    [
        (None, {"de", "es"}),
        (frozenset({"de"}), {"de"}),
        (frozenset({"de", "fr"}), {"de"}),
        (frozenset(), set()),
    ],
)
def test_encode_for_filters_translations(
    languages: frozenset[str] | None, expected: set[str]
) -> None:
    feed = Feed()
    translations = {"de": Translation("Hallo"), "es": Translation("Hola")}
    message = feed.publish_segment(segment(1, translations=translations))
    text = encode_for(message, languages)
    assert text is not None
    decoded = json.loads(text)
    assert set(decoded["translations"]) == expected
    assert set(message.payload["translations"]) == {"de", "es"}  # the feed copy is untouched
    # A `translation` message goes only to clients that want one of its languages.
    update = dataclasses.replace(partial(1, 0), translations=translations, retranslated=True)
    retranslated = feed.publish_translation(update)
    text = encode_for(retranslated, languages)
    if expected:
        assert text is not None and set(json.loads(text)["translations"]) == expected
    else:
        assert text is None


def test_translation_message_names_the_revision_and_carries_no_words() -> None:
    feed = Feed()
    feed.publish_segment(partial(7, 3, "hello there"))
    update = dataclasses.replace(
        partial(7, 3, "hello there"), retranslated=True, emitted_unix=1_700_000_000.25,
        translations={"de": Translation("Hallo", "da", latency_ms=178.04, compute_ms=52.31)},
    )
    message = feed.publish_translation(update)
    assert json.loads(encode_for(message, None) or "") == {
        "type": "translation", "seq": 2, "id": 7, "rev": 3, "emitted": 1_700_000_000.25,
        "translations": {"de": {"stable": "Hallo", "unstable": "da", "latency_ms": 178.0,
                                "compute_ms": 52.3}},
    }
    assert message.is_partial and not message.final  # droppable, never journaled


def test_encode_keeps_non_ascii_text() -> None:
    assert encode({"text": "größe 字幕"}) == '{"text":"größe 字幕"}'


# ------------------------------------------------------------------ client frames


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"type": "ping"}', Ping()),
        ('{"type": "ping", "id": 3, "future": true}', Ping()),
        (
            '{"type": "subscribe", "languages": ["de", "pt-BR"]}',
            Subscribe(frozenset({"de", "pt-BR"})),
        ),
        ('{"type": "subscribe", "languages": []}', Subscribe(frozenset())),
        ('{"type": "subscribe", "languages": null}', Subscribe(None)),
    ],
)
def test_parse_client_message_accepts(frame: str, expected: object) -> None:
    assert parse_client_message(frame) == expected


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b'{"type": "ping"}', NOT_TEXT),
        ("", NOT_JSON),
        ("ping", NOT_JSON),
        ('{"type": "ping"', NOT_JSON),
        ("[" * 100_000, NOT_JSON),  # nesting deep enough to blow the recursion limit
        ("[1, 2]", NOT_OBJECT),
        ('"ping"', NOT_OBJECT),
        ("null", NOT_OBJECT),
        ("{}", BAD_FIELD),
        ('{"type": 1}', BAD_FIELD),
        ('{"type": "PING"}', UNKNOWN_TYPE),
        ('{"type": "segment"}', UNKNOWN_TYPE),
        ('{"type": "subscribe"}', BAD_FIELD),
        ('{"type": "subscribe", "languages": "de"}', BAD_FIELD),
        ('{"type": "subscribe", "languages": [1]}', BAD_FIELD),
        ('{"type": "subscribe", "languages": ["not a tag"]}', BAD_FIELD),
        ('{"type": "subscribe", "languages": ["../x"]}', BAD_FIELD),
        (json.dumps({"type": "subscribe", "languages": ["de"] * 33}), BAD_FIELD),
    ],
)
def test_parse_client_message_rejects(frame: str | bytes, code: str) -> None:
    with pytest.raises(ClientMessageError) as caught:
        parse_client_message(frame)
    assert caught.value.code == code
    assert isinstance(caught.value, ProtocolError)
    assert error_payload(code, caught.value.message)["type"] == "error"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ConnectParams()),
        ("since=0", ConnectParams(since=0)),
        ("since=123&languages=de,es", ConnectParams(123, frozenset({"de", "es"}))),
        ("languages=", ConnectParams(languages=frozenset())),
        ("languages=de%2Ces", ConnectParams(languages=frozenset({"de", "es"}))),
        ("since=1&since=2", ConnectParams(since=2)),
        ("other=1", ConnectParams()),
    ],
)
def test_parse_connect_query_accepts(query: str, expected: ConnectParams) -> None:
    assert parse_connect_query(query) == expected


@pytest.mark.parametrize(
    "query",
    ["since=", "since=-1", "since=abc", "since=1.5", "since=" + "9" * 19, "languages=d e"],
)
def test_parse_connect_query_rejects(query: str) -> None:
    with pytest.raises(ClientMessageError) as caught:
        parse_connect_query(query)
    assert caught.value.code == BAD_FIELD


# ------------------------------------------------------------------ feed


@dataclass(frozen=True)
class SinceCase:
    name: str
    events: tuple[SegmentUpdate | StatusUpdate, ...]
    since: int
    expected_seqs: tuple[int, ...]
    complete: bool = True
    history_size: int = 10_000


def retranslation(segment_id: int, revision: int) -> SegmentUpdate:
    """New translations of revision `revision` of a partial segment."""
    return dataclasses.replace(partial(segment_id, revision), retranslated=True,
                               translations={"de": Translation("hallo")})


def publish(feed: Feed, event: SegmentUpdate | StatusUpdate) -> FeedMessage:
    if isinstance(event, StatusUpdate):
        return feed.publish_status(event)
    if event.retranslated:
        return feed.publish_translation(event)
    return feed.publish_segment(event)


P, F, S, T = partial, final, StatusUpdate, retranslation
SINCE_CASES = [
    SinceCase("empty feed", (), 0, ()),
    SinceCase("all finals", (F(1), F(2), F(3)), 0, (1, 2, 3)),
    SinceCase("finals after since", (F(1), F(2), F(3)), 1, (2, 3)),
    SinceCase("caught up", (F(1), F(2)), 2, ()),
    SinceCase("partials superseded by final", (P(1, 0), P(1, 1), F(1)), 0, (3,)),
    SinceCase("latest partial of open segment", (F(1), P(2, 0), P(2, 1)), 0, (1, 3)),
    SinceCase("missed only the latest partial", (P(1, 0), P(1, 1)), 1, (2,)),
    SinceCase("saw the superseded partial", (P(1, 0), P(1, 1), F(1), P(2, 0)), 2, (3, 4)),
    SinceCase("partial older than since", (P(1, 0), F(2)), 1, (2,)),
    SinceCase("status superseded", (S("starting"), F(1), S("running")), 0, (2, 3)),
    SinceCase("status kept", (S("running"), F(1)), 0, (1, 2)),
    SinceCase("status already seen", (S("running"), F(1)), 1, (2,)),
    SinceCase("bounded: gap", (F(1), F(2), F(3), F(4), F(5)), 0, (3, 4, 5), False, 3),
    SinceCase("bounded: just enough", (F(1), F(2), F(3), F(4), F(5)), 2, (3, 4, 5), True, 3),
    SinceCase(
        "bounded with partials",
        (F(1), P(2, 0), F(2), P(3, 0), F(3), P(4, 0)),
        0,
        (3, 5, 6),
        False,
        2,
    ),
    SinceCase("ahead of the feed: a restart", (F(1), F(2)), 50, (1, 2), False),
    SinceCase("translation of the open partial", (P(1, 0), T(1, 0)), 0, (1, 2)),
    SinceCase("saw the partial, not its translation", (P(1, 0), T(1, 0)), 1, (2,)),
    SinceCase("translation superseded by the next", (P(1, 0), T(1, 0), T(1, 0)), 0, (1, 3)),
    SinceCase("translation superseded by a revision", (P(1, 0), T(1, 0), P(1, 1)), 0, (3,)),
    SinceCase("translation superseded by the final", (P(1, 0), T(1, 0), F(1)), 0, (3,)),
    SinceCase("translations of two segments", (P(1, 0), P(2, 0), T(1, 0), T(2, 0)), 0,
              (1, 2, 3, 4)),
]


@pytest.mark.parametrize("case", SINCE_CASES, ids=lambda c: c.name)
def test_feed_since(case: SinceCase) -> None:
    feed = Feed(history_size=case.history_size)
    for event in case.events:
        publish(feed, event)
    replay = feed.since(case.since)
    assert tuple(m.seq for m in replay.messages) == case.expected_seqs
    assert replay.complete is case.complete
    assert replay.since == case.since


def test_feed_numbers_messages_from_one() -> None:
    feed = Feed()
    assert feed.last_seq == 0
    seqs = [feed.publish_segment(P(1, 0)).seq, feed.publish_status(S("running")).seq]
    seqs.append(feed.publish_segment(F(1)).seq)
    assert seqs == [1, 2, 3]
    assert feed.last_seq == 3
    assert feed.capture == "running"


def test_feed_history_is_bounded() -> None:
    feed = Feed(history_size=100, max_open_segments=4)
    for i in range(1_000):
        feed.publish_segment(F(i))
        feed.publish_segment(P(10_000 + i, 0))  # segments that never finalise
        feed.publish_status(S("running", detail=str(i)))
    assert len(feed) == 100 + 4 + 1
    assert feed.oldest_final_seq == feed.since(0).messages[0].seq


def test_feed_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="history_size"):
        Feed(history_size=0)
    with pytest.raises(ValueError, match="since"):
        Feed().since(-1)


EVENT = st.one_of(
    st.tuples(st.just("partial"), st.integers(0, 4)),
    st.tuples(st.just("final"), st.integers(0, 4)),
    st.tuples(st.just("status"), st.sampled_from(["starting", "running", "lost"])),
    st.tuples(st.just("translation"), st.integers(0, 4)),
)


@given(events=st.lists(EVENT, max_size=60), cut=st.integers(0, 70), history=st.integers(1, 20))
def test_resume_has_no_gaps_and_no_duplicates(
    events: list[tuple[str, object]], cut: int, history: int
) -> None:
    """A client that saw everything up to `cut` and resumes ends up with every final once."""
    feed = Feed(history_size=history)
    published = []
    revisions: dict[int, int] = {}
    for kind, arg in events:
        if kind == "status":
            published.append(feed.publish_status(StatusUpdate(arg)))  # type: ignore[arg-type]
            continue
        assert isinstance(arg, int)
        if kind == "translation":
            if arg in revisions:  # translations come only for a published partial
                published.append(feed.publish_translation(T(arg, revisions[arg])))
            continue
        revisions[arg] = revisions.get(arg, -1) + 1
        update = (P if kind == "partial" else F)(arg, revisions[arg])
        if kind == "final":
            del revisions[arg]  # the segment is closed; the id may open again
        published.append(feed.publish_segment(update))
    cut = min(cut, feed.last_seq)
    replay = feed.since(cut)
    seqs = [m.seq for m in replay.messages]
    assert seqs == sorted(set(seqs))
    assert all(s > cut for s in seqs)
    missed_finals = [m.seq for m in published if m.final and m.seq > cut]
    replayed_finals = [m.seq for m in replay.messages if m.final]
    if replay.complete:
        assert replayed_finals == missed_finals
    else:
        assert replayed_finals == missed_finals[-history:]
    # A replayed partial is the newest revision of its segment, and a replayed
    # translation the newest message of its segment, following its revision.
    for message in replay.messages:
        if not message.is_partial:
            continue
        same = [m for m in published if m.segment_id == message.segment_id]
        revisions_of = [m for m in same if m.payload["type"] == "segment"]
        if message.payload["type"] == "segment":
            assert revisions_of[-1] is message
        else:
            assert same[-1] is message
            assert revisions_of[-1].seq < message.seq
            assert revisions_of[-1] in replay.messages or revisions_of[-1].seq <= cut


def test_segments_name_their_languages_only_when_known() -> None:
    """`language` (of the text) and `spoken` (when Whisper translated) are optional
    additions: a segment without them encodes as before."""
    plain = segment_payload(segment(1), seq=1)
    assert "language" not in plain and "spoken" not in plain
    german = segment_payload(dataclasses.replace(segment(1), language="de"), seq=2)
    assert german["language"] == "de" and "spoken" not in german
    translated = dataclasses.replace(segment(1), language="en", spoken_language="de")
    assert segment_payload(translated, seq=3) | {"seq": 1} == plain | {
        "language": "en",
        "spoken": "de",
    }


def test_hello_names_the_identified_language() -> None:
    info = ServiceInfo("whisper-base", None, "auto", ("en",), detected_language="fr")
    hello = hello_payload(info, seq=0, capture="running", subscribed=None)
    assert hello["languages"] == {"source": "auto", "targets": ["en"], "detected": "fr"}
