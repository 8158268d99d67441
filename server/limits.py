"""Server-wide limits: the set of open connections, and the budget of partial requests.

:class:`Connections` is the set of open connections of the binary port: the
connection cap, the pause of every reader while the write queue is full, and
the gauges that ``stats`` reports.

:class:`ByteBudget` is shared by every connection: what requests still arriving may hold.

Each connection may buffer one request up to ``max_frame`` (the binary port)
or ``max_frame`` of body (the InfluxDB port), and there may be
``max_connections`` of them: 64 GiB with the defaults, from clients that only
have to start a large request and never finish it. The budget caps the sum.
A request is charged at its *announced* size (the frame's length prefix, the
body's ``Content-Length``) from its first bytes, so the refusal comes before
the bytes are buffered, and the charge is returned once the request is
complete (it is then bounded by the per-connection limits) or its connection
is gone. A request that does not fit is refused with ``overloaded``: a
client retries it later, when others have finished theirs.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from xtsdb.server.write_queue import GROUP_MAX_BYTES

if TYPE_CHECKING:
    from xtsdb.server.config import ServerConfig
    from xtsdb.server.connection import Connection
    from xtsdb.server.context import Frame


_MiB = 1 << 20
BASE_RSS = 96 * _MiB
"""The process with nothing to do: interpreter, numpy, uvloop, SQLite, thread stacks,
with room to spare over the resident size at rest that docs/operations.md (Memory) records."""
POINT_BYTES = 21
"""A point waiting to be sealed: a view of its WAL record, 8 + 8 + 1 bytes (+ 4 for the
tag id of a multi-tag write); the record stays alive while any of its points is unsealed."""


def memory_bound(config: ServerConfig) -> list[tuple[str, int]]:
    """What can hold the server's memory, term by term, from its settings (docs/operations.md).

    Every term has a setting that caps it; their sum bounds the resident size
    but for answers, which are what clients ask for: the term counts
    ``query_threads`` answers of ``max_frame`` being produced at once, and each
    client that does not read holds at most ``answer_gate.MAX_RUNNING`` + 1 of its own.
    """
    return [
        ("process at rest", BASE_RSS),
        ("points not yet sealed: max_memory_points x 21 B", config.max_memory_points * POINT_BYTES),
        (
            "writes waiting for their commit: max_queue_bytes, + one group's WAL copy",
            config.max_queue_bytes + min(GROUP_MAX_BYTES, config.max_queue_bytes),
        ),
        ("requests still arriving: max_partial_bytes", config.max_partial_bytes),
        (
            "answers being produced: query_threads x max_frame",
            config.query_threads * config.max_frame,
        ),
    ]


class ByteBudget:
    """Bytes reserved by requests being received; :meth:`take` refuses beyond ``cap``."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0
        self.peak = 0
        self.refused = 0  # requests refused because the budget was spent

    def take(self, n: int) -> bool:
        """Reserve ``n`` more bytes; False (and nothing reserved) if that exceeds the cap."""
        if self.used + n > self.cap:
            self.refused += 1
            return False
        self.used += n
        self.peak = max(self.peak, self.used)
        return True

    def give(self, n: int) -> None:
        """Return ``n`` reserved bytes."""
        self.used -= n


class Connections:
    """Open connections, the connection cap and the all-readers pause."""

    def __init__(self, *, max_connections: int, budget: ByteBudget | None = None) -> None:
        self.max_connections = max_connections
        self.budget = budget if budget is not None else ByteBudget(1 << 62)
        self.open: set[Connection] = set()
        self.paused = False
        self.total = 0
        self.refused = 0
        self.idle_closed = 0
        self.frame_timeouts = 0  # slow senders cut off by frame_timeout
        self.auth_timeouts = 0  # connections that did not authenticate in time
        self.pending_peak = 0
        self.read_pauses = 0

    def admit(self, conn: Connection) -> bool:
        if len(self.open) >= self.max_connections:
            self.refused += 1
            return False
        self.open.add(conn)
        self.total += 1
        return True

    def set_paused(self, paused: bool) -> None:
        """Called by the write queue: stop (or restart) reading on every socket."""
        self.paused = paused
        for conn in list(self.open):
            conn.kick()

    def inflight(self) -> list[asyncio.Task[Frame]]:
        return [t for conn in self.open for t in conn.tasks]

    def stats(self) -> dict[str, Any]:
        return {
            "connections": len(self.open),
            "connections_total": self.total,
            "connections_refused": self.refused,
            "connections_idle_closed": self.idle_closed,
            "connections_frame_timeout": self.frame_timeouts,
            "connections_auth_timeout": self.auth_timeouts,
            "inflight_requests": sum(len(c.tasks) for c in self.open),
            "pending_bytes": sum(c.pending for c in self.open),
            "pending_bytes_peak": self.pending_peak,
            "read_buffer_bytes": sum(c.decoder.buffered for c in self.open),
            "partial_bytes": self.budget.used,
            "partial_bytes_peak": self.budget.peak,
            "partial_refused": self.budget.refused,
            "answers_waiting": sum(len(c.gate) for c in self.open),
            "write_buffer_bytes": sum(c.write_buffer_size() for c in self.open),
            "readers_paused": sum(1 for c in self.open if c.reading_paused),
            "read_pauses": self.read_pauses,
        }
