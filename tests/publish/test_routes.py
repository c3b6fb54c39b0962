"""HTTP helpers: static file resolution without path escape, host and origin checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from subtitled.publish.routes import (
    OVERLAY_FILE,
    default_static_dir,
    host_allowed,
    origin_allowed,
    resolve_static,
    static_target,
)


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    root = tmp_path / "static"
    (root / "css").mkdir(parents=True)
    (root / "overlay.html").write_text("<p>hi</p>")
    (root / "css" / "a.css").write_text("p {}")
    (root / ".secret").write_text("no")
    (tmp_path / "outside.txt").write_text("no")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    return root


@pytest.mark.parametrize(
    ("url_path", "expected"),
    [
        ("/overlay", OVERLAY_FILE),
        ("/overlay/", OVERLAY_FILE),
        ("/static/css/a.css", "css/a.css"),
        ("/static/%2e%2e/x", "../x"),
        ("/static/%ff", ""),
        ("/overlay.html", None),
        ("/", None),
    ],
)
def test_static_target(url_path: str, expected: str | None) -> None:
    assert static_target(url_path) == expected


@pytest.mark.parametrize(
    ("relative", "found"),
    [
        ("overlay.html", True),
        ("css/a.css", True),
        ("", False),
        ("css", False),  # a folder, not a file
        ("missing.html", False),
        ("../outside.txt", False),
        ("css/../../outside.txt", False),
        ("./overlay.html", False),
        ("css//a.css", False),
        ("/etc/passwd", False),
        ("..\\outside.txt", False),
        ("overlay.html\x00.png", False),
        (".secret", False),
        ("link.txt", False),  # a symlink pointing outside
    ],
)
def test_resolve_static_refuses_escapes(static_dir: Path, relative: str, found: bool) -> None:
    resolved = resolve_static(static_dir, relative)
    assert (resolved is not None) is found
    if resolved is not None:
        assert resolved.is_relative_to(static_dir.resolve())


def test_the_package_ships_the_overlay() -> None:
    assert resolve_static(default_static_dir(), OVERLAY_FILE) is not None


@pytest.mark.parametrize(
    ("host", "loopback", "allowed"),
    [
        ("127.0.0.1:8765", True, True),
        ("localhost:8765", True, True),
        ("[::1]:8765", True, True),
        ("127.0.0.2", True, True),
        (None, True, True),
        ("evil.example:8765", True, False),  # DNS rebinding
        ("", True, False),
        ("[bad", True, False),
        ("evil.example:8765", False, True),  # bound to the LAN: any name
    ],
)
def test_host_allowed(host: str | None, loopback: bool, allowed: bool) -> None:
    assert host_allowed(host, bound_to_loopback=loopback) is allowed


@pytest.mark.parametrize(
    ("origin", "host", "extra", "allowed"),
    [
        (None, "127.0.0.1:8765", (), True),  # not a browser
        ("http://127.0.0.1:8765", "127.0.0.1:8765", (), True),  # our own overlay page
        ("http://LOCALHOST:8765", "localhost:8765", (), True),
        ("http://127.0.0.1:9999", "127.0.0.1:8765", (), False),  # another local site
        ("https://evil.example", "127.0.0.1:8765", (), False),
        ("null", "127.0.0.1:8765", (), False),
        ("null", "127.0.0.1:8765", ("null",), True),
        ("https://obs.example", "127.0.0.1:8765", ("https://obs.example",), True),
        ("https://evil.example", "127.0.0.1:8765", ("*",), True),
        ("http://127.0.0.1:8765", None, (), False),
    ],
)
def test_origin_allowed(
    origin: str | None, host: str | None, extra: tuple[str, ...], allowed: bool
) -> None:
    assert origin_allowed(origin, host, extra) is allowed
