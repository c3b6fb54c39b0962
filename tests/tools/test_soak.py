"""A short real soak: the demo through a real daemon with clients (slow)."""

from __future__ import annotations

import asyncio

import pytest

from subtitled.tools.soak import soak


@pytest.mark.slow
def test_a_short_real_soak() -> None:
    """Two minutes of the demo through a real daemon with four clients, one resuming."""
    report = asyncio.run(soak(None, minutes=2.0, clients=4, sample_s=5.0, resume_every_s=20.0))
    delivery = report["delivery"]
    assert delivery["finals_journaled"] > 5
    assert delivery["reconnects"] >= 3
    assert report["pass"]["delivery"], delivery
    assert report["latency"]["words_first"] > 20
    assert report["daemon_exit_code"] == 0
