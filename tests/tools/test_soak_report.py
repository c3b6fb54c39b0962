"""The soak's bookkeeping and criteria (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from subtitled.tools.soak_report import (
    ClientLog,
    CommitTracker,
    cost_report,
    delivery_report,
    latency_report,
    memory_report,
    summarise,
    summary_text,
)


def segment(
    seq: int,
    seg: int,
    words: list[tuple[str, float]],
    committed: str,
    status: str = "partial",
    emitted: float = 0.0,
) -> dict[str, Any]:
    return {
        "type": "segment",
        "seq": seq,
        "id": seg,
        "status": status,
        "committed": committed,
        "words": [{"w": w, "start": end - 0.2, "end": end} for w, end in words],
        "emitted": emitted,
    }


def hello(seq: int, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "hello", "seq": seq, "stream": "s1"}
    if resume is not None:
        message["resume"] = resume
    return message


def final(seq: int) -> dict[str, Any]:
    return {"seq": seq}


def client_log(messages: list[dict[str, Any]], reconnects: bool = False) -> ClientLog:
    log = ClientLog(reconnect_every_s=60.0 if reconnects else None)
    for message in messages:
        log.receive(message, 100.0, replaying=False)
    return log


def test_commit_tracker_books_each_word_once_at_its_first_commit() -> None:
    tracker = CommitTracker()
    words = [(" Hello", 1.0), (" there", 1.5), (" frie", 1.9)]
    tracker.feed(segment(1, 7, words[:2], "", emitted=10.0))
    tracker.feed(segment(2, 7, words, "Hello", emitted=11.0))
    tracker.feed(segment(3, 7, words, "Hello there", emitted=12.0))
    tracker.feed(
        segment(
            4, 7, [*words[:2], (" friend", 2.0)], "Hello there friend", status="final", emitted=13.0
        )
    )
    tracker.feed({"type": "status", "seq": 5})
    assert tracker.words == [(1.0, 11.0), (1.5, 12.0), (2.0, 13.0)]


def test_resume_point_follows_the_protocol() -> None:
    log = client_log([hello(4), segment(5, 1, [], ""), final(6)])
    assert (log.joined_seq, log.resume_seq, log.seqs) == (4, 6, [5, 6])
    log.receive(hello(6, {"since": 6, "replayed": 2, "complete": True}), 0.0, replaying=False)
    assert log.resume_seq == 6 and log.replayed == 2  # a resuming hello does not move it
    log.receive(hello(9, {"since": 9, "replayed": 0, "complete": False}), 0.0, replaying=False)
    assert log.resumes_incomplete == 1 and log.joined_seq == 4


JOURNAL = [{"seq": 3}, {"seq": 6}, {"seq": 9}]
FINALS = [segment(s, s, [], "", status="final") for s in (3, 6, 9)]


@pytest.mark.parametrize(
    ("received", "reconnects", "expected"),
    [
        # Everything, in order.
        ([*range(1, 10)], False, {}),
        # A final missing: lost.
        ([1, 2, 3, 4, 5, 7, 8, 9], False, {"missing_finals": 1, "seq_gaps": 1}),
        # A partial missing: a gap for a client that never left...
        ([1, 2, 3, 5, 6, 7, 8, 9], False, {"seq_gaps": 1}),
        # ...but superseded partials are not replayed to one that resumed.
        ([1, 2, 3, 5, 6, 7, 8, 9], True, {}),
        ([1, 2, 3, 3, 4, 5, 6, 7, 8, 9], False, {"duplicates": 1, "out_of_order": 1}),
        ([1, 2, 4, 3, 5, 6, 7, 8, 9], False, {"out_of_order": 1}),
    ],
)
def test_delivery(received: list[int], reconnects: bool, expected: dict[str, int]) -> None:
    messages = [hello(0)] + [
        FINALS[[3, 6, 9].index(s)] if s in (3, 6, 9) else segment(s, s, [], "") for s in received
    ]
    report = delivery_report(JOURNAL, [client_log(messages, reconnects)])
    client = report["per_client"][0]
    counts = {k: client[k] for k in ("missing_finals", "duplicates", "out_of_order", "seq_gaps")}
    assert counts == {
        "missing_finals": 0,
        "duplicates": 0,
        "out_of_order": 0,
        "seq_gaps": 0,
        **expected,
    }


def test_a_late_client_owes_only_the_finals_after_it_joined() -> None:
    log = client_log([hello(5), FINALS[1], segment(7, 7, [], ""), FINALS[2]])
    assert delivery_report(JOURNAL, [log])["per_client"][0]["missing_finals"] == 0


def test_memory_growth_from_the_end_of_warmup() -> None:
    # 300 MB at load, up to 400 MB during warm-up, then 1 MB a minute.
    samples = [
        (t, 300.0 + min(t, 100.0) + max(0.0, t - 300) / 60, 0.5 * t, 1.0)
        for t in range(0, 1801, 10)
    ]
    report = memory_report(samples, 1800.0, 300.0, 300.0)
    # medians of minutes 5-10 and 25-30
    assert report["rss_after_warmup_mb"] == pytest.approx(402.5, abs=0.1)
    assert report["rss_end_mb"] == pytest.approx(422.5, abs=0.1)
    assert report["growth_percent"] == pytest.approx(4.97, abs=0.01)
    assert report["slope_mb_per_hour_after_warmup"] == pytest.approx(60.0, abs=0.5)
    assert report["daemon_cpu_s_per_s"] == pytest.approx(0.5)
    assert report["rss_floor_after_warmup_mb"] == pytest.approx(400.0, abs=0.1)
    assert report["rss_floor_end_mb"] == pytest.approx(420.0, abs=0.1)


def test_a_long_sentence_at_the_end_is_not_growth() -> None:
    # flat at 275 MB, 300 MB for the 70 s of one long window in the last minute
    samples = [(t, 300.0 if 1730 <= t < 1800 else 275.0, 0.0, 1.0) for t in range(0, 1801, 10)]
    assert memory_report(samples, 1800.0, 300.0, 300.0)["growth_percent"] == 0.0
    # the same level a leak would reach stays in the median
    leak = [(t, 275.0 + 25.0 * max(0.0, t - 1500) / 300, 0.0, 1.0) for t in range(0, 1801, 10)]
    assert memory_report(leak, 1800.0, 300.0, 300.0)["growth_percent"] > 4.0


def test_latency_drift_compares_the_first_and_last_windows() -> None:
    started = 1000.0
    words = [(end, started + end + 0.8 + end / 1800) for end in range(0, 1800, 2)]
    report = latency_report(words, started, 1800.0, 300.0)
    assert report["committed_word_s_first"]["p50"] == pytest.approx(0.883, abs=0.01)
    assert report["committed_word_s_last"]["p50"] == pytest.approx(1.717, abs=0.01)
    assert report["drift_p50_s"] == pytest.approx(0.833, abs=0.01)


def test_summary_flags_each_criterion() -> None:
    samples = [(float(t), 400.0, 0.0, 1.0) for t in range(0, 601, 10)]
    words = [(float(end), 1000.0 + end + 1.0) for end in range(600)]
    log = client_log([hello(0), *FINALS])
    report = summarise(JOURNAL, [log], samples, words, 1000.0, 600.0)
    assert report["pass"] == {"memory": True, "latency": True, "delivery": False, "all": False}
    assert report["delivery"]["per_client"][0]["seq_gaps"] == 4  # 4, 5, 7, 8 never came
    assert "FAIL delivery" in summary_text(report)


def test_cost_per_audio_second_ignores_how_far_behind_the_daemon_is() -> None:
    """A daemon at 0.3x real time, spending 0.5 CPU s per audio s throughout: its
    latency grows, its cost does not."""
    started = 1000.0
    journal = [
        {"seq": i, "end": 10.0 * i, "emitted": started + 10.0 * i / 0.3} for i in range(1, 181)
    ]
    samples = [(float(t), 400.0, 0.5 * 0.3 * t, 8.0) for t in range(0, 6001, 10)]
    cost = cost_report(journal, samples, started, 300.0)
    assert cost == {"window_s": 300.0, "first": pytest.approx(0.5), "last": pytest.approx(0.5)}
