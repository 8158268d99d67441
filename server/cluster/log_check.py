"""Checking that the frames a replica applied are still the write log's.

Seen on Debian's nats-server 2.9.10 after a quorum loss (two of three NATS
servers killed): a server that had lost quorum stored and delivered a frame
JetStream never committed (its writer got an error), and once the cluster was
back, that sequence held another, acknowledged frame. A replica that applied
the first would skip the second for good (it resumes after the sequence), so
an acknowledged write would never be readable there. So each applier keeps
the CRC of the frames it applied last (:class:`Trail`) and, when it is idle,
asks the stream's leader whether each frame applied since its last check is
still the one at that sequence (:func:`diverged_after`); if not, the applier
rebuilds the shard (:mod:`.applier`).
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


async def diverged_after(
    js: JetStreamContext, subject: str, trail: Trail, checked: int = 0
) -> int | None:
    """None while every applied frame after sequence ``checked`` is still the log's at its
    sequence; otherwise the sequence of the last frame before the first that is not (0:
    none before it is known good). Oldest first: a rewritten frame may be followed by
    good ones, which is how it stayed hidden."""
    good = 0
    for seq, crc in trail.entries:
        if seq <= checked:
            good = seq
            continue
        try:
            msg = await js.get_msg(STREAM, seq)  # answered by the stream's leader
        except NotFoundError:
            continue  # aged out or purged: nothing to compare with
        if msg.subject != subject or zlib.crc32(msg.data or b"") != crc:
            return good
        good = seq
    return None
