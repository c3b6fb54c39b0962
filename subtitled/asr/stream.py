"""Streaming ASR: audio buffer + VAD gating + a `Transcriber` + the commit policy.

Each `step` transcribes the buffer (from `CommitPolicy.buffer_start_s`, with the
policy's forced prefix and prompt context) if the VAD heard speech after the committed
words, and hands the words to the policy, after the guards (`subtitled.asr.guards`)
have dropped repetition loops, echoes and known hallucinations. Once the VAD has heard
`VadConfig.pause_s` of silence, the step transcribes up to just after the pause and
commits that hypothesis whole, closing the segment. Silence moves the buffer start
forward, so it is never transcribed. The policy's revisions go out through
`SentenceCase` (`subtitled.asr.captions`), so captions read as sentences.

Synchronous and clock-free like the cores it joins (the caller passes `now_unix`),
so the daemon runs it in a worker thread and the benchmark drives it on a
simulated clock. The caller decides how often to call `step` (see `StreamConfig`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np

from subtitled import SAMPLE_RATE_HZ
from subtitled.asr.captions import SentenceCase
from subtitled.asr.guards import (
    drop_context_echo,
    drop_repetition_loops,
    drop_trailing_echo,
    is_hallucination,
)
from subtitled.asr.policy import CommitPolicy, PolicyConfig
from subtitled.asr.vad import WINDOW_S, SileroStream, SpeechTracker, VadConfig
from subtitled.asr.whisper import Hypothesis, Transcriber
from subtitled.errors import ConfigError
from subtitled.events import AudioChunk, SegmentUpdate, Word

log = logging.getLogger(__name__)

PREROLL_S = 0.3
"""Audio kept before the first speech window: Silero flags onsets a little late."""
PAUSE_TAIL_S = 0.3
"""Audio after the start of a pause given to the closing transcription: enough for
the last word's release, too little for Whisper to invent a word in the silence."""
MAX_STEP_S = 2.0
"""Longest allowed `step_s`: commits need two steps, so latency grows with it."""
GAP_S = 0.25
"""A jump in chunk start times larger than this is a gap (a device was lost)."""
TAIL_GAP_S = 0.5
"""A closing transcription whose last word ends this long before the last voiced frame
left words out: the rest is transcribed again from that word's end."""
STALL_S = 1.0
"""A transcription with no new word after the prefix while speech went on this long
after it stalled: the rest is transcribed again from the prefix's end."""
MAX_TAIL_PASSES = 2


