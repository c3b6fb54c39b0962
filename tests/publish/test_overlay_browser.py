"""The overlay page (`/overlay`) in a real browser: Debian's chromium, headless, driven
by Playwright (never a downloaded browser), against scripted feeds and the real daemon.

Each test fails on a console error or an uncaught exception in the page. Screenshots
go to artifacts/overlay/.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from subtitled.events import StatusUpdate, Translation
from subtitled.publish import ServiceInfo

from .factories import segment
from .overlay_feed import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PageProblems,
    ScriptedFeed,
    browser_missing,
    free_port,
    screenshot,
    scripted_feed,
)

MISSING = browser_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

TRANSLATING = ServiceInfo("tiny.en", "gemma-moe-small", "en", ("de",))
CAPTIONS_ONLY = ServiceInfo("tiny.en", None, "en")
SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech"
VIEWPORT = {"width": 1280, "height": 720}

LINES_JS = """(track) => [...document.querySelectorAll(`.track[data-track="${track}"] .line`)]
    .filter((l) => !l.classList.contains("fading")).map((l) => l.textContent)"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Overlay:
    """A browser page and what it reported; `open` loads the overlay with parameters."""

    page: Any
    problems: PageProblems
    sockets: list[str]

    def open(self, url: str, query: str = "") -> None:
        self.page.goto(f"{url}?{query}" if query else url)
        self.page.wait_for_function("document.documentElement.dataset.feed === 'open'")

    def lines(self, track: str = "source") -> list[str]:
        lines: list[str] = self.page.evaluate(LINES_JS, track)
        return lines

    def wait_lines(self, expected: list[str], track: str = "source", timeout_s: float = 5) -> None:
        """Wait until the track shows exactly `expected` (not fading), oldest first."""
        deadline = time.monotonic() + timeout_s
        while (got := self.lines(track)) != expected:
            assert time.monotonic() < deadline, f"{track} shows {got}, expected {expected}"
            self.page.wait_for_timeout(50)

    def badge(self) -> tuple[bool, str, str]:
        visible, text, level = self.page.evaluate(
            "() => { const b = document.querySelector('#badge');"
            " return [!b.hidden, b.textContent, b.className]; }"
        )
        return visible, text, level

    def wait_badge(self, pattern: str, timeout_s: float = 5) -> None:
        deadline = time.monotonic() + timeout_s
        while not ((badge := self.badge())[0] and re.search(pattern, badge[1])):
            assert time.monotonic() < deadline, f"badge is {badge}, expected /{pattern}/"
            self.page.wait_for_timeout(50)


@pytest.fixture
def feed() -> Iterator[ScriptedFeed]:
    """A scripted feed, not started; it outlives the page (see `overlay`)."""
    with scripted_feed() as scripted:
        yield scripted


