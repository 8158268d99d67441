"""Checking that the frames a replica applied are still the write log's.

Seen on Debian's nats-server 2.9.10 after a quorum loss (two of three NATS
servers killed): a server that had lost quorum stored and delivered a frame
JetStream never committed (its writer got an error), and once the cluster was
back, that sequence held another, acknowledged frame. A replica that applied
the first would skip the second for good (it resumes after the sequence), so
an acknowledged write would never be readable there. So each applier keeps
the CRC of the frames it applied last (:class:`Trail`) and, when it is idle,
asks the stream's leader whether the newest is still the one at that sequence
(:func:`diverged_after`); if not, the applier rebuilds the shard
(:mod:`.applier`).
"""

from __future__ import annotations

import zlib
from collections import deque

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from xtsdb.server.cluster.bootstrap import STREAM

TRAIL = 1024  # frames remembered per shard


class Trail:
    """(sequence, CRC-32 of the frame) of the frames applied last, oldest first."""

    def __init__(self) -> None:
        self.entries: deque[tuple[int, int]] = deque(maxlen=TRAIL)

    def add(self, seq: int, data: bytes) -> None:
        self.entries.append((seq, zlib.crc32(data)))

    def clear(self) -> None:
        self.entries.clear()


async def diverged_after(js: JetStreamContext, subject: str, trail: Trail) -> int | None:
    """None while the newest applied frame is still the log's at its sequence; otherwise
    the sequence of the newest applied frame that still is (0: none of the trail is).
    An empty trail (nothing applied since this node started) has nothing to compare."""
    if not trail.entries:
        return None
    for n, (seq, crc) in enumerate(reversed(trail.entries)):
        try:
            msg = await js.get_msg(STREAM, seq)  # answered by the stream's leader
        except NotFoundError:
            if n == 0:
                return None  # aged out or purged: nothing to compare with
            continue
        if msg.subject == subject and zlib.crc32(msg.data or b"") == crc:
            return None if n == 0 else seq
    return 0
