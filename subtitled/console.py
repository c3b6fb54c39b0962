"""Captions in the terminal, for `subtitled demo` and `subtitled run --print`.

On a terminal the open segment is redrawn in place (committed words plain, the
unstable tail dimmed) and each final segment is printed on its own line. When the
output is not a terminal only final segments are printed, one per line.
"""

from __future__ import annotations

import shutil
import sys
from typing import TextIO

from subtitled.events import SegmentUpdate

DIM = "\x1b[2m"
RESET = "\x1b[0m"
CLEAR_LINE = "\r\x1b[2K"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes):02d}:{secs:04.1f}"


class ConsoleCaptions:
    """A segment sink that writes captions to a text stream."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self._drawn = False

    def __call__(self, update: SegmentUpdate) -> None:
        stamp = f"[{_clock(update.audio_start_s)}]"
        if update.status == "final":
            self._clear()
            line = f"{stamp} {update.text}"
            for lang, translation in update.translations.items():
                line += f"\n{' ' * len(stamp)} {lang}: {translation.stable}{translation.unstable}"
            self.stream.write(line + "\n")
        elif self.live:
            width = shutil.get_terminal_size((100, 20)).columns
            committed = update.committed_text
            partial = "".join(w.text for w in update.partial).strip()
            text = f"{stamp} {committed}"
            # Keep the redrawn line to one terminal row: show its end.
            room = width - len(text) - 2
            if room < len(partial):
                partial = "…" + partial[-max(room - 1, 0) :] if room > 1 else ""
            if len(text) > width - 1:
                text = "…" + text[-(width - 2) :]
                partial = ""
            self.stream.write(f"{CLEAR_LINE}{text} {DIM}{partial}{RESET}")
            self._drawn = True
        self.stream.flush()

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(CLEAR_LINE)
            self._drawn = False
