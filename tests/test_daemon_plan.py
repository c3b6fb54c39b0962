"""The daemon's pure decisions, with no event loop of its own: what a reload changes
(`plan_reload`), and what a second stop request does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from subtitled.capture import parse_source
from subtitled.config import Config, replace_path
from subtitled.daemon import Daemon, RunOptions, plan_reload


def _with(*sets: tuple[str, object]) -> Config:
    config = Config()
    for key, value in sets:
        config = replace_path(config, key, value)
    return config


@pytest.mark.parametrize(
    ("change", "model", "source", "translation", "server", "power"),
    [
        ((), False, False, False, False, True),
        ((("asr.threads", 2),), True, False, False, False, True),
        ((("asr.model", "base"),), True, False, False, False, True),
        ((("streaming.step_s", 0.4),), False, False, False, False, True),
        ((("capture.source", "monitor"),), False, True, False, False, True),
        ((("translation.targets", "es"),), False, False, True, False, True),
        ((("translation.targets", "none"),), False, False, True, False, True),
        ((("server.port", 9001),), False, False, False, True, True),
        ((("power.profile", "battery"),), False, False, False, False, False),
        # German speech shown in English: Whisper's translate task takes the 'en' target
        # away from the translation model, so both the ASR and translation change.
        (
            (("asr.model", "base"), ("asr.language", "de"), ("translation.targets", "en")),
            True, False, True, False, True,
        ),
    ],
)
def test_plan_reload(
    change: tuple[tuple[str, object], ...],
    model: bool, source: bool, translation: bool, server: bool, power: bool,
) -> None:
    plan = plan_reload(Config(), _with(*change))
    assert (plan.new_asr_model, plan.source_changed, plan.translation_changed,
            plan.server_changed, plan.watch_power) == (model, source, translation, server, power)


def test_the_plan_runs_the_new_whisper_settings() -> None:
    new = _with(("asr.model", "base"), ("asr.language", "de"), ("translation.targets", "en"))
    plan = plan_reload(Config(), new)
    assert plan.asr.model == "base"
    assert plan.asr.task == "translate"


def test_a_second_stop_request_cancels_the_main_task_without_draining(tmp_path: Path) -> None:
    daemon = Daemon(Config(), RunOptions(source=parse_source(f"file:{tmp_path / 'x.wav'}")))

    async def main() -> tuple[bool, bool]:
        daemon.install_signal_handlers()
        forever = asyncio.Event()
        asyncio.get_running_loop().call_soon(daemon.request_stop)
        asyncio.get_running_loop().call_soon(daemon.request_stop)
        try:
            await forever.wait()
        except asyncio.CancelledError:
            return True, daemon.force_exit
        return False, daemon.force_exit

    cancelled, forced = asyncio.run(main())
    assert cancelled and forced
    assert daemon.stop_requested


def test_one_stop_request_drains(tmp_path: Path) -> None:
    daemon = Daemon(Config(), RunOptions(source=parse_source(f"file:{tmp_path / 'x.wav'}")))

    async def main() -> None:
        daemon.install_signal_handlers()
        daemon.request_stop()
        await asyncio.sleep(0)

    asyncio.run(main())
    assert daemon.stop_requested and not daemon.force_exit


@pytest.mark.slow
def test_a_stop_during_start_up_ends_the_run_cleanly() -> None:
    """SIGTERM while the models load (the CLI handles signals from before `start`): the
    run begins stopped, drains nothing, and returns; nothing is killed."""
    from speech import clips

    clip = next(c for c in clips() if c.path.name == "LJ001-0001.flac")
    config = replace_path(Config(), "translation.targets", "none")
    daemon = Daemon(config, RunOptions(source=parse_source(f"file:{clip.path}"),
                                       realtime=True, serve=False))

    async def main() -> float:
        daemon.install_signal_handlers()
        daemon.request_stop()  # arrives before the models are loaded
        await daemon.start()
        stats = await asyncio.wait_for(daemon.serve(), timeout=30)
        await daemon.close()
        return stats.audio_s

    audio_s = asyncio.run(main())
    assert daemon.stop_requested and not daemon.force_exit
    assert audio_s < 1.0  # a real-time file run stopped at once, not played to its end
