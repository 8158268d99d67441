"""The core operations, declared: hello, ping, write, query, last, flush, stats, backup.

Each op is one :class:`~.declare.Op` and the dataclasses of its request and
response; the field kinds (:mod:`.wire`) hold the wire types and checks. The
client builds and parses with the op, the server parses and answers with it,
and docs/protocol.md's tables are generated from it (:mod:`.opdocs`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .declare import Empty, Message, Op, Role, message
from .errors import (
    AuthenticationFailed,
    FrameTooLarge,
    InvalidInput,
    NotFound,
    Overloaded,
    PermissionDenied,
    StorageError,
    UnsupportedVersion,
    XtsdbError,
    error_from_code,
)
from .messages import (
    Q_DTYPE,
    SUPPORTED_VERSIONS,
    TAGS_DTYPE,
    TS_DTYPE,
    UINT32_MAX,
    VALUES_DTYPE,
    error_response,
    int_field,
)
from .wire import (
    Array,
    Bool,
    Counts,
    Int,
    IntList,
    Kind,
    Lengths,
    Map,
    OneTagOrIds,
    Str,
    Tag,
    TagIds,
    arg,
)

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
UInt8Array = npt.NDArray[np.uint8]
UInt32Array = npt.NDArray[np.uint32]
TagRef = int | str

# Errors any op that reads or writes stored data may answer.
STORAGE_ERRORS: tuple[type[XtsdbError], ...] = (StorageError,)

# -- hello ----------------------------------------------------------------------


@message
class Hello(Message):
    versions: list[int] = arg(IntList(), "protocol versions the client speaks")
    token: str | None = arg(Str(), "authentication token", default=None)
    client: str | None = arg(Str(), "free-form client name, for logs", default=None)


@message
class Welcome(Message):
    version: int = arg(Int(0), "the version chosen for this connection (1)")
    server: str = arg(Str(), "server name and version")
    max_frame: int = arg(Int(1), "largest frame body the server accepts")
    auth: bool = arg(Bool(), "whether the server requires a token")


HELLO = Op(
    "hello",
    Hello,
    Welcome,
    Role.OPEN,
    False,
    (UnsupportedVersion, AuthenticationFailed),
    "Opens a connection: agrees on a protocol version and authenticates.",
)


def negotiate(versions: list[int]) -> int:
    """The highest version both sides speak; :class:`UnsupportedVersion` if none."""
    common = set(versions) & set(SUPPORTED_VERSIONS)
    if not common:
        raise UnsupportedVersion(
            f"client speaks versions {versions[:16]}, server speaks {list(SUPPORTED_VERSIONS)}"
        )
    return max(common)


PING = Op("ping", Empty, Empty, Role.OPEN, True, (), "Answers at once: a liveness check.")
FLUSH = Op(
    "flush",
    Empty,
    Empty,
    Role.WRITE,
    True,
    STORAGE_ERRORS,
    "Seals buffered points into blocks; answers once they are on disk.",
)


# -- write ------------------------------------------------------------------------


@message
class Write(Message):
    tags: Any = arg(
        OneTagOrIds("tag", "tags", "a write"),
        "the tag (id or name) of every point|the tag id of each point",
    )
    ts: Any = arg(Array(TS_DTYPE, defines=True), "timestamps (any order)")
    values: Any = arg(Array(VALUES_DTYPE), "values")
    q: Any = arg(
        Array(Q_DTYPE, broadcast=True),
        "qualities; absent means every point is 192 (Good)",
        default=None,
    )


@message
class Written(Message):
    n: int = arg(Int(0), "points written")
    lsn: int = arg(Int(0), "log sequence number of the write in the server's WAL")


WRITE = Op(
    "write",
    Write,
    Written,
    Role.WRITE,
    False,
    (NotFound, Overloaded, *STORAGE_ERRORS),
    "Writes points, all or nothing; answers once they are durable.",
)


# -- query -------------------------------------------------------------------------


@message
class Query(Message):
    tag: TagRef = arg(Tag(), "tag id or name")
    start: int = arg(Int(), "first timestamp included (µs)")
    end: int = arg(Int(), "first timestamp excluded (µs)")
    limit: int | None = arg(
        Int(0),
        "return at most this many points (the oldest; with `descending`, the newest)",
        default=None,
    )
    descending: bool = arg(Bool(), "newest first (default `false`)", default=False)
    good_only: bool = arg(
        Bool(), "only points of Good quality, `q >= 192` (default `false`)", default=False
    )


@message
class Points(Message):
    ts: Any = arg(Array(TS_DTYPE, "m", defines=True), "timestamps")
    values: Any = arg(Array(VALUES_DTYPE, "m"), "values")
    q: Any = arg(Array(Q_DTYPE, "m"), "qualities")
    stats: dict[str, int] = arg(
        Counts(),
        "read statistics of this query (`blocks_read`, `points_from_disk`, ...)",
        default={},
        always=True,
    )
    more: bool = arg(
        Bool(),
        "`limit` cut the result short: more points are in the range",
        default=False,
        always=True,
    )


QUERY = Op(
    "query",
    Query,
    Points,
    Role.READ,
    True,
    (NotFound, FrameTooLarge, *STORAGE_ERRORS),
    "The points of one tag in `[start, end)`, sorted by timestamp.",
)


# -- last ---------------------------------------------------------------------------


class TagErrors(Kind):
    """``{tag: error}`` as ``[{"code", "message", "tag"}]``, the map of an error response."""

    type_doc = "array of map"

    def encode(self, value: Any, name: str, lengths: Lengths) -> list[dict[str, Any]]:
        return [error_response(None, exc)["error"] | {"tag": int(t)} for t, exc in value.items()]

    def decode(self, raw: Any, name: str, lengths: Lengths) -> dict[int, XtsdbError]:
        if not isinstance(raw, list):
            raise InvalidInput(f"{name!r} must be an array")
        out: dict[int, XtsdbError] = {}
        for item in raw:
            if not isinstance(item, dict):
                raise InvalidInput(f"an entry of {name!r} must be a map")
            tag = int_field(item.get("tag"), "tag", 0, UINT32_MAX)
            message = item.get("message")
            out[tag] = error_from_code(
                int_field(item.get("code"), "code"), message if isinstance(message, str) else ""
            )
        return out


@message
class Last(Message):
    tags: Any = arg(TagIds(), "tag ids, or ids and names")


@message
class Latest(Message):
    tags: Any = arg(
        Array(TAGS_DTYPE, "m", defines=True),
        "the tags that have data (`m <= k`); tags with no data are left out",
    )
    ts: Any = arg(Array(TS_DTYPE, "m"), "latest timestamp of each")
    values: Any = arg(Array(VALUES_DTYPE, "m"), "its value")
    q: Any = arg(Array(Q_DTYPE, "m"), "its quality")
    errors: dict[int, XtsdbError] = arg(
        TagErrors(),
        "tags whose latest point could not be read (a damaged block), left out of "
        '`tags`: each `{"tag": int, "code": int, "message": str}` as in an error response; '
        "sent only when not empty",
        default={},
    )


LAST = Op(
    "last",
    Last,
    Latest,
    Role.READ,
    True,
    (NotFound, *STORAGE_ERRORS),
    "The latest point of each of a set of tags.",
)


# -- stats and backup -----------------------------------------------------------------


@message
class Stats(Message):
    stats: dict[str, Any] = arg(
        Map(), "server and engine counters (keys may grow between releases)"
    )


STATS = Op("stats", Empty, Stats, Role.READ, True, (), "The server's and the engine's counters.")


@message
class Backup(Message):
    path: str = arg(
        Str(nonempty=True),
        "destination directory, absolute inside `backup_dir` or relative to it; must not exist",
    )


@message
class BackupReport(Message):
    backup: dict[str, Any] = arg(
        Map(),
        "`path` (absolute), `bytes` copied, `checkpoint_lsn`, "
        "`wal_last_lsn`, `seconds`, ... (keys may grow)",
    )


BACKUP = Op(
    "backup",
    Backup,
    BackupReport,
    Role.WRITE,
    False,
    (PermissionDenied, Overloaded, InvalidInput, *STORAGE_ERRORS),
    "Copies the data directory, on the server's filesystem, while writes go on.",
)

CORE_OPS = (HELLO, PING, WRITE, QUERY, LAST, FLUSH, STATS, BACKUP)
