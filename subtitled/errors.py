"""The error tree. Outer layers (the CLI, the server) turn these into messages and exit codes.

SubtitledError
 ├── ConfigError        a config file key or flag is unknown or has a bad value
 │    └── PortInUse         the server's host:port cannot be bound
 ├── CaptureError       an audio source cannot be opened or read
 │    ├── DeviceNotFound    no capture device matches the name or index
 │    └── AudioDecodeError  a file is missing or is not audio PyAV can decode
 ├── ModelError         a model is missing, corrupt, or does not match its manifest
 └── ProtocolError      a client sent something the wire protocol does not allow
"""

from __future__ import annotations


class SubtitledError(Exception):
    """Root of every error subtitled raises on purpose."""

    exit_code = 1


class ConfigError(SubtitledError):
    """A configuration key or command-line value is unknown or invalid."""

    exit_code = 2


class PortInUse(ConfigError):
    """The server's host and port cannot be bound (another process holds the port)."""


class CaptureError(SubtitledError):
    """An audio source cannot be opened or read."""

    exit_code = 3


class DeviceNotFound(CaptureError):
    """No capture device matches the requested name or index."""


class AudioDecodeError(CaptureError):
    """A file is missing, unreadable, or holds no audio stream."""


class ModelError(SubtitledError):
    """A model is missing, corrupt, or does not match its manifest."""

    exit_code = 4


class ProtocolError(SubtitledError):
    """A client message violates the wire protocol."""
