"""subtitled: local, offline, real-time speech-translation subtitles."""

__version__ = "0.1.0"

SAMPLE_RATE_HZ = 16_000
"""The one sample rate the pipeline runs at after capture (Whisper's)."""
