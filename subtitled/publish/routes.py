"""HTTP side of the subtitle server: static files, host/origin checks, responses.

Pure functions (no sockets); `server.py` calls them from `process_request`.
"""

from __future__ import annotations

import email.utils
import http
import mimetypes
from pathlib import Path
from urllib.parse import unquote, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

from subtitled import __version__
from subtitled.netguard import is_loopback

STATIC_PREFIX = "/static/"
OVERLAY_FILE = "overlay.html"
MAX_STATIC_BYTES = 4 * 1024 * 1024
SERVER_HEADER = f"subtitled/{__version__}"



def default_static_dir() -> Path:
    """The overlay page and its assets, shipped inside the package."""
    return Path(__file__).resolve().parent / "static"


def static_target(url_path: str) -> str | None:
    """The static file a URL path names, relative to the static folder, or None.

    `/overlay` names the overlay page; `/static/NAME` a file of the folder.
    The path is percent-decoded here, so that `%2e%2e` is judged like `..`.
    """
    if url_path in ("/overlay", "/overlay/"):
        return OVERLAY_FILE
    if url_path.startswith(STATIC_PREFIX):
        try:
            return unquote(url_path[len(STATIC_PREFIX) :], errors="strict")
        except UnicodeDecodeError:
            return ""  # refused by resolve_static
    return None


def resolve_static(static_dir: Path, relative: str) -> Path | None:
    """The file `relative` names inside `static_dir`, or None if it would escape it.

    Refuses empty, `.`, `..` and hidden segments, backslashes and NUL bytes,
    then checks that the resolved path (symlinks followed) is still inside.
    """
    if not relative or "\\" in relative or "\x00" in relative:
        return None
    parts = relative.split("/")
    if any(not part or part.startswith(".") for part in parts):
        return None
    root = static_dir.resolve()
    candidate = root.joinpath(*parts).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


def content_type(path: Path) -> str:
    guessed, _ = mimetypes.guess_type(path.name)
    kind = guessed or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        kind += "; charset=utf-8"
    return kind


def is_loopback_host(host: str) -> bool:
    """Whether a bind address or host name is this machine only (`netguard.is_loopback`)."""
    return is_loopback(host)


def _host_name(host_header: str) -> str:
    """`Host` header without its port: `127.0.0.1:8765` -> `127.0.0.1`, `[::1]:1` -> `::1`."""
    parsed = urlsplit(f"//{host_header}")
    return parsed.hostname or ""


def host_allowed(host_header: str | None, *, bound_to_loopback: bool) -> bool:
    """Refuse DNS rebinding: a loopback server answers only to loopback host names."""
    if not bound_to_loopback or host_header is None:
        return True
    try:
        return is_loopback_host(_host_name(host_header))
    except ValueError:  # a malformed port or bracket
        return False


def origin_allowed(origin: str | None, host_header: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a browser page from `origin` may open the feed.

    Non-browser clients send no Origin and are allowed. A browser page must be
    served by this server (same host and port as the request's Host) or listed in
    `allowed` (`"*"` allows any). This keeps a web page open in the user's browser
    from reading a confidential meeting's captions off the loopback port.
    """
    if origin is None or "*" in allowed or origin in allowed:
        return True
    parsed = urlsplit(origin)
    if parsed.scheme not in ("http", "https") or host_header is None:
        return False
    return parsed.netloc.lower() == host_header.lower()


def response(
    status: http.HTTPStatus,
    body: bytes,
    content_type_value: str,
    *,
    cache: bool = False,
) -> Response:
    """A complete HTTP response for `process_request` to return instead of a handshake."""
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type_value),
            ("Cache-Control", "no-cache" if cache else "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def text_response(status: http.HTTPStatus, text: str) -> Response:
    return response(status, (text + "\n").encode(), "text/plain; charset=utf-8")
