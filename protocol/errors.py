"""One exception tree for the whole of xtsdb: engine, server and clients.

Every error that can cross the wire has a stable integer ``code``; the server
sends ``{"code": ..., "message": ...}`` and the client raises the class that
the code maps to, so ``except xtsdb.protocol.errors.InvalidInput`` works the
same in-process (engine) and over TCP (client).

Connection-level failures subclass the builtin ``ConnectionError`` (and
timeouts ``TimeoutError``) so retry logic can target them without knowing
xtsdb's classes.
"""

from __future__ import annotations


class XtsdbError(Exception):
    """Root of every xtsdb error."""

    code: int = 1
    name: str = "error"


# -- client mistakes: the request is refused and nothing changed ------------


class InvalidInput(XtsdbError, ValueError):
    """A request's arguments are wrong: types, lengths, ranges, NaN timestamps."""

    code = 10
    name = "invalid_input"


class ProtocolError(XtsdbError):
    """The bytes on the wire are not a valid xtsdb frame or message."""

    code = 11
    name = "protocol_error"


class FrameTooLarge(ProtocolError):
    """A frame's length prefix exceeds the configured limit (checked before buffering)."""

    code = 12
    name = "frame_too_large"


class UnknownOperation(ProtocolError):
    """The ``op`` of a request is not one the server knows."""

    code = 13
    name = "unknown_operation"


class UnsupportedVersion(ProtocolError):
    """Client and server share no protocol version."""

    code = 14
    name = "unsupported_version"


class NotFound(XtsdbError, LookupError):
    """A named thing (tag, ...) does not exist."""

    code = 20
    name = "not_found"


class AuthenticationFailed(XtsdbError):
    """No valid token was presented (or ``hello`` was skipped when a token is required)."""

    code = 30
    name = "authentication_failed"


class PermissionDenied(XtsdbError):
    """The token is valid but its role does not allow the operation."""

    code = 31
    name = "permission_denied"


# -- server-side conditions ---------------------------------------------------


class Overloaded(XtsdbError):
    """The server refuses work it cannot take now (connection cap, queue full)."""

    code = 40
    name = "overloaded"


class ShuttingDown(XtsdbError):
    """The server is stopping and takes no new requests."""

    code = 41
    name = "shutting_down"


class Unavailable(XtsdbError):
    """Cluster mode: the write log or the replicas a request needs cannot be reached now.

    A write answered with it was not acknowledged: it may or may not be stored."""

    code = 42
    name = "unavailable"


class StorageError(XtsdbError):
    """The storage engine could not do what was asked."""

    code = 50
    name = "storage_error"


class CorruptionError(StorageError):
    """A CRC or structural check failed: the data on disk is damaged.

    Never returned as data: a block whose CRC does not match raises this.
    """

    code = 51
    name = "corruption"


class DurabilityError(StorageError):
    """A write or fsync of the WAL failed; nothing in that batch was acknowledged.

    After this the engine refuses further writes until it is reopened, because
    the kernel may have dropped dirty pages it reported as failed (fsyncgate).
    """

    code = 52
    name = "durability"


class DiskFull(StorageError):
    """No space left on the device; the write was not acknowledged."""

    code = 53
    name = "disk_full"


class DataDirLocked(StorageError):
    """Another process holds the data directory's lock file."""

    code = 54
    name = "data_dir_locked"


class FormatVersionError(StorageError):
    """The data directory was written by an incompatible format version."""

    code = 55
    name = "format_version"


class EngineClosed(StorageError):
    """The engine was closed (or failed) and takes no more requests."""

    code = 56
    name = "engine_closed"


class InternalError(XtsdbError):
    """An unexpected failure inside the server; the message says what."""

    code = 90
    name = "internal"


# -- client-side transport failures (never sent over the wire) -------------


class XtsdbConnectionError(XtsdbError, ConnectionError):
    """The connection to the server failed or was closed."""

    code = 100
    name = "connection"


class XtsdbTimeout(XtsdbError, TimeoutError):
    """A request got no response within its timeout."""

    code = 101
    name = "timeout"


def _all_subclasses(cls: type[XtsdbError]) -> list[type[XtsdbError]]:
    out: list[type[XtsdbError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


ERROR_CLASSES: dict[int, type[XtsdbError]] = {XtsdbError.code: XtsdbError}
for _cls in _all_subclasses(XtsdbError):
    if _cls.code in ERROR_CLASSES:  # pragma: no cover - guards future edits
        raise RuntimeError(f"duplicate error code {_cls.code}")
    ERROR_CLASSES[_cls.code] = _cls


def error_from_code(code: int, message: str) -> XtsdbError:
    """The exception instance for a wire error ``code`` (unknown codes map to the root)."""
    return ERROR_CLASSES.get(code, XtsdbError)(message)
