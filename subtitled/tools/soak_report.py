"""What a soak records and how it is judged (`subtitled soak`, issue 7's criteria).

`ClientLog` and `CommitTracker` book what each WebSocket client received; the
`*_report` functions and `summarise` turn those, the journal and the daemon's
/proc samples into the report whose criteria `subtitled.tools.soak` describes:
memory growth (medians over `WINDOW_S` after `WARMUP_S` against the last
`WINDOW_S`), latency drift (first against last `WINDOW_S` of audio), and delivery
to every client against the journal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WARMUP_S = 300.0
"""Memory growth is measured from the end of the first five minutes."""
WINDOW_S = 300.0
"""Latency drift compares the first five minutes of audio with the last five, and memory
growth the five minutes after warm-up with the last five."""
MAX_GROWTH_PERCENT = 5.0
MAX_DRIFT_S = 0.25


@dataclass
class ClientLog:
    """What one client received."""

    reconnect_every_s: float | None = None
    reconnect_until: float = math.inf
    """Monotonic time after which it stays: a client away when the daemon ends misses the end."""
    joined_seq: int | None = None
    """The seq of the first hello: finals after it are due to this client."""
    seqs: list[int] = field(default_factory=list)
    finals: list[int] = field(default_factory=list)
    delays_s: list[tuple[float, float]] = field(default_factory=list)
    """(receive time, receive time - emitted) for live segment messages."""
    reconnects: int = 0
    resumes_incomplete: int = 0
    replayed: int = 0
    closed: str = ""
    resume_seq: int | None = None
    stream: str | None = None

    def receive(self, message: dict[str, Any], received_unix: float, replaying: bool) -> None:
        """Book one message; keeps the resume point as PROTOCOL.md says."""
        kind = message.get("type")
        if kind == "hello":
            self.stream = str(message.get("stream"))
            if "resume" in message:
                resume = message["resume"]
                self.replayed += int(resume.get("replayed", 0))
                self.resumes_incomplete += not resume.get("complete", False)
            else:
                self.resume_seq = int(message["seq"])
                if self.joined_seq is None:
                    self.joined_seq = self.resume_seq
            return
        if "seq" not in message:
            return
        seq = int(message["seq"])
        self.seqs.append(seq)
        self.resume_seq = seq
        if kind == "segment":
            if message.get("status") == "final":
                self.finals.append(seq)
            if not replaying and message.get("emitted") is not None:
                self.delays_s.append((received_unix, received_unix - float(message["emitted"])))


class CommitTracker:
    """Committed-word emissions from a client's stream of segment revisions.

    Committed words never change in later revisions of a segment, so the first
    revision whose `committed` text covers word i of a segment committed it.
    """

    def __init__(self) -> None:
        self._committed: dict[int, int] = {}
        self.words: list[tuple[float, float]] = []
        """(audio end time of the word, emission wall time of its commit)."""

    def feed(self, message: dict[str, Any]) -> None:
        if message.get("type") != "segment":
            return
        words = message["words"]
        n = (
            len(words)
            if message["status"] == "final"
            else _n_committed(words, str(message["committed"]))
        )
        segment = int(message["id"])
        done = self._committed.get(segment, 0)
        for word in words[done:n]:
            if word["end"] is not None:
                self.words.append((float(word["end"]), float(message["emitted"])))
        self._committed[segment] = max(done, n)


def _n_committed(words: Sequence[dict[str, Any]], committed: str) -> int:
    """How many of `words` (committed first) make up the `committed` text."""
    n, text = 0, ""
    while n < len(words) and len(text.strip()) < len(committed):
        text += str(words[n]["w"])
        n += 1
    return n


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def memory_report(
    samples: Sequence[tuple[float, float, float, float]],
    duration_s: float,
    warmup_s: float,
    window_s: float = WINDOW_S,
) -> dict[str, Any]:
    """RSS growth from the end of warm-up to the end (samples: t, rss, cpu, load):
    medians over the `window_s` after warm-up and the last `window_s`.

    Samples cover the daemon's whole life: one that falls behind real time is still
    transcribing after `duration_s`, and its memory then counts as much as before.
    """
    live = list(samples)
    after = [s[1] for s in live if warmup_s <= s[0] <= warmup_s + window_s] or [live[0][1]]
    end = [s[1] for s in live if s[0] >= live[-1][0] - window_s]
    rss_after, rss_end = float(np.median(after)), float(np.median(end))
    tail = [s for s in live if s[0] >= warmup_s]
    slope = 0.0
    if len(tail) >= 2 and tail[-1][0] > tail[0][0]:
        slope = float(np.polyfit([s[0] for s in tail], [s[1] for s in tail], 1)[0]) * 3600
    span = live[-1][0] - live[0][0]
    return {
        "warmup_s": warmup_s,
        "window_s": window_s,
        "rss_after_warmup_mb": round(rss_after, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_peak_mb": round(max(s[1] for s in live), 1),
        "growth_percent": round(100 * (rss_end - rss_after) / rss_after, 2),
        # the floor between model calls: a leak raises it, one long ASR window does not
        "rss_floor_after_warmup_mb": round(float(np.min(after)), 1),
        "rss_floor_end_mb": round(float(np.min(end)), 1),
        "slope_mb_per_hour_after_warmup": round(slope, 1),
        "daemon_cpu_s_per_s": round((live[-1][2] - live[0][2]) / span, 3) if span else None,
        "load_average_mean": round(float(np.mean([s[3] for s in live])), 2),
        "daemon_wall_s": round(span, 1),
        "samples": [[round(s[0], 1), round(s[1], 1), round(s[2], 1), s[3]] for s in live],
        "timeline_mb": [
            [round(s[0] / 60, 1), round(s[1], 1)] for s in live[:: max(1, len(live) // 30)]
        ],
    }


def latency_report(
    words: Sequence[tuple[float, float]], started: float, duration_s: float, window_s: float
) -> dict[str, Any]:
    """Committed-word latency in the first and last `window_s` of audio."""
    latencies = [(end, emitted - (started + end)) for end, emitted in words]
    first = [lat for end, lat in latencies if end < window_s]
    last = [lat for end, lat in latencies if end >= duration_s - window_s]
    p50_first, p50_last = _percentile(first, 50), _percentile(last, 50)
    drift = None if p50_first is None or p50_last is None else round(p50_last - p50_first, 3)
    return {
        "window_s": window_s,
        "words_first": len(first),
        "words_last": len(last),
        "committed_word_s_first": {"p50": p50_first, "p90": _percentile(first, 90)},
        "committed_word_s_last": {"p50": p50_last, "p90": _percentile(last, 90)},
        "committed_word_s_all": {
            "p50": _percentile([lat for _, lat in latencies], 50),
            "p90": _percentile([lat for _, lat in latencies], 90),
        },
        "drift_p50_s": drift,
    }


def cost_report(
    journal: Sequence[dict[str, Any]],
    samples: Sequence[tuple[float, float, float, float]],
    started: float,
    window_s: float,
) -> dict[str, Any]:
    """Daemon CPU seconds per audio second, over the first and the last `window_s` of audio.

    Unlike latency, this does not depend on how much CPU the machine leaves the daemon:
    a daemon starved of CPU falls behind real time (stdin is paused, not dropped), and
    its latency then grows with the run, but its cost per audio second does not, unless
    something in it grows.
    """
    points = sorted(
        (float(m["end"]), float(m["emitted"]) - started) for m in journal if m.get("end")
    )
    if len(points) < 4 or len(samples) < 2:
        return {"window_s": window_s, "first": None, "last": None}
    times = [s[0] for s in samples]
    cpu = [s[2] for s in samples]

    def cost(a: tuple[float, float], b: tuple[float, float]) -> float | None:
        audio_s = b[0] - a[0]
        used = float(np.interp(b[1], times, cpu) - np.interp(a[1], times, cpu))
        return round(used / audio_s, 3) if audio_s > 0 else None

    head = [p for p in points if p[0] <= window_s] or points[:2]
    tail = [p for p in points if p[0] >= points[-1][0] - window_s] or points[-2:]
    return {
        "window_s": window_s,
        "first": cost((0.0, 0.0), head[-1]),
        "last": cost(tail[0], tail[-1]) if len(tail) >= 2 else None,
    }


def delivery_report(journal: Sequence[dict[str, Any]], logs: Sequence[ClientLog]) -> dict[str, Any]:
    """Per client: finals missing against the journal, duplicates, disorder, seq gaps."""
    expected = [int(m["seq"]) for m in journal]
    per_client = []
    for i, log_ in enumerate(logs):
        joined = log_.joined_seq if log_.joined_seq is not None else math.inf
        due = {seq for seq in expected if seq > joined}
        seen = set(log_.seqs)
        always = log_.reconnect_every_s is None
        per_client.append(
            {
                "client": i,
                "reconnects": log_.reconnects,
                "received": len(log_.seqs),
                "finals": len(log_.finals),
                "missing_finals": len(due - set(log_.finals)),
                "duplicates": len(log_.seqs) - len(seen),
                "out_of_order": sum(
                    1 for a, b in zip(log_.seqs, log_.seqs[1:], strict=False) if b <= a
                ),
                # Only a client that never left must see every seq; one that resumed is not
                # replayed the partials superseded while it was away (PROTOCOL.md).
                "seq_gaps": (max(seen) - min(seen) + 1 - len(seen)) if always and seen else 0,
                "resumes_incomplete": log_.resumes_incomplete,
                "closed": log_.closed,
            }
        )
    return {
        "clients": len(logs),
        "reconnecting_clients": sum(1 for log_ in logs if log_.reconnect_every_s is not None),
        "reconnects": sum(c["reconnects"] for c in per_client),
        "replayed_on_resume": sum(log_.replayed for log_ in logs),
        "finals_journaled": len(expected),
        "clients_missing_finals": sum(1 for c in per_client if c["missing_finals"]),
        "clients_with_duplicates": sum(1 for c in per_client if c["duplicates"]),
        "clients_out_of_order": sum(1 for c in per_client if c["out_of_order"]),
        "clients_with_seq_gaps": sum(1 for c in per_client if c["seq_gaps"]),
        "clients_with_incomplete_resume": sum(1 for c in per_client if c["resumes_incomplete"]),
        "per_client": per_client,
    }


def fanout_report(logs: Sequence[ClientLog]) -> dict[str, Any]:
    """Receive time minus emission time of live segment messages, over all clients."""
    delays = [d for log_ in logs for _, d in log_.delays_s]
    return {
        "messages": len(delays),
        "p50_ms": _ms(_percentile(delays, 50)),
        "p99_ms": _ms(_percentile(delays, 99)),
        "max_ms": _ms(max(delays, default=None)),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


def summarise(
    journal: Sequence[dict[str, Any]],
    logs: Sequence[ClientLog],
    samples: Sequence[tuple[float, float, float, float]],
    words: Sequence[tuple[float, float]],
    started: float,
    duration_s: float,
) -> dict[str, Any]:
    """The soak report from what was recorded.

    Latency windows are taken over the audio transcribed (to the end of the last
    final), which is all of it unless the daemon was stopped early.
    """
    warmup_s = min(WARMUP_S, duration_s / 6)
    ends = [float(m["end"]) for m in journal if m.get("end")]
    audio_s = min(duration_s, max(ends, default=duration_s))
    window_s = min(WINDOW_S, audio_s / 6)
    memory = memory_report(samples, duration_s, warmup_s, window_s) if samples else {}
    latency = latency_report(words, started, audio_s, window_s)
    latency["audio_transcribed_s"] = round(audio_s, 1)
    latency["daemon_cpu_s_per_audio_s"] = cost_report(journal, samples, started, window_s)
    delivery = delivery_report(journal, logs)
    delivered = not any(
        delivery[key]
        for key in (
            "clients_missing_finals",
            "clients_with_duplicates",
            "clients_out_of_order",
            "clients_with_seq_gaps",
            "clients_with_incomplete_resume",
        )
    )
    drift = latency["drift_p50_s"]
    # A daemon that cannot keep up with real time (too little CPU) piles up a backlog:
    # its latency grows with the run, whatever its memory and delivery.
    latency["kept_up_with_real_time"] = bool(memory) and memory["daemon_wall_s"] <= audio_s + 30
    checks = {
        "memory": bool(memory) and memory["growth_percent"] <= MAX_GROWTH_PERCENT,
        "latency": drift is not None and drift <= MAX_DRIFT_S,
        "delivery": delivered and delivery["finals_journaled"] > 0,
    }
    return {
        "minutes": round(duration_s / 60, 2),
        "memory": memory,
        "latency": latency,
        "delivery": delivery,
        "fanout_delay": fanout_report(logs),
        "pass": {**checks, "all": all(checks.values())},
    }


def summary_text(report: dict[str, Any]) -> str:
    """A few lines for a person; the JSON report has the rest."""
    m, lat, d, ok = report["memory"], report["latency"], report["delivery"], report["pass"]

    def mark(key: str) -> str:
        return "ok  " if ok[key] else "FAIL"

    first, last = lat["committed_word_s_first"], lat["committed_word_s_last"]
    cost = lat["daemon_cpu_s_per_audio_s"]
    return "\n".join(
        [
            f"soak: {report['minutes']:g} min of audio, {d['clients']} clients "
            f"({d['reconnecting_clients']} resuming with since, {d['reconnects']} reconnects)",
            f"{mark('memory')} memory: RSS {m.get('rss_after_warmup_mb')} MB after "
            f"{m.get('warmup_s', 0) / 60:.1f} min -> {m.get('rss_end_mb')} MB at the end "
            f"({m.get('growth_percent')}%, limit {MAX_GROWTH_PERCENT:g}%; lowest "
            f"{m.get('rss_floor_after_warmup_mb')} -> {m.get('rss_floor_end_mb')} MB), "
            f"peak {m.get('rss_peak_mb')} MB",
            f"{mark('latency')} latency: committed words p50/p90 "
            f"{first['p50']}/{first['p90']} s in the first {lat['window_s'] / 60:.1f} min, "
            f"{last['p50']}/{last['p90']} s in the last "
            f"(drift {lat['drift_p50_s']} s, limit {MAX_DRIFT_S:g} s)",
            f"     daemon: {m.get('daemon_cpu_s_per_s')} CPU s per s, "
            f"{cost['first']} then {cost['last']} CPU s per audio s (first, last window), done "
            f"{m.get('daemon_wall_s')} s after the start of {report['minutes'] * 60:g} s of "
            f"audio (kept up: {lat.get('kept_up_with_real_time')}); "
            f"load average {m.get('load_average_mean')}",
            f"{mark('delivery')} delivery: {d['finals_journaled']} finals journaled; clients with "
            f"missing finals {d['clients_missing_finals']}, "
            f"duplicates {d['clients_with_duplicates']}, "
            f"out of order {d['clients_out_of_order']}, seq gaps {d['clients_with_seq_gaps']}, "
            f"incomplete resumes {d['clients_with_incomplete_resume']}",
        ]
    )
