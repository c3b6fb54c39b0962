"""The streaming commit policy: a pure core with no I/O and no clock.

LocalAgreement-2 (Macháček, Dabre and Bojar, 2023, "Turning Whisper into Real-Time
Transcription System", §3): the audio buffer is re-transcribed as it grows, and the
longest common prefix of two consecutive hypotheses is committed. Committed words are
never revised. The buffer is trimmed at committed sentence ends (and, past
`max_buffer_s`, at the last committed word), so the cost of a step follows the length
of the current sentence, not of the stream.

Four refinements, each from error analysis on long-form speech or short utterances:

- A word is taken as agreed only if, in the earlier hypothesis, it ended at least
  `cut_margin_s` before the end of the audio: otherwise the buffer may have cut it
  ("wood" of "woodcutters" agrees with itself one step later).
- A sentence end on the last word of a hypothesis is no evidence (Whisper ends a
  sentence wherever the audio ends): that word waits until a hypothesis has words
  after it, or the speaker pauses. An ellipsis, "Mr." or an initial ends no sentence.
- The first words of a fresh buffer (start of speech, after a pause) wait for
  `first_context_s` of audio after them: guessed from the first half second, two
  hypotheses agree on the wrong word as readily as on the right one.
- A trim keeps the last committed word in the buffer as the forced prefix and cuts at
  its start. Word boundaries are approximate, and a buffer cut at a word's end starts
  with a fragment of it, which Whisper turns into a word ("It", "And") or a repeat of
  the prompt; before a forced prefix it can put nothing.

Committed text that leaves the buffer becomes the prompt context (`context`), so a
mid-sentence trim keeps the start of the sentence.

Whisper's translate task (German speech, English words) is re-translated instead: the
whole utterance is decoded at every step and shown as the unstable tail, and committed
at the pause that ends it (past `max_buffer_s`, words are forced out as above). Its words
do not follow the audio in order (a German verb at the end of a clause is an English verb
near its start) and their times are guesses, so agreeing on a prefix and trimming or
forcing at word times re-translated audio already covered or lost it: on the FLEURS
clips ("If you have seen the film of the temple dritter, if you have seen the temple
dritter, ..."), committed-prefix streaming scored BLEU 11.2 on German, 5.2 on French,
and whole-utterance commits with a beam of 5 (`asr.translate_beam_size`) 18.3 and 12.2.

The shell (`subtitled.asr.stream`) owns the audio and the model. It asks this core
where the buffer starts and what to force-decode as a prefix, feeds it each new
hypothesis, and publishes the `SegmentUpdate`s the core returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from subtitled.errors import ConfigError
from subtitled.events import SegmentUpdate, Word

CLOSING_MARKS = "'\"\u201d\u2019)"  # quotes and brackets that may follow the mark
_SENTENCE_END = re.compile(f"[.?!…][{CLOSING_MARKS}]*$")
_ELLIPSIS = re.compile(f"(\\.\\.\\.|…)[{CLOSING_MARKS}]*$")
_NORMALISE = re.compile(r"[^\w']+")
_HISTORY_CHARS = 2000
TRANSLATION_COMMITS = ("pause", "agreement")
MAX_BUFFER_S = 28.0
"""Longest allowed `max_buffer_s`: a step's audio and the encoder's 1 s of padding
must still fit Whisper's 30 s window."""
# A period after these closes no sentence ("Mr. Smith", "e.g. this").
_ABBREVIATIONS = frozenset(
    ["mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "rev", "vs", "etc", "eg", "ie"]
)


def normalise_word(text: str) -> str:
    """The form two hypotheses are compared in: lower-case, punctuation dropped."""
    return _NORMALISE.sub("", text.lower())


def ends_sentence(word: Word) -> bool:
    """True when Whisper closed a sentence after this word (., ? or !).

    Not after an ellipsis (Whisper's mark for speech trailing off where the buffer
    ends), an abbreviation ("Mr.") or an initial ("J.").
    """
    text = word.text.strip()
    if not _SENTENCE_END.search(text) or _ELLIPSIS.search(text):
        return False
    if re.search(f"\\.[{CLOSING_MARKS}]*$", text):
        key = _NORMALISE.sub("", text)
        initial = len(key) == 1 and key.isupper() and key != "I"
        if initial or key.lower() in _ABBREVIATIONS:
            return False
    return True


@dataclass(frozen=True)
class PolicyConfig:
    """Tuning of the commit policy. Times are audio seconds."""

    max_buffer_s: float = 15.0
    """Past this, the buffer is trimmed at the last committed word even mid-sentence.
    Longer gives Whisper more context at more CPU, and the encoder's cost grows faster
    than the window: on the LJ long-form, 15 s against 20 s cost WER +0.003 (0.0526 /
    0.0495) for 14% less CPU (0.44 / 0.51 CPU-s per audio-s), committed-word latency
    p50 0.94 / 0.98 s and a worst lag behind real time of 0.33 / 0.49 s (12 s: WER
    +0.008)."""
    force_commit_margin_s: float = 1.5
    """When the buffer is over `max_buffer_s` with nothing agreed, words ending this far
    before the buffer end are committed anyway (Whisper failed to agree with itself);
    audio in which Whisper heard no words at all is dropped up to this far."""
    cut_margin_s: float = 0.1
    """A word heard ending this close to the end of the audio it was transcribed from
    may be cut short there ("wood" of "woodcutters"): it is not taken as agreed until a
    hypothesis that heard audio past it says the same."""
    max_segment_words: int = 60
    """A segment (caption line group) is closed after this many committed words."""
    first_context_s: float = 1.0
    """In a buffer with no committed word (the start of speech, after a pause), a word is
    not taken as agreed until the hypothesis that heard it also heard this much audio
    after it. Two early hypotheses agree on a first word guessed from half a second of
    sound ("the air type" for "their type"); with a second more they correct it. Once a
    word is committed it anchors the rest, and `cut_margin_s` applies."""
    translation_commit: str = "pause"
    """How Whisper's translate task commits: "pause" (the utterance is re-translated whole
    at each step and committed at the pause that ends it) or "agreement" (the prefix two
    re-translations agree on is committed and force-decoded from then on, the audio kept
    whole until the pause). Measured on the 18 FLEURS clips into English: committed words
    at 2.3 s p50 against 5.8 s, BLEU 11.2 against 15.0 (README, Other languages)."""

    def __post_init__(self) -> None:
        if self.translation_commit not in TRANSLATION_COMMITS:
            raise ConfigError(
                f"streaming.policy.translation_commit: {self.translation_commit!r} is invalid; "
                f"expected one of {', '.join(TRANSLATION_COMMITS)}"
            )
        if not 1.0 <= self.max_buffer_s <= MAX_BUFFER_S:
            raise ConfigError(
                f"streaming.policy.max_buffer_s: {self.max_buffer_s} is invalid; expected 1 to "
                f"{MAX_BUFFER_S:g} (Whisper hears at most 30 s)"
            )
        if not 0.0 <= self.force_commit_margin_s < self.max_buffer_s:
            raise ConfigError(
                f"streaming.policy.force_commit_margin_s: {self.force_commit_margin_s} is "
                "invalid; expected at least 0 and less than max_buffer_s"
            )
        if self.cut_margin_s < 0.0:
            raise ConfigError(
                f"streaming.policy.cut_margin_s: {self.cut_margin_s} is invalid; expected >= 0"
            )
        if not 0.0 <= self.first_context_s <= 10.0:
            raise ConfigError(
                f"streaming.policy.first_context_s: {self.first_context_s} is invalid; "
                "expected 0 to 10"
            )
        if self.max_segment_words < 1:
            raise ConfigError(
                f"streaming.policy.max_segment_words: {self.max_segment_words} is invalid; "
                "expected an integer >= 1"
            )


@dataclass
class _OpenSegment:
    segment_id: int
    revision: int = 0
    committed: list[Word] = field(default_factory=list)
    last_sent: tuple[tuple[Word, ...], tuple[Word, ...]] | None = None


class CommitPolicy:
    """LocalAgreement-2 over a trimmed buffer, producing segment revisions.

    Call `on_hypothesis` with each new transcription of the buffer (only the words
    after the forced `prefix_words`), `on_pause` when the VAD hears the speaker stop,
    and `finish` at the end of the stream.
    """

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.buffer_start_s = 0.0
        self._prefix: list[Word] = []  # committed words whose audio is still in the buffer
        self._history = ""  # committed text before the buffer, most recent last
        self._pending: list[Word] = []  # last hypothesis after the prefix, not yet agreed
        self._pending_audio_end_s = 0.0  # where the audio of that hypothesis ended
        self._next_segment_id = 0
        self._segment: _OpenSegment | None = None
        self.aligned = True
        """Whether word times follow the audio (transcription; set by the shell at each
        transcription). False for Whisper's translate task on other speech: see the
        module docstring."""

    # What the shell needs to run the next transcription.

    @property
    def prefix_words(self) -> tuple[Word, ...]:
        """Committed words inside the buffer: force-decoded so Whisper continues after them."""
        return tuple(self._prefix)

    def context(self, max_chars: int) -> str:
        """Committed text before the buffer (up to `max_chars`), for Whisper's prompt.

        Includes the open segment's words trimmed out of the buffer, so a mid-sentence
        trim does not lose the start of the sentence.
        """
        return self._history[-max_chars:].strip() if max_chars > 0 else ""

    @property
    def pending_words(self) -> tuple[Word, ...]:
        """The unstable tail from the last hypothesis."""
        return tuple(self._pending)

    @property
    def segment_open(self) -> bool:
        """True while a segment has revisions out and no final yet."""
        return self._segment is not None

    @property
    def committed_end_s(self) -> float:
        """Audio time up to which everything is committed."""
        return self._prefix[-1].end_s if self._prefix else self.buffer_start_s

    # Events.

    def on_hypothesis(
        self, words: list[Word], buffer_end_s: float, now_unix: float
    ) -> list[SegmentUpdate]:
        """Take a new hypothesis for the audio after the prefix; commit what two agree on."""
        words = self._after_committed(words)
        agreed = _common_prefix_length(self._pending, words)
        agreed = min(agreed, self._heard_pending())
        if not self.aligned and self.config.translation_commit == "pause":
            agreed = 0  # re-translation: the whole utterance is committed at its pause
        if agreed and agreed == len(words) and ends_sentence(words[-1]):
            # Whisper ends a sentence wherever the buffer ends, so a period on the last
            # word is no evidence: hold the word back until a later hypothesis has words
            # after it (or the speaker pauses). Committing it would close the segment and
            # trim the buffer mid-sentence, and the rest would be decoded without context.
            agreed -= 1
        to_commit = words[:agreed]
        self._pending = words[agreed:]
        self._pending_audio_end_s = buffer_end_s
        over = buffer_end_s - self.buffer_start_s > self.config.max_buffer_s
        cutoff_s = buffer_end_s - self.config.force_commit_margin_s
        if over and not to_commit:
            forced = 0
            while forced < len(self._pending) and self._pending[forced].end_s <= cutoff_s:
                forced += 1
            to_commit, self._pending = self._pending[:forced], self._pending[forced:]
        updates = self._commit(to_commit, now_unix)
        updates += self._revise(now_unix)
        if over:
            self._trim_to_last_word()
            if buffer_end_s - self.buffer_start_s > self.config.max_buffer_s:
                # Whisper heard no words in most of the buffer (noise, music, a language
                # it does not know): drop that audio rather than grow past its window.
                self._retire(self._prefix)
                self._prefix = []
                self.buffer_start_s = max(self.buffer_start_s, cutoff_s)
        return updates

    def on_pause(
        self, words: list[Word], pause_start_s: float, now_unix: float
    ) -> list[SegmentUpdate]:
        """The speaker paused: commit the latest hypothesis whole and close the segment.

        `words` is a transcription made after the pause began (so Whisper heard the
        sentence end). Trims the buffer to the start of the pause.
        """
        words = self._after_committed(words)
        self._pending = []
        updates = self._commit(words, now_unix, close_at_sentence_end=False)
        updates += self._close(now_unix)
        self._retire(self._prefix)
        self._prefix = []
        self.buffer_start_s = max(self.buffer_start_s, pause_start_s)
        return updates

    def on_silence(self, until_s: float) -> None:
        """No speech after the committed words, nothing pending: start the buffer at `until_s`.

        Silence is as good an anchor as a forced word, so the prefix is dropped.
        """
        if not self._pending and until_s >= self.committed_end_s:
            self._retire(self._prefix)
            self._prefix = []
            self.buffer_start_s = max(self.buffer_start_s, until_s)

    def finish(self, now_unix: float) -> list[SegmentUpdate]:
        """End of stream: commit the unstable tail as it stands and close the segment."""
        updates = self._commit(self._pending, now_unix, close_at_sentence_end=False)
        self._pending = []
        updates += self._close(now_unix)
        self._retire(self._prefix)
        self._prefix = []
        return updates

    # Internals.

    def _after_committed(self, words: list[Word]) -> list[Word]:
        """Drop words heard inside audio already committed (a re-read of the prefix);
        translated words' times are guesses, so they are all kept."""
        if not self.aligned or not self._prefix:
            return words
        return [w for w in words if w.end_s > self.committed_end_s - 0.05]

    def _commit(
        self, words: list[Word], now_unix: float, *, close_at_sentence_end: bool = True
    ) -> list[SegmentUpdate]:
        updates: list[SegmentUpdate] = []
        for word in words:
            segment = self._open_segment()
            segment.committed.append(word)
            self._prefix.append(word)
            full = len(segment.committed) >= self.config.max_segment_words
            if close_at_sentence_end and (ends_sentence(word) or full):
                # Words after the sentence end open the next segment.
                updates += self._close(now_unix, keep_pending=True)
                if self.aligned:
                    self._trim_to_last_word()
        return updates

    def _trim_to_last_word(self) -> None:
        """Start the buffer at the last committed word, which stays as the forced prefix.

        Whisper's word boundaries are off by a tenth of a second or two, so a buffer cut
        at a word's end often starts with a fragment of it, which Whisper turns into a
        word ("It", "And") or a repeat of the prompt. Cut at the start of the word and
        force-decode it instead: Whisper can put nothing before a forced prefix.
        """
        if not self._prefix:
            return
        last = self._prefix[-1]
        self._retire(self._prefix[:-1])
        self._prefix = [last]
        self.buffer_start_s = max(self.buffer_start_s, last.start_s)

    def _heard_pending(self) -> int:
        """How many leading pending words ended well before the audio they were heard in.

        A word ending within `cut_margin_s` of the end of that audio may be cut short
        there ("wood" of "woodcutters"); with nothing committed in the buffer, the first
        words need `first_context_s` of audio after them.
        """
        margin = self.config.cut_margin_s
        if not self._prefix:
            margin = max(margin, self.config.first_context_s)
        heard_past = self._pending_audio_end_s - margin
        n = 0
        while n < len(self._pending) and self._pending[n].end_s <= heard_past:
            n += 1
        return n

    def _retire(self, words: list[Word]) -> None:
        """Words leave the buffer: they become prompt context."""
        self._history = (self._history + "".join(w.text for w in words))[-_HISTORY_CHARS:]

    def _open_segment(self) -> _OpenSegment:
        if self._segment is None:
            self._segment = _OpenSegment(self._next_segment_id)
            self._next_segment_id += 1
        return self._segment

    def _revise(self, now_unix: float) -> list[SegmentUpdate]:
        """A partial revision when the committed text or the unstable tail changed."""
        if self._segment is None and not self._pending:
            return []
        segment = self._open_segment()
        state = (tuple(segment.committed), tuple(self._pending))
        if segment.last_sent is not None and _same_text(segment.last_sent, state):
            return []
        segment.last_sent = state
        update = SegmentUpdate(
            segment_id=segment.segment_id,
            revision=segment.revision,
            status="partial",
            committed=state[0],
            partial=state[1],
            emitted_unix=now_unix,
        )
        segment.revision += 1
        return [update]

    def _close(self, now_unix: float, *, keep_pending: bool = False) -> list[SegmentUpdate]:
        segment = self._segment
        self._segment = None
        if segment is None or not segment.committed:
            return []
        update = SegmentUpdate(
            segment_id=segment.segment_id,
            revision=segment.revision,
            status="final",
            committed=tuple(segment.committed),
            partial=(),
            emitted_unix=now_unix,
        )
        if not keep_pending:
            self._pending = []
        return [update]


def _common_prefix_length(previous: list[Word], current: list[Word]) -> int:
    n = 0
    for old, new in zip(previous, current, strict=False):
        if normalise_word(old.text) != normalise_word(new.text):
            break
        n += 1
    return n


def _same_text(
    a: tuple[tuple[Word, ...], tuple[Word, ...]], b: tuple[tuple[Word, ...], tuple[Word, ...]]
) -> bool:
    return [w.text for w in a[0]] == [w.text for w in b[0]] and [w.text for w in a[1]] == [
        w.text for w in b[1]
    ]
