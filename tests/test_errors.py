"""The error tree: what each branch is, and how the CLI reports a bug."""

from __future__ import annotations

import asyncio

import pytest

from subtitled import cli
from subtitled.channel import Channel
from subtitled.errors import (
    ConfigError,
    InternalError,
    InvalidArgument,
    InvalidState,
    SubtitledError,
)


def test_a_component_given_a_bad_value_raises_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="capacity must be at least 1, got 0") as caught:
        Channel[int](0, "drop-oldest")
    # Still a ValueError for callers that catch that, and a SubtitledError for the CLI.
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, SubtitledError)
    assert not isinstance(caught.value, ConfigError)


def test_a_call_out_of_order_raises_invalid_state() -> None:
    async def put_after_close() -> None:
        channel = Channel[int](2, "back-pressure")
        channel.close()
        await channel.put(1)

    with pytest.raises(InvalidState, match="closed channel") as caught:
        asyncio.run(put_after_close())
    assert isinstance(caught.value, RuntimeError)


def test_the_cli_reports_an_internal_error_as_a_bug_with_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(_args: object) -> int:
        raise InvalidState("a stage was started twice")

    monkeypatch.setattr(cli, "_cmd_devices", broken)
    assert cli.main(["devices"]) == InternalError.exit_code == 70
    err = capsys.readouterr().err
    assert "internal error (a bug in subtitled" in err
    assert "a stage was started twice" in err
    assert "Traceback" in err
