"""The error tree. Outer layers (the CLI, the server) turn these into messages and exit codes.

SubtitledError
 ├── ConfigError        a config file key or flag is unknown or has a bad value
 │    └── PortInUse         the server's host:port cannot be bound
 ├── CaptureError       an audio source cannot be opened or read
 │    ├── DeviceNotFound    no capture device matches the name or index
 │    └── AudioDecodeError  a file is missing or is not audio PyAV can decode
 ├── ModelError         a model is missing, corrupt, or does not match its manifest
 ├── ProtocolError      a client sent something the wire protocol does not allow
 └── InternalError      a bug in subtitled, not in its input (exit 70, EX_SOFTWARE)
      ├── InvalidArgument   a component made or called with a value it does not take
      │                     (also a ValueError)
      └── InvalidState      a call out of order: start twice, put on a closed channel
                            (also a RuntimeError)

What a user can set is checked where it is read and raised as a `ConfigError` naming the
key; an `InternalError` from a component means a caller skipped that check.
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


class InternalError(SubtitledError):
    """A broken invariant inside subtitled: a bug, not bad input."""

    exit_code = 70


class InvalidArgument(InternalError, ValueError):
    """A component was made or called with a value it does not take."""


class InvalidState(InternalError, RuntimeError):
    """A call out of order (started twice, used before start, put on a closed channel)."""
