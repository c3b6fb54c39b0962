"""Which language the speaker speaks: a configured one, or Whisper's language ID.

With `asr.language = "auto"` the language is identified from the audio of each
transcription (one decoder step on the encoder output the transcription computes
anyway) until a buffer of `LanguageConfig.detect_s` has been heard; then it is kept.
After `LanguageConfig.pause_s` without a word (a new speaker, a new programme) it is
identified again. Pure: the transcriber calls `LanguageTracker` with stream times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from subtitled.errors import ConfigError

WHISPER_LANGUAGES = (
    "af", "am", "ar", "as", "az", "ba", "be", "bg", "bn", "bo", "br", "bs", "ca", "cs",
    "cy", "da", "de", "el", "en", "es", "et", "eu", "fa", "fi", "fo", "fr", "gl", "gu",
    "ha", "haw", "he", "hi", "hr", "ht", "hu", "hy", "id", "is", "it", "ja", "jw", "ka",
    "kk", "km", "kn", "ko", "la", "lb", "ln", "lo", "lt", "lv", "mg", "mi", "mk", "ml",
    "mn", "mr", "ms", "mt", "my", "ne", "nl", "nn", "no", "oc", "pa", "pl", "ps", "pt",
    "ro", "ru", "sa", "sd", "si", "sk", "sl", "sn", "so", "sq", "sr", "su", "sv", "sw",
    "ta", "te", "tg", "th", "tk", "tl", "tr", "tt", "uk", "ur", "uz", "vi", "yi", "yo",
    "zh", "yue",
)  # fmt: skip
"""Whisper's language codes (faster_whisper.tokenizer._LANGUAGE_CODES; 'yue': large-v3 only)."""
AUTO = "auto"


@dataclass(frozen=True)
class LanguageConfig:
    """Language identification (`asr.language = "auto"`)."""

    detect_s: float = 3.0
    """Audio a buffer must hold before its identified language is kept. Whisper's
    language ID on a second of speech is a guess; the transcriptions before this use
    each buffer's own guess, and commits need two agreeing transcriptions anyway."""
    min_s: float = 1.0
    """Shorter buffers are not identified: on the FLEURS clips, 0.8 s of French was
    identified as Korean (p=0.89), 1.3 s as French (p=0.97). Until the first
    identification, transcriptions return no words."""
    pause_s: float = 10.0
    """A buffer starting this long after the last word heard is identified afresh."""

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.detect_s <= 30:
            raise ConfigError(
                f"asr.language_id: min_s {self.min_s} and detect_s {self.detect_s} are "
                "invalid; expected 0 < min_s <= detect_s <= 30"
            )
        if self.pause_s <= 0:
            raise ConfigError(f"asr.language_id.pause_s: {self.pause_s} is invalid; expected > 0")


class LanguageTracker:
    """The language for the next transcription, and when to identify it again."""

    def __init__(self, language: str, config: LanguageConfig | None = None) -> None:
        self.config = config or LanguageConfig()
        self.auto = language == AUTO
        self.language: str | None = None if self.auto else language
        """The configured language, or the last one identified (None: none yet)."""
        self.probability = 1.0
        self._kept = not self.auto
        self._last_word_end_s = -math.inf

    def needs_detection(self, offset_s: float, audio_s: float) -> bool:
        """True when the buffer of `audio_s` seconds starting at `offset_s` should be
        identified (it is long enough, and no language is kept)."""
        if self.auto and offset_s - self._last_word_end_s >= self.config.pause_s:
            self._kept = False
        return not self._kept and audio_s >= self.config.min_s

    def detected(self, language: str, probability: float, audio_s: float) -> None:
        """Language ID said `language` on a buffer of `audio_s` seconds."""
        self.language = language
        self.probability = probability
        if audio_s >= self.config.detect_s:
            self._kept = True

    def heard(self, last_word_end_s: float) -> None:
        """A transcription produced words ending at `last_word_end_s` (stream time)."""
        self._last_word_end_s = max(self._last_word_end_s, last_word_end_s)