@dataclass(frozen=True)
class StreamConfig:
    """How the streaming ASR runs."""

    step_s: float = 0.5
    """New audio between two transcriptions of the buffer."""
    context_chars: int = 200
    """Committed text before the buffer, given to Whisper as the previous-text prompt."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    vad: VadConfig = field(default_factory=VadConfig)

    def __post_init__(self) -> None:
        if not 0.05 <= self.step_s <= MAX_STEP_S:
            raise ConfigError(
                f"streaming.step_s: {self.step_s} is invalid; expected 0.05 to {MAX_STEP_S:g}"
            )
        if self.context_chars < 0:
            raise ConfigError(
                f"streaming.context_chars: {self.context_chars} is invalid; expected >= 0"
            )


class StreamingAsr:
    """Turns audio chunks into segment revisions (partial and final)."""

    def __init__(
        self,
        transcriber: Transcriber,
        config: StreamConfig | None = None,
        vad: SileroStream | None = None,
    ) -> None:
        self.config = config or StreamConfig()
        self.transcriber = transcriber
        self.policy = CommitPolicy(self.config.policy)
        self.captions = SentenceCase()
        self.speech = SpeechTracker(self.config.vad)
        self._vad = vad if vad is not None else SileroStream()
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_start_s = 0.0
        self._last_step_end_s = 0.0
        self.transcriptions = 0

    @property
    def audio_end_s(self) -> float:
        """Stream time up to which audio has been accepted."""
        return self._audio_start_s + len(self._audio) / SAMPLE_RATE_HZ

    def set_step(self, step_s: float) -> None:
        """Step every `step_s` from now on (the power profile changes it while running)."""
        self.config = dataclasses.replace(self.config, step_s=step_s)

    def due(self) -> bool:
        """True when enough new audio has arrived for another step."""
        return self.audio_end_s - self._last_step_end_s >= self.config.step_s

    def accept(self, chunk: AudioChunk, now_unix: float) -> list[SegmentUpdate]:
        """Append captured audio. A jump in `start_s` (a lost device) closes the segment."""
        updates: list[SegmentUpdate] = []
        gap_s = chunk.start_s - self.audio_end_s
        if gap_s > GAP_S:
            updates = self.finish(now_unix)
            # Silence stands in for the lost audio in the VAD timeline, not in the buffer.
            self.speech.push(np.zeros(int(gap_s / WINDOW_S), dtype=np.float32))
            self._audio = np.zeros(0, dtype=np.float32)
            self._audio_start_s = chunk.start_s
            self._last_step_end_s = chunk.start_s
            self.policy.on_silence(chunk.start_s)
        self._audio = np.concatenate([self._audio, chunk.samples.astype(np.float32, copy=False)])
        self.speech.push(self._vad(chunk.samples))
        return updates

    def step(self, now_unix: float) -> list[SegmentUpdate]:
        """Transcribe the buffer if it holds speech; return the segment revisions."""
        return self.captions.apply(self._step(now_unix))

    def _step(self, now_unix: float) -> list[SegmentUpdate]:
        self._last_step_end_s = self.audio_end_s
        policy, speech = self.policy, self.speech
        uncommitted_from = policy.committed_end_s
        has_speech = speech.has_speech(uncommitted_from, self.audio_end_s)
        if not has_speech and not policy.pending_words:
            updates: list[SegmentUpdate] = []
            if policy.segment_open and speech.silence_s() >= self.config.vad.pause_s:
                # Everything was agreed before the speaker stopped: close the segment.
                updates = policy.on_pause([], speech.last_speech_end_s, now_unix)
            policy.on_silence(max(self.audio_end_s - PREROLL_S, policy.buffer_start_s))
            self._trim_audio()
            return updates
        if speech.silence_s() >= self.config.vad.pause_s:
            pause_start_s = speech.last_speech_end_s
            words = self._heard(
                closing=True, end_s=min(self.audio_end_s, pause_start_s + PAUSE_TAIL_S)
            )
            updates = policy.on_pause(words, pause_start_s, now_unix)
            self._trim_audio()
            return updates
        words = self._heard(self.audio_end_s, closing=False)
        updates = policy.on_hypothesis(words, self.audio_end_s, now_unix)
        self._trim_audio()
        return updates

    def finish(self, now_unix: float) -> list[SegmentUpdate]:
        """End of stream (or of a span before a gap): commit everything, close the segment."""
        words: list[Word] = []
        if self.speech.has_speech(self.policy.committed_end_s, self.audio_end_s):
            words = self._heard(closing=True, end_s=self.audio_end_s)
        updates = self.policy.on_pause(words, self.audio_end_s, now_unix)
        self._trim_audio()
        return self.captions.apply(updates)

    def _heard(self, end_s: float, closing: bool) -> list[Word]:
        """Transcribe the buffer up to `end_s`; seek and continue where Whisper stopped.

        After a forced prefix that ends a sentence, Whisper often ends its text at once
        though speech follows (the prefix reads as the end of the transcript), and it
        sometimes stops short of the end of a buffer. Where the last word heard ends
        well before the last voiced frame (`TAIL_GAP_S` for the transcription that
        closes a segment, after which nothing re-reads the audio; `STALL_S` with no new
        word at all for any other), the rest is transcribed again from that word's end,
        without the prefix, with everything before as context.
        """
        words = self._transcribe(end_s)
        if not self.policy.aligned:
            return words  # a translation: its word times do not follow the audio
        for _ in range(MAX_TAIL_PASSES):
            heard = [*self.policy.prefix_words, *words]
            if not heard or (words and not closing):
                break
            voiced_end_s = min(self.speech.last_speech_end_s, end_s)
            if voiced_end_s - heard[-1].end_s < (TAIL_GAP_S if closing else STALL_S):
                break
            last = heard[-1]
            context = self.policy.context(self.config.context_chars) + "".join(
                w.text for w in heard
            )
            more = self._transcribe(end_s, last.end_s, (), context)
            if not more:
                break
            log.info(
                "Whisper stopped %.1f s before the speech did: %d more words",
                voiced_end_s - last.end_s,
                len(more),
            )
            words += more
        return words

    def _transcribe(
        self,
        end_s: float,
        start_s: float | None = None,
        prefix: tuple[Word, ...] | None = None,
        context: str | None = None,
    ) -> list[Word]:
        """Transcribe the buffer up to `end_s` (from the policy's buffer start, with its
        prefix and context, unless given)."""
        if start_s is None:
            start_s = self.policy.buffer_start_s
        prefix = self.policy.prefix_words if prefix is None else prefix
        if context is None:
            context = self.policy.context(self.config.context_chars)
        context = context[-self.config.context_chars :] if self.config.context_chars else ""
        first = max(int((start_s - self._audio_start_s) * SAMPLE_RATE_HZ), 0)
        last = int((end_s - self._audio_start_s) * SAMPLE_RATE_HZ)
        audio = self._audio[first:last]
        if len(audio) < SAMPLE_RATE_HZ // 10:
            return []
        hypothesis = self.transcriber.transcribe(audio, start_s, prefix, context.strip())
        self.transcriptions += 1
        spoken, text = self.transcriber.spoken_language, self.transcriber.text_language
        self.policy.aligned = spoken is None or text is None or spoken == text
        words = self._guard(hypothesis, prefix)
        if not prefix:
            # A fresh buffer (after a sentence end or a pause) that recites the prompt.
            kept = drop_context_echo(words, context)
            if len(kept) < len(words):
                log.info(
                    "dropped an echo of the prompt: %r",
                    "".join(w.text for w in words[: len(words) - len(kept)]),
                )
            words = kept
        return words

    def _guard(self, hypothesis: Hypothesis, prefix: tuple[Word, ...]) -> list[Word]:
        words = drop_repetition_loops(hypothesis.words, context=prefix)
        words = drop_trailing_echo(words, context=prefix)
        if len(words) < len(hypothesis.words):
            log.debug("dropped a repetition loop of %d words", len(hypothesis.words) - len(words))
        if words:
            ratio = self.speech.speech_ratio(words[0].start_s, words[-1].end_s)
            if is_hallucination(words, ratio, hypothesis.no_speech_prob):
                log.info("dropped a likely hallucination: %r", "".join(w.text for w in words))
                return []
        return words

    def _trim_audio(self) -> None:
        drop = int((self.policy.buffer_start_s - self._audio_start_s) * SAMPLE_RATE_HZ)
        if drop > 0:
            self._audio = self._audio[drop:]
            self._audio_start_s += drop / SAMPLE_RATE_HZ
            self.speech.forget_before(self._audio_start_s - 1.0)