@pytest.fixture
def overlay(browser: Any, feed: ScriptedFeed) -> Iterator[Overlay]:
    """A fresh browser page; closed before `feed` stops, so it never sees the feed go."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    problems = PageProblems()
    page.on("console", problems.on_console)
    page.on("pageerror", problems.on_page_error)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    yield Overlay(page, problems, sockets)
    context.close()
    problems.check()


def style(page: Any, selector: str, prop: str) -> str:
    value: str = page.eval_on_selector(
        selector, "(el, prop) => getComputedStyle(el).getPropertyValue(prop)", prop
    )
    return value


# --------------------------------------------------------------------------- scripted feeds


def test_stable_and_unstable_text_look_different(overlay: Overlay, feed: ScriptedFeed) -> None:
    feed.start(TRANSLATING)
    overlay.open(feed.url, "cps=1000&min=0")
    feed.publish(
        StatusUpdate("running"),
        segment(1, committed="And so my fellow Americans,",
                translations={"de": Translation("Und so, meine amerikanischen Mitbürger,")}),
        segment(2, 0, "partial", committed="ask not what your country", partial="can do for",
                translations={"de": Translation("fragt nicht, was euer Land", "für euch tun")}),
    )
    overlay.wait_lines(["And so my fellow Americans,", "ask not what your country can do for"])
    overlay.wait_lines(
        ["Und so, meine amerikanischen Mitbürger,", "fragt nicht, was euer Land für euch tun"],
        track="de",
    )
    page = overlay.page
    live = '.track[data-track="source"] .line[data-key="0:2"]'
    assert page.inner_text(f"{live} .stable") == "ask not what your country"
    assert page.inner_text(f"{live} .unstable").strip() == "can do for"
    stable_colour = style(page, f"{live} .stable", "color")
    unstable_colour = style(page, f"{live} .unstable", "color")
    assert stable_colour == "rgb(255, 255, 255)"
    assert unstable_colour != stable_colour
    # Same font, size and weight: committing a word moves nothing.
    for prop in ("font-family", "font-size", "font-weight", "font-style"):
        assert style(page, f"{live} .stable", prop) == style(page, f"{live} .unstable", prop)
    de = '.track[data-track="de"] .line[data-key="0:2"]'
    assert page.inner_text(f"{de} .unstable").strip() == "für euch tun"
    assert style(page, f"{de} .unstable", "color") != style(page, f"{de} .stable", "color")
    screenshot(page, "stable-unstable")

    # A new translation of the same revision comes as a `translation` message.
    german = Translation("fragt nicht, was euer Land", "für euch tun kann")
    retranslated = segment(2, 0, "partial", committed="ask not what your country",
                           partial="can do for", translations={"de": german})
    feed.publish(dataclasses.replace(retranslated, retranslated=True))
    overlay.wait_lines(
        ["Und so, meine amerikanischen Mitbürger,", "fragt nicht, was euer Land für euch tun kann"],
        track="de",
    )
    assert page.inner_text(f"{live} .unstable").strip() == "can do for"

    x_before = page.eval_on_selector(f"{live} .unstable", "el => el.getBoundingClientRect().x")
    german = Translation("fragt nicht, was euer Land für euch tun kann,")
    feed.publish(segment(2, 1, "final", committed="ask not what your country can do for you,",
                         translations={"de": german}))
    overlay.wait_lines(["And so my fellow Americans,", "ask not what your country can do for you,"])
    assert page.inner_text(f"{live} .unstable") == ""
    # The committed words sit where the unstable ones were.
    x_after = page.evaluate(
        """(sel) => {
            const text = document.querySelector(sel).firstChild, at = text.data.indexOf(" can");
            const range = document.createRange();
            range.setStart(text, at);
            range.setEnd(text, at + 1);
            return range.getBoundingClientRect().x;
        }""",
        f"{live} .stable",
    )
    assert abs(x_after - x_before) < 1.0


def test_lines_are_paced_for_reading_and_fade(overlay: Overlay, feed: ScriptedFeed) -> None:
    feed.start(CAPTIONS_ONLY)
    # One row: every new line pushes the last one out, so pacing decides.
    overlay.open(feed.url, "lines=1&cps=10&min=0.5&fade=2.5")
    feed.publish(segment(1, committed="one two three four"))  # 18 chars: 1.8 s to read
    overlay.wait_lines(["one two three four"])
    shown = time.monotonic()
    feed.publish(segment(2, committed="five six"))
    overlay.page.wait_for_timeout(600)
    assert overlay.lines() == ["one two three four"], "a line was pushed out unread"
    overlay.wait_lines(["five six"], timeout_s=5)
    waited = time.monotonic() - shown
    assert 1.5 < waited < 4.0, waited
    screenshot(overlay.page, "paced")
    # No more speech: the line fades `fade` seconds after its last change.
    overlay.wait_lines([], timeout_s=6)
    assert time.monotonic() - shown > 2.5


def test_a_burst_rolls_up_without_falling_behind(overlay: Overlay, feed: ScriptedFeed) -> None:
    feed.start(CAPTIONS_ONLY)
    overlay.open(feed.url, "lines=2&min=1.5&fade=0")  # 2 rows; default 17 cps
    start = time.monotonic()
    feed.publish(*(segment(i, committed=f"line {i}") for i in range(1, 11)))
    # Ten lines at once: at most three wait for reading time, the older ones
    # roll through at once (live captions must not fall behind)...
    overlay.wait_lines(["line 6", "line 7"], timeout_s=1)
    assert overlay.page.evaluate("document.querySelectorAll('.line').length") == 2
    # ... and the last ones follow, each shown for at least `min` seconds.
    overlay.wait_lines(["line 8", "line 9"], timeout_s=3)
    overlay.wait_lines(["line 9", "line 10"], timeout_s=3)
    assert time.monotonic() - start > 2.5


def test_restart_resumes_without_duplicates_or_gaps(
    overlay: Overlay, feed: ScriptedFeed, tmp_path: Path
) -> None:
    overlay.problems.allow_offline = True  # the daemon is down for a while, on purpose
    port = free_port()
    journal = tmp_path / "journal.jsonl"
    expected = ["alpha", "bravo"]
    feed.start(CAPTIONS_ONLY, port, journal=journal)
    overlay.open(feed.url, "lines=12&fade=0&cps=1000&min=0")
    feed.publish(StatusUpdate("running"), segment(1, committed="alpha"),
                 segment(2, committed="bravo"), segment(3, 0, "partial", committed="",
                                                        partial="cha"))
    overlay.wait_lines([*expected, "cha"])

    # 1. A restart with the journal (`subtitled run`): numbering goes on from the
    # last journaled message, without a gap. The new daemon speaks before the page
    # is back; `since=4`.
    feed.stop()
    overlay.wait_badge("reconnecting")
    feed.start(CAPTIONS_ONLY, port, journal=journal, then=[
        StatusUpdate("running"), segment(4, committed="charlie"), segment(5, committed="delta"),
    ])
    expected += ["cha", "charlie", "delta"]  # segment 3 never got its final: it stays as it was
    overlay.wait_lines(expected)
    feed.publish(segment(6, 0, "partial", committed="echo", partial="ech"))
    overlay.wait_lines([*expected, "echo ech"])
    feed.publish(segment(6, 1, "final", committed="echo"))
    expected += ["echo"]
    overlay.wait_lines(expected)

    # 2. A restart without a journal: numbering starts again at 1, below the page's
    # `since`. The page is back first; segment ids 1, 2 come again, as new lines.
    feed.stop()
    overlay.wait_badge("reconnecting")
    feed.start(CAPTIONS_ONLY, port)
    wait_for_client(feed)
    feed.publish(segment(1, committed="foxtrot"), segment(2, committed="golf"))
    expected += ["foxtrot", "golf"]
    overlay.wait_lines(expected)

    # 3. Again without a journal, and the new daemon speaks before the page is back,
    # beyond its `since`: ids that come again with other words are new lines.
    feed.stop()
    overlay.wait_badge("reconnecting")
    feed.start(CAPTIONS_ONLY, port, then=[
        StatusUpdate("running"), segment(1, committed="hotel"), segment(2, committed="india"),
        segment(3, committed="juliett"),
    ])
    # Its hello names a new `stream`, so the page knows its `since` is meaningless
    # here and catches up from the start: nothing is missed.
    expected += ["hotel", "india", "juliett"]
    overlay.wait_lines(expected)
    screenshot(overlay.page, "after-restarts")
    overlay.page.wait_for_timeout(300)
    assert overlay.lines() == expected
    assert not overlay.badge()[0] or "reconnecting" not in overlay.badge()[1]
    assert "since=" not in overlay.sockets[0]
    # The last restart: `since=2` gets a hello naming a new stream; the page resyncs.
    resumes = [re.search(r"since=(\d+)", url)[1] for url in overlay.sockets[1:]]
    assert resumes == ["4", "9", "2", "0"], overlay.sockets


def wait_for_client(feed: ScriptedFeed, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while feed.clients == 0:
        assert time.monotonic() < deadline, "the page did not reconnect"
        time.sleep(0.05)


def test_url_parameters_take_effect(overlay: Overlay, feed: ScriptedFeed) -> None:
    page = overlay.page
    feed.start(TRANSLATING)
    query = (
        "source=0&lang=de&font=" + quote("DejaVu Serif") + "&size=40&weight=400"
        "&tcolor=00ff00&tunstable=ff8800&outline=0&position=top&lines=3&bg=000080"
        "&align=center&width=50&badge=0&unknown=ignored"
    )
    overlay.open(feed.url, query)
    feed.publish(segment(1, 0, "partial", committed="Hello there", partial="frie",
                         translations={"de": Translation("Hallo", "du da")}))
    overlay.wait_lines(["Hallo du da"], track="de")
    assert page.query_selector('.track[data-track="source"]') is None
    track = '.track[data-track="de"]'
    assert "DejaVu Serif" in style(page, track, "font-family")
    assert style(page, track, "font-size") == "40px"
    assert style(page, track, "font-weight") == "400"
    assert style(page, f"{track} .stable", "color") == "rgb(0, 255, 0)"
    assert style(page, f"{track} .unstable", "color") == "rgb(255, 136, 0)"
    assert style(page, f"{track} .stable", "text-shadow") == "none"
    assert style(page, track, "text-align") == "center"
    assert style(page, "body", "background-color") == "rgb(0, 0, 128)"
    box = page.eval_on_selector(track, "el => el.getBoundingClientRect().toJSON()")
    assert box["y"] < VIEWPORT["height"] / 4  # position=top
    assert abs(box["height"] - 3 * 1.25 * 40) < 1  # lines=3
    assert abs(box["width"] - VIEWPORT["width"] / 2) < 1  # width=50 (vw)
    screenshot(page, "parameters")
    assert not overlay.badge()[0]  # badge=0
    # The page asked the feed for German only.
    assert overlay.sockets and "languages=de" in overlay.sockets[-1]


def test_transparent_background_and_outline(overlay: Overlay, feed: ScriptedFeed) -> None:
    page = overlay.page
    feed.start(TRANSLATING)
    overlay.open(feed.url, "outline=4&box=00000000&size=bad-size")
    german = Translation("Umrandeter Text auf einer", "durchsichtigen Seite")
    feed.publish(segment(1, 0, "partial", committed="Outlined text on a",
                         partial="transparent page", translations={"de": german}))
    overlay.wait_lines(["Outlined text on a transparent page"])
    assert style(page, "body", "background-color") == "rgba(0, 0, 0, 0)"
    assert style(page, "html", "background-color") == "rgba(0, 0, 0, 0)"
    assert "rgb(0, 0, 0)" in style(page, '.track[data-track="source"]', "text-shadow")
    # An unusable value is ignored with a warning, and the default applies.
    assert style(page, '.track[data-track="source"]', "font-size") == f"{0.045 * 720:g}px"
    path = screenshot(page, "transparent", transparent=True)
    from PIL import Image

    with Image.open(path) as image:
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        assert alpha.getpixel((5, 5)) == 0  # OBS sees through the page
        lows, highs = alpha.getextrema()
        assert (lows, highs) == (0, 255)  # ... but not through the text


def test_a_daemon_with_a_token(overlay: Overlay, feed: ScriptedFeed) -> None:
    """Every request but /healthz needs the token: the page passes its own on to its
    style sheet, its modules and the feed (a 401 would show as a console error)."""
    feed.start(CAPTIONS_ONLY, token="s3cret t0ken")
    overlay.open(feed.url, "token=" + quote("s3cret t0ken") + "&badge=0")
    feed.publish(segment(1, committed="Only for those who know the token."))
    overlay.wait_lines(["Only for those who know the token."])
    assert style(overlay.page, '.track[data-track="source"]', "overflow") == "hidden"  # the CSS
    assert overlay.sockets and "token=s3cret+t0ken" in overlay.sockets[-1]


def test_status_badge(overlay: Overlay, feed: ScriptedFeed) -> None:
    feed.start(CAPTIONS_ONLY)
    overlay.open(feed.url)
    overlay.wait_badge("^captions only$")
    assert overlay.badge()[2] == "info"
    feed.publish(StatusUpdate("lost", "device unplugged"))
    overlay.wait_badge("audio lost: device unplugged")
    assert overlay.badge()[2] == "error"
    feed.publish(segment(1, committed="Still here, on the last words heard."))
    overlay.wait_lines(["Still here, on the last words heard."])
    screenshot(overlay.page, "badge-lost")
    feed.publish(StatusUpdate("running"))
    overlay.wait_badge("^captions only$")

    overlay.page.goto("about:blank")
    feed.stop()
    feed.start(TRANSLATING)
    overlay.open(feed.url)
    feed.publish(StatusUpdate("running"))
    overlay.page.wait_for_timeout(300)
    assert not overlay.badge()[0], overlay.badge()  # translating, capturing: nothing to say


# --------------------------------------------------------------------------- the feed core

def hello(seq: int, **fields: Any) -> dict[str, Any]:
    return {"type": "hello", "seq": seq, **fields}


def resume(seq: int, since: int, complete: bool, **fields: Any) -> dict[str, Any]:
    return hello(seq, resume={"since": since, "replayed": 0, "complete": complete}, **fields)


def seg(seq: int, id_: int, rev: int, committed: str, partial: str = "") -> dict[str, Any]:
    status = "partial" if partial else "final"
    text = f"{committed} {partial}".strip()
    return {"type": "segment", "seq": seq, "id": id_, "rev": rev, "status": status,
            "committed": committed, "partial": partial, "text": text}


# Messages in; then the record keys ("epoch:id"), the resume point and the texts held.
FEED_CASES: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {
    "fresh hello, revisions, a duplicate": (
        [hello(7), seg(8, 3, 0, "", "a"), seg(9, 3, 1, "a b"), seg(9, 3, 1, "a b")],
        {"keys": ["0:3"], "since": 9, "texts": ["a b"]},
    ),
    "a restarted daemon: since ahead of its seq": (
        [hello(2), seg(3, 1, 0, "old"), resume(1, since=3, complete=False), seg(1, 1, 0, "new")],
        {"keys": ["0:1", "1:1"], "since": 1, "texts": ["old", "new"]},
    ),
    "a gap in the same daemon keeps ids": (
        [hello(5), seg(6, 2, 0, "x", "y"), resume(20, since=6, complete=False),
         seg(9, 2, 3, "x y z")],
        {"keys": ["0:2"], "since": 9, "texts": ["x y z"]},
    ),
    "same id, not a continuation: another daemon": (
        [hello(0), seg(1, 1, 2, "first"), resume(9, since=1, complete=True),
         seg(2, 1, 0, "", "other")],
        {"keys": ["0:1", "1:1"], "since": 2, "texts": ["first", "other"]},
    ),
    "a replayed revision already applied": (
        [hello(0), seg(1, 1, 0, "a", "b"), resume(3, since=0, complete=True),
         seg(1, 1, 0, "a", "b"), seg(3, 1, 1, "a b c")],
        {"keys": ["0:1"], "since": 3, "texts": ["a b c"]},
    ),
    "another numbering (stream): resync from 0": (
        [hello(0, stream="a"), seg(1, 1, 0, "one"),
         resume(5, since=1, complete=True, stream="b"), seg(2, 1, 0, "two")],
        {"keys": ["0:1", "1:1"], "since": 2, "texts": ["one", "two"], "resync": True},
    ),
    "unknown types and fields are ignored": (
        [hello(4, future=1), {"type": "pong"}, {"type": "nonsense", "seq": 99},
         {"type": "status", "seq": 5, "capture": "lost", "detail": "gone"}],
        {"keys": [], "since": 5, "texts": []},
    ),
}

FEED_JS = """async (messages) => {
  const {CaptionFeed} = await import("/static/captions.js");
  const feed = new CaptionFeed();
  let resync = false;
  for (const m of messages) {
    if (m.type === "hello" && (m.resume || !feed.helloSeen)) feed.connecting();
    resync = feed.apply(m).some((c) => c.type === "resync") || resync;
  }
  const records = [...feed.records.values()];
  const result = {keys: records.map((r) => r.key), since: feed.since,
                  texts: records.map((r) => r.text)};
  return resync ? {...result, resync} : result;
}"""


TRANSLATION_JS = """async (messages) => {
  const {CaptionFeed} = await import("/static/captions.js");
  const feed = new CaptionFeed();
  feed.connecting();
  for (const m of messages) feed.apply(m);
  return [...feed.records.values()].map((r) => [r.rev, r.text, r.textFor("de").stable]);
}"""


def test_feed_core_applies_a_translation_to_its_revision_only(
    overlay: Overlay, feed: ScriptedFeed
) -> None:
    feed.start(CAPTIONS_ONLY)
    overlay.open(feed.url)

    def revision(seq: int, rev: int, text: str, de: str) -> dict[str, object]:
        return {"type": "segment", "seq": seq, "id": 1, "rev": rev, "status": "partial",
                "text": text, "committed": "", "partial": text,
                "translations": {"de": {"stable": de, "unstable": ""}}}

    def translation(seq: int, rev: int, de: str) -> dict[str, object]:
        return {"type": "translation", "seq": seq, "id": 1, "rev": rev,
                "translations": {"de": {"stable": de, "unstable": ""}}}

    start = [hello(0), revision(1, 0, "hi", "")]
    cases = {
        "applied to the revision shown": (
            [*start, translation(2, 0, "Hallo")], [[0, "hi", "Hallo"]]),
        "stale: a later revision is shown": (
            [*start, revision(2, 1, "hi there", "Hallo"), translation(3, 0, "Hi")],
            [[1, "hi there", "Hallo"]]),
        "already applied (seq not newer)": (
            [*start, translation(2, 0, "Hallo"), translation(2, 0, "Hi")],
            [[0, "hi", "Hallo"]]),
        "unknown segment": ([*start, {**translation(2, 0, "X"), "id": 9}], [[0, "hi", ""]]),
    }
    for name, (messages, expected) in cases.items():
        assert overlay.page.evaluate(TRANSLATION_JS, messages) == expected, name


def test_feed_core(overlay: Overlay, feed: ScriptedFeed) -> None:
    feed.start(CAPTIONS_ONLY)
    overlay.open(feed.url)
    for name, (messages, expected) in FEED_CASES.items():
        assert overlay.page.evaluate(FEED_JS, messages) == expected, name


# --------------------------------------------------------------------------- the real daemon

SEEN_UNSTABLE_JS = """
window.__unstableSeen = [];
new MutationObserver(() => {
  for (const el of document.querySelectorAll(".unstable")) {
    const text = el.textContent.trim();
    if (text) window.__unstableSeen.push([text, getComputedStyle(el).color,
      getComputedStyle(el.previousElementSibling).color]);
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


@pytest.mark.slow
def test_real_daemon_shows_the_spoken_words(overlay: Overlay, tmp_path: Path) -> None:
    clip = SPEECH / "misc" / "jfk.flac"
    if not clip.is_file():
        pytest.fail(f"shared speech clip not found: {clip}")
    transcript = "And so my fellow Americans, ask not what your country can do for you, " \
                 "ask what you can do for your country."
    overlay.problems.allow_offline = True  # the daemon exits at the end of the clip
    overlay.page.add_init_script(SEEN_UNSTABLE_JS)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}  # a journal of its own
    proc = subprocess.Popen(
        [sys.executable, "-m", "subtitled", "run", "--port", "0", "--source", f"file:{clip}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            if match := re.match(r"overlay:\s+(http://\S+)", line):
                url = match.group(1)
                break
        assert url, "the daemon printed no overlay URL"
        overlay.open(url, "lines=10&fade=0&size=28")
        # While the clip plays: a moment with stable and unstable words in one line.
        overlay.page.wait_for_function(
            """[...document.querySelectorAll('.line')].some((line) =>
                line.querySelector('.stable').textContent.trim() &&
                line.querySelector('.unstable').textContent.trim())""",
            timeout=30_000, polling=20,
        )
        screenshot(overlay.page, "real-daemon-live")
        proc.wait(timeout=60)  # the clip plays in real time, then the daemon exits
        screenshot(overlay.page, "real-daemon")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    assert proc.returncode == 0
    shown = " ".join(overlay.lines())
    expected = _words(transcript)
    heard = _words(shown)
    recalled = sum(1 for w in set(expected) if w in heard) / len(set(expected))
    assert recalled >= 0.8, shown
    seen = overlay.page.evaluate("window.__unstableSeen")
    assert seen, "no unstable text was ever shown"
    assert all(colour != stable_colour for _, colour, stable_colour in seen)
