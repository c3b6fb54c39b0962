"""Power awareness (`subtitled.power`): the power source from a power_supply tree, the
profile it calls for, and a running daemon switching profile as the tree changes."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from speech import clips, wer

from subtitled.config import Config, with_overrides
from subtitled.errors import ConfigError
from subtitled.power import PowerConfig, choose_profile, read_power_source


def supply(root: Path, name: str, **files: str) -> Path:
    """One /sys/class/power_supply/NAME entry with `files` (type, online, status, scope)."""
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    for key, value in files.items():
        (path / key).write_text(value + "\n")
    return path


@pytest.mark.parametrize(
    ("supplies", "expected"),
    [
        ({}, "unknown"),
        ({"AC": {"type": "Mains", "online": "1"}}, "ac"),
        ({"AC": {"type": "Mains", "online": "0"}}, "ac"),  # no battery: still a mains machine
        ({"AC": {"type": "Mains", "online": "0"},
          "BAT0": {"type": "Battery", "status": "Discharging"}}, "battery"),
        ({"AC": {"type": "Mains", "online": "1"},
          "BAT0": {"type": "Battery", "status": "Charging"}}, "ac"),
        ({"ucsi-source-psy-USBC000:001": {"type": "USB", "online": "1"},
          "BAT0": {"type": "Battery", "status": "Discharging"}}, "ac"),
        ({"BAT1": {"type": "Battery", "status": "Discharging"}}, "battery"),
        ({"BAT0": {"type": "Battery", "status": "Full"}}, "unknown"),
        # A wireless mouse running on its own battery says nothing about the machine.
        ({"AC": {"type": "Mains", "online": "1"},
          "hidpp_battery_0": {"type": "Battery", "status": "Discharging", "scope": "Device"}},
         "ac"),
        ({"hidpp_battery_0": {"type": "Battery", "status": "Discharging", "scope": "Device"}},
         "unknown"),
    ],
)
def test_power_source_from_the_supply_tree(
    tmp_path: Path, supplies: dict[str, dict[str, str]], expected: str
) -> None:
    for name, files in supplies.items():
        supply(tmp_path, name, **files)
    assert read_power_source(tmp_path) == expected


def test_a_missing_or_unreadable_tree_is_unknown(tmp_path: Path) -> None:
    assert read_power_source(tmp_path / "absent") == "unknown"
    (tmp_path / "BAT0").mkdir()  # no files in it
    assert read_power_source(tmp_path) == "unknown"


@pytest.mark.parametrize(
    ("setting", "source", "profile"),
    [
        ("auto", "battery", "battery"),
        ("auto", "ac", "performance"),
        ("auto", "unknown", "performance"),
        ("performance", "battery", "performance"),
        ("battery", "ac", "battery"),
    ],
)
def test_profile_choice(setting: str, source: str, profile: str) -> None:
    assert choose_profile(setting, source) == profile  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("power.profile=eco", "power.profile"),
        ("power.poll_s=0", "power.poll_s"),
        ("power.battery_step_s=5", "power.battery_step_s"),
        ("power.battery_translation_threads=0", "power.battery_translation_threads"),
    ],
)
def test_bad_power_settings_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        with_overrides(Config(), {}, [override])


@pytest.mark.parametrize(
    ("fewer", "configured", "threads"), [(1, 2, 1), (1, 0, 1), (4, 2, 2), (2, 0, 2)]
)
def test_battery_threads(fewer: int, configured: int, threads: int) -> None:
    """Never more than configured; 0 (ONNX Runtime's default: all cores) counts as more."""
    power = PowerConfig(battery_translation_threads=fewer)
    assert power.battery_threads(configured) == threads


def test_bench_runs_the_battery_profile_as_the_daemon_does() -> None:
    import argparse

    from subtitled.tools.bench.cli import load_bench_config

    args = argparse.Namespace(config=None, asr_model=None, threads=None, target="de",
                              translation_model=None, set=[], profile="battery")
    config = load_bench_config(args)
    assert config.streaming.step_s == config.power.battery_step_s == 1.0
    assert config.translation.threads == 1


def test_the_config_reads_the_power_section() -> None:
    config = with_overrides(Config(), {}, ["power.supply_path=/tmp/ps", "power.poll_s=0.5"])
    assert config.power == PowerConfig(supply_path=Path("/tmp/ps"), poll_s=0.5)


# --------------------------------------------------------------------------- the daemon


def _health(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url.replace("ws://", "http://") + "healthz", timeout=5) as r:
        result: dict[str, object] = json.loads(r.read())
    return result


@pytest.mark.slow
def test_a_running_daemon_follows_the_power_source_and_loses_nothing(tmp_path: Path) -> None:
    """Unplugged and plugged in again under a running daemon (a fake power_supply tree,
    polled every 0.2 s): the profile follows within a poll, the ASR steps at the battery
    step meanwhile, /healthz and /metrics say so, and every word of the clip still comes
    out in final segments, in order, once. The translation model, on 2 threads on AC, is
    reloaded on 1 on battery and on 2 again after (`/healthz` says which is in use)."""
    from subtitled.capture import parse_source
    from subtitled.daemon import Daemon, RunOptions
    from subtitled.events import SegmentUpdate

    clip = next(c for c in clips() if c.path.name == "LJ001-0001.flac")  # 9.7 s
    tree = tmp_path / "power_supply"
    ac = supply(tree, "AC", type="Mains", online="1")
    supply(tree, "BAT0", type="Battery", status="Charging")
    config = with_overrides(Config(), {}, [
        f"power.supply_path={tree}", "power.poll_s=0.2", "server.port=0",
    ])
    finals: list[SegmentUpdate] = []
    seen: list[tuple[float, str, float]] = []  # (time, profile, ASR step)

    async def scenario() -> None:
        options = RunOptions(source=parse_source(f"file:{clip.path}"), realtime=True)
        daemon = Daemon(config, options, sinks=[lambda u: finals.append(u)
                                                if u.status == "final" else None])
        await daemon.start()
        assert daemon.server is not None
        url = daemon.server.url

        async def unplug_then_plug() -> None:
            await asyncio.sleep(2.0)
            (ac / "online").write_text("0\n")
            (tree / "BAT0" / "status").write_text("Discharging\n")
            await asyncio.sleep(1.0)
            seen.append((time.monotonic(), str(daemon.profile), _asr_step(daemon)))
            health = await _health_when(url, lambda h: h["power"].get("translation_threads") == 1)
            assert health["power"] == {
                "profile": "battery", "source": "battery", "translation_threads": 1
            }, health
            metrics = daemon.server.registry.get_sample_value(  # type: ignore[union-attr]
                "subtitled_power_profile", {"profile": "battery", "source": "battery"})
            assert metrics == 1
            await asyncio.sleep(2.0)
            (ac / "online").write_text("1\n")
            await asyncio.sleep(1.0)
            seen.append((time.monotonic(), str(daemon.profile), _asr_step(daemon)))
            health = await _health_when(url, lambda h: h["power"].get("translation_threads") == 2)
            assert health["power"] == {
                "profile": "performance", "source": "ac", "translation_threads": 2
            }, health

        assert (daemon.profile, daemon.power_source) == ("performance", "ac")
        health = await _health_when(url, lambda h: h["power"].get("translation_threads") == 2)
        assert health["power"]["translation_threads"] == 2, health
        switching = asyncio.create_task(unplug_then_plug())
        await daemon.serve()
        await switching
        await daemon.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))
    assert [(p, s) for _, p, s in seen] == [("battery", 1.0), ("performance", 0.5)]
    # Every segment final once, in order, and the words are the clip's: a lost or doubled
    # stretch across a switch would be several words (tiny.en streams this clip at about
    # 0.05; whole-clip decoding 0.04).
    ids = [f.segment_id for f in finals]
    assert ids == sorted(set(ids))
    text = " ".join(f.text for f in finals)
    assert wer([clip.transcript], [text]) <= 0.12, text


async def _health_when(url: str, condition: Any, timeout_s: float = 20.0) -> Any:
    """/healthz once `condition` holds of it (the translation model loads in the
    background); the last answer fails the test if it never does."""
    deadline = time.monotonic() + timeout_s
    while True:
        health = await asyncio.to_thread(_health, url)
        if (health.get("power") and condition(health)) or time.monotonic() > deadline:
            return health
        await asyncio.sleep(0.1)


def _asr_step(daemon: object) -> float:
    pipeline = getattr(daemon, "_pipeline", None)
    asr = pipeline.asr if pipeline is not None else getattr(daemon, "_asr", None)
    return float(asr.config.step_s) if asr is not None else float("nan")
