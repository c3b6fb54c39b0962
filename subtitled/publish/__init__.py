"""publish: the last pipeline stage, subtitles out to clients.

`SubtitleServer` fans `SegmentUpdate`s and `StatusUpdate`s out over WebSocket
(wire format: `PROTOCOL.md`, core: `protocol.py`) and serves the overlay page,
`/healthz` and `/metrics` on the same port.
"""

from subtitled.publish.protocol import PROTOCOL_VERSION, Feed, ServiceInfo
from subtitled.publish.server import ServerConfig, SubtitleServer

__all__ = ["PROTOCOL_VERSION", "Feed", "ServerConfig", "ServiceInfo", "SubtitleServer"]
