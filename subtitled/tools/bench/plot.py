"""The report's figure: latency over the audio timeline, and its distribution.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend
state, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from subtitled.errors import ConfigError
from subtitled.tools.bench.report import BenchResult, TimedPoint

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Floats = npt.NDArray[np.float64]

COMMITTED = "#1f77b4"
PARTIAL = "#ff7f0e"
LAG = "#2ca02c"


def write_plot(result: BenchResult, path: Path) -> None:
    """Save a PNG: top, latency per word against audio time (with the ASR's lag);
    bottom, the latency histogram and its cumulative distribution."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2, height_ratios=(3, 2))
    timeline = fig.add_subplot(grid[0, :])
    histogram = fig.add_subplot(grid[1, 0])
    cdf = fig.add_subplot(grid[1, 1])

    committed = _xy(result.latencies)
    partial = _xy(result.partial_latencies)
    lags = _binned_max(*_xy(result.lags), bins=400)
    dot = 6 if len(committed[0]) < 1000 else 3
    timeline.scatter(partial[0], partial[1], s=dot, color=PARTIAL, alpha=0.35, linewidths=0,
                     label="first shown (partial)")
    timeline.scatter(committed[0], committed[1], s=dot, color=COMMITTED, alpha=0.45,
                     linewidths=0, label="committed")
    if len(lags[0]):
        timeline.plot(lags[0], lags[1], color=LAG, linewidth=0.8,
                      label="ASR lag behind real time (max per bin)")
    for (x, y), colour, label in ((committed, COMMITTED, "committed"),
                                  (partial, PARTIAL, "first shown")):
        if len(x) >= 20:
            mx, my = _rolling_median(x, y, window=max(25, len(x) // 100))
            timeline.plot(mx, my, color="white", linewidth=3.5, zorder=3)
            timeline.plot(mx, my, color=colour, linewidth=1.8, zorder=4,
                          label=f"{label}, rolling median")
    timeline.set_xlabel("audio time (s)")
    timeline.set_ylabel("latency (s)")
    timeline.set_ylim(bottom=min(0.0, _min(committed[1], partial[1])))
    timeline.grid(alpha=0.3)
    _legend(timeline, loc="upper left", fontsize=8, markerscale=2, ncols=2)

    top = max(_max(committed[1], partial[1]), 0.5)
    bins = np.linspace(min(0.0, _min(committed[1], partial[1])), top, 40).tolist()
    histogram.hist(partial[1], bins=bins, color=PARTIAL, alpha=0.5, label="first shown")
    histogram.hist(committed[1], bins=bins, color=COMMITTED, alpha=0.6, label="committed")
    for p, colour in ((result.latency, COMMITTED), (result.partial_latency, PARTIAL)):
        if p is not None:
            histogram.axvline(p.p50_ms / 1000, color=colour, linestyle="--", linewidth=1)
            histogram.axvline(p.p90_ms / 1000, color=colour, linestyle=":", linewidth=1)
    histogram.set_xlabel("latency (s)   (dashed p50, dotted p90)")
    histogram.set_ylabel("words")
    _legend(histogram, fontsize=8)
    histogram.grid(alpha=0.3)

    for values, colour, label in ((committed[1], COMMITTED, "committed"),
                                  (partial[1], PARTIAL, "first shown")):
        if len(values):
            ordered = np.sort(values)
            cdf.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered),
                     color=colour, label=label)
    cdf.set_xlabel("latency (s)")
    cdf.set_ylabel("share of words at or below")
    cdf.set_ylim(0, 1)
    cdf.grid(alpha=0.3)
    _legend(cdf, fontsize=8, loc="lower right")

    fig.suptitle(_title(result), fontsize=11)
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise ConfigError(f"cannot write the plot to {path}: {exc}") from exc


def _legend(axes: Axes, **options: Any) -> None:
    """A legend, unless nothing was drawn (matplotlib warns about an empty one)."""
    if axes.get_legend_handles_labels()[0]:
        axes.legend(**options)


def _title(result: BenchResult) -> str:
    info = result.info
    parts = [
        f"{len(result.items)} items, {result.audio_s / 60:.1f} min, {info.clock} clock"
        + (", long-form" if info.long_form else ""),
        f"WER {result.wer:.3f}" if result.wer is not None else "WER n/a",
    ]
    if result.offline_wer is not None:
        parts.append(f"offline {result.offline_wer:.3f}")
    if result.latency is not None:
        parts.append(f"latency p50 {result.latency.p50_ms / 1000:.2f} s, "
                     f"p90 {result.latency.p90_ms / 1000:.2f} s")
    if result.rtf is not None:
        parts.append(f"RTF {result.rtf:.2f}")
    head = f"subtitled bench: {info.asr_model}, step {info.step_s:g} s, " + parts[0]
    return head + "\n" + " · ".join(parts[1:])


def _xy(points: Sequence[TimedPoint]) -> tuple[Floats, Floats]:
    x = np.array([p.timeline_s for p in points], dtype=np.float64)
    y = np.array([p.value for p in points], dtype=np.float64)
    return x, y


def _rolling_median(
    x: Floats, y: Floats, window: int
) -> tuple[Floats, Floats]:
    order = np.argsort(x)
    x, y = x[order], y[order]
    half = window // 2
    medians = np.array([np.median(y[max(0, i - half): i + half + 1]) for i in range(len(y))])
    return x, medians


def _binned_max(x: Floats, y: Floats, bins: int) -> tuple[Floats, Floats]:
    """The largest y in each of `bins` equal spans of x (a long run has ~10^4 samples)."""
    if len(x) <= bins:
        return x, y
    edges = np.linspace(float(x.min()), float(x.max()), bins + 1)
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
    peaks = np.full(bins, -np.inf)
    np.maximum.at(peaks, which, y)
    kept = np.isfinite(peaks)
    centres = (edges[:-1] + edges[1:]) / 2
    return centres[kept], peaks[kept]


def _min(*arrays: Floats) -> float:
    return min((float(a.min()) for a in arrays if len(a)), default=0.0)


def _max(*arrays: Floats) -> float:
    return max((float(a.max()) for a in arrays if len(a)), default=0.0)
