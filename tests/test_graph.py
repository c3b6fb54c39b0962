"""The declared pipeline: map stages run in order around translation, a failing one is
skipped, and a new stage is one core plus one line of wiring."""

from __future__ import annotations

import dataclasses

import pytest

from subtitled.events import SegmentUpdate, Word
from subtitled.graph import Graph, MapStage, chain


def revision(text: str) -> SegmentUpdate:
    words = tuple(Word(" " + w, i * 0.5, i * 0.5 + 0.4) for i, w in enumerate(text.split()))
    return SegmentUpdate(1, 0, "final", words, (), 1.0)


def mask(banned: set[str]) -> MapStage:
    """A throw-away profanity filter: a pure core, the words it bans as asterisks."""

    def core(update: SegmentUpdate) -> SegmentUpdate:
        def clean(w: Word) -> Word:
            bare = w.text.strip().strip(".,!?").lower()
            return dataclasses.replace(w, text=" ***") if bare in banned else w

        return dataclasses.replace(update, committed=tuple(clean(w) for w in update.committed))

    return MapStage("profanity", core)


def test_stages_run_in_order_then_every_sink_gets_the_result() -> None:
    seen: list[list[str]] = [[], []]
    upper = MapStage("upper", lambda u: dataclasses.replace(
        u, committed=tuple(dataclasses.replace(w, text=w.text.upper()) for w in u.committed)))
    sink = chain([mask({"darn"}), upper], [lambda u: seen[0].append(u.text),
                                           lambda u: seen[1].append(u.text)])
    sink(revision("well darn it"))
    assert seen == [["WELL *** IT"], ["WELL *** IT"]]  # masked before upper-cased


def test_a_failing_stage_is_logged_once_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    def broken(update: SegmentUpdate) -> SegmentUpdate:
        raise RuntimeError("bug in a filter")

    stage = MapStage("broken", broken)
    out: list[str] = []
    sink = chain([stage, mask({"darn"})], [lambda u: out.append(u.text)])
    for _ in range(3):
        sink(revision("darn"))
    assert out == ["***"] * 3  # the captions went on, the next stage ran
    assert stage.failures == 3
    assert caplog.text.count("stage broken failed") == 1


def test_the_graph_describes_the_pipeline() -> None:
    graph = Graph(before=(mask({"x"}),), after=(MapStage("whisper-tracks", lambda u: u),),
                  sinks=("publish", "srt"))
    assert graph.describe() == (
        "capture -> asr -> profanity -> translate -> whisper-tracks -> publish + srt"
    )


def test_the_daemon_declares_its_stages() -> None:
    from subtitled.capture import parse_source
    from subtitled.config import Config
    from subtitled.daemon import Daemon, RunOptions

    daemon = Daemon(Config(), RunOptions(parse_source("file:/dev/null")))
    assert daemon.graph.describe() == "capture -> asr -> translate -> whisper-tracks -> publish"


def test_a_stage_added_to_the_daemon_sees_every_published_revision() -> None:
    """The throw-away example, end to end: the profanity filter is one line of wiring, and
    the real daemon's finals of a real clip come out filtered."""
    import asyncio

    from speech import clips

    from subtitled.capture import parse_source
    from subtitled.config import Config, replace_path
    from subtitled.daemon import Daemon, RunOptions

    clip = next(c for c in clips() if c.path.name == "LJ001-0001.flac")
    finals: list[str] = []
    config = replace_path(Config(), "translation.targets", "none")
    daemon = Daemon(config, RunOptions(parse_source(f"file:{clip.path}"), realtime=False,
                                       serve=False),
                    sinks=[lambda u: finals.append(u.text) if u.status == "final" else None])
    daemon.graph = dataclasses.replace(daemon.graph, after=(*daemon.graph.after,
                                                             mask({"printing", "arts"})))

    async def main() -> None:
        await daemon.start()
        await asyncio.wait_for(daemon.serve(), timeout=120)
        await daemon.close()

    asyncio.run(main())
    text = " ".join(finals).lower()
    assert "printing" in clip.transcript.lower() and "arts" in clip.transcript.lower()
    assert "differs from most" in text  # the captions themselves went through
    assert "printing" not in text and " arts" not in text and text.count("***") >= 2
