"""The translate stage's async shell with a deterministic translator: captions first,
translations after, finals carry the final translation, failures are survived."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from subtitled.events import SegmentUpdate, Word
from subtitled.translate.stage import TranslationStage
from subtitled.translate.stream import LanguageResult, SourceUpdate


class UpperTranslator:
    """'Translates' by upper-casing; can be told to fail, or to wait on a gate."""

    name = "upper"
    languages = ("de", "es")

    def __init__(self) -> None:
        self.calls: list[SourceUpdate] = []
        self.fail_on: set[int] = set()
        self.resets = 0
        self.gate = threading.Event()
        self.gate.set()

    def translate(self, update: SourceUpdate) -> dict[str, LanguageResult]:
        self.gate.wait(5)
        self.calls.append(update)
        if len(self.calls) in self.fail_on:
            raise RuntimeError("model exploded")
        text = update.text.upper()
        return {lang: LanguageResult(text, "", 1, 1, 1, 0.001, update.final)
                for lang in self.languages}

    def reset(self) -> None:
        self.resets += 1


def seg(sid: int, words: str, final: bool = False, rev: int = 0) -> SegmentUpdate:
    committed = tuple(Word(" " + w, i, i + 1.0) for i, w in enumerate(words.split()))
    return SegmentUpdate(sid, rev, "final" if final else "partial", committed, (), 100.0)


async def settle(stage: TranslationStage) -> None:
    await stage.flush(5)


def test_captions_pass_at_once_and_translations_follow() -> None:
    out: list[SegmentUpdate] = []
    translator = UpperTranslator()

    async def scenario() -> None:
        stage = TranslationStage([out.append], translator)
        stage.start()
        stage.submit(seg(0, "hello"))
        assert [u.text for u in out] == ["hello"] and out[0].translations == {}
        await settle(stage)
        stage.submit(seg(0, "hello there", final=True))
        await settle(stage)
        await stage.close()

    asyncio.run(scenario())
    statuses = [(u.revision, u.status, u.text, u.retranslated) for u in out]
    # The translation of revision 0 comes as revision 0 again, marked `retranslated`
    # (a `translation` message on the feed), not as a new revision repeating its words.
    assert statuses == [
        (0, "partial", "hello", False), (0, "partial", "hello", True),
        (1, "partial", "hello there", False), (2, "final", "hello there", False),
    ]
    assert out[1].translations["de"].stable == "HELLO"
    # The next revision carries the translation as it stands until its own is ready.
    assert out[2].translations["de"].stable == "HELLO"
    final = out[-1].translations
    assert final["de"].stable == "HELLO THERE" and final["es"].stable == "HELLO THERE"
    assert final["de"].latency_ms is not None and final["de"].compute_ms is not None
    # Exactly one final per segment, and it is the last revision.
    assert [u.status for u in out].count("final") == 1


def test_queued_revisions_are_superseded_but_finals_are_not() -> None:
    out: list[SegmentUpdate] = []
    translator = UpperTranslator()

    async def scenario() -> None:
        stage = TranslationStage([out.append], translator)
        stage.start()
        translator.gate.clear()  # the model is busy with the first update
        stage.submit(seg(0, "a"))
        await asyncio.sleep(0.05)
        for text in ("a b", "a b c", "a b c d"):
            stage.submit(seg(0, text))
        stage.submit(seg(0, "a b c d e", final=True))
        stage.submit(seg(1, "next"))
        translator.gate.set()
        await stage.close()

    asyncio.run(scenario())
    assert [c.text for c in translator.calls] == ["a", "a b c d e", "next"]
    finals = [u for u in out if u.status == "final"]
    assert len(finals) == 1 and finals[0].translations["de"].stable == "A B C D E"


def test_a_crashing_translator_is_logged_restarted_and_captions_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out: list[SegmentUpdate] = []
    translator = UpperTranslator()
    translator.fail_on = {2}

    async def scenario() -> None:
        stage = TranslationStage([out.append], translator)
        stage.start()
        stage.submit(seg(0, "one"))
        await settle(stage)
        stage.submit(seg(0, "one two", final=True))  # this call fails
        await settle(stage)
        stage.submit(seg(1, "three", final=True))
        await stage.close()
        assert stage.stats.failures == 1

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert "translation worker failed" in caplog.text
    assert translator.resets == 1
    finals = [u for u in out if u.status == "final"]
    assert [f.text for f in finals] == ["one two", "three"]
    assert finals[0].translations["de"].stable == "ONE"  # what was shown stays
    assert finals[1].translations["de"].stable == "THREE"  # the restarted worker works


def test_without_a_translator_captions_pass_through() -> None:
    out: list[SegmentUpdate] = []

    async def scenario() -> None:
        stage = TranslationStage([out.append])
        stage.start()
        stage.submit(seg(0, "a"))
        stage.submit(seg(0, "a b", final=True))
        await stage.close()

    asyncio.run(scenario())
    assert [(u.revision, u.status, u.translations) for u in out] == [
        (0, "partial", {}), (1, "final", {})
    ]


def test_include_partial_translates_the_unstable_tail_too() -> None:
    translator = UpperTranslator()
    update = SegmentUpdate(0, 0, "partial", (Word(" one", 0, 1),), (Word(" tw", 1, 2),), 1.0)

    async def scenario(include: bool) -> None:
        stage = TranslationStage([lambda u: None], translator, include_partial=include)
        stage.start()
        stage.submit(update)
        await stage.close()

    asyncio.run(scenario(False))
    asyncio.run(scenario(True))
    assert [c.text for c in translator.calls] == ["one", "one tw"]


def test_finals_only_translates_each_segment_once() -> None:
    """The battery profile: partials pass through untranslated, the final is translated
    once and carries it; switching back translates revisions again."""
    out: list[SegmentUpdate] = []
    translator = UpperTranslator()

    async def scenario() -> None:
        stage = TranslationStage([out.append], translator)
        stage.finals_only = True
        stage.start()
        for text in ("one", "one two", "one two three"):
            stage.submit(seg(0, text))
            await settle(stage)
        stage.submit(seg(0, "one two three", final=True))
        await settle(stage)
        stage.finals_only = False
        stage.submit(seg(1, "four"))
        await settle(stage)
        await stage.close()

    asyncio.run(scenario())
    assert [c.text for c in translator.calls] == ["one two three", "four"]
    zero = [u for u in out if u.segment_id == 0]
    assert [(u.status, u.translations == {}) for u in zero] == [
        ("partial", True), ("partial", True), ("partial", True), ("partial", True),
        ("final", False),
    ]
    assert zero[-1].translations["de"].stable == "ONE TWO THREE"
    assert out[-1].segment_id == 1 and out[-1].retranslated
