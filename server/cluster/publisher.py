"""Writes into the replicated log: the cluster's group commit is a publish window.

A validated write is split into frames by shard (and under NATS' max_payload)
and queued at once, in arrival order. One sender task publishes the frames in
that order without waiting for acknowledgements (JetStream's async publish):
frames of one connection reach the stream in the order they were received,
and many writes are in flight together, the way many writes share one fsync
on a single node. A write resolves once JetStream acknowledged every one of
its frames (stored by a quorum of NATS servers), to the highest stream
sequence among them; if any frame fails or is not acknowledged within
``ack_timeout``, the write fails with :class:`Unavailable` and is never
acknowledged (its frames may still be stored: an unknown outcome, as with a
lost acknowledgement on one node). Nothing is retried here: retrying one frame
after later ones were stored would reorder writes of one tag.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import PubAck

from xtsdb.protocol.errors import ShuttingDown, Unavailable
from xtsdb.server.cluster import logframes
from xtsdb.server.cluster.bootstrap import STREAM, subject
from xtsdb.server.engine.wal_records import WriteBatch

log = logging.getLogger("xtsdb.cluster")

ACK_TIMEOUT = 10.0


@dataclass
class _Pending:
    frames: list[tuple[int, bytes]]  # (shard, encoded frame)
    done: asyncio.Future[int]


class Publisher:
    def __init__(self, js: JetStreamContext, shards: int, max_payload: int) -> None:
        self.js = js
        self.shards = shards
        self.max_payload = max_payload
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.frames = 0
        self.failed_writes = 0
        self.last_seq = 0  # the highest sequence this node's publishes were acked with

    def start(self) -> None:
        self._task = asyncio.create_task(self._send_loop(), name="xtsdb-publish")

    def submit(self, batch: WriteBatch) -> asyncio.Future[int]:
        frames = [
            (shard, logframes.encode(part))
            for shard, part in logframes.split(batch, self.shards, self.max_payload)
        ]
        return self._enqueue(frames)

    def delete(self, tag: int, start: int, end: int) -> asyncio.Future[int]:
        frame = logframes.encode(logframes.Delete(tag, start, end))
        return self._enqueue([(tag % self.shards, frame)])

    def _enqueue(self, frames: list[tuple[int, bytes]]) -> asyncio.Future[int]:
        if self._stopping:
            raise ShuttingDown("the server is stopping and takes no new writes")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if not frames:  # an empty write: nothing to replicate
            done.set_result(self.last_seq)
        else:
            self._queue.put_nowait(_Pending(frames, done))
        return done

    async def stop(self) -> None:
        """Publish what is queued, then end the sender (writes after this are refused)."""
        self._stopping = True
        self._queue.put_nowait(None)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _send_loop(self) -> None:
        waiting: set[asyncio.Task[None]] = set()
        while True:
            item = await self._queue.get()
            if item is None:
                break
            acks: list[asyncio.Future[PubAck]] = []
            try:
                for shard, frame in item.frames:
                    acks.append(await self.js.publish_async(subject(shard), frame, stream=STREAM))
            except Exception as exc:
                for ack in acks:  # frees the client's in-flight slots
                    ack.cancel()
                self._fail(item, exc)
                continue
            self.frames += len(acks)
            task = asyncio.create_task(self._resolve(item, acks))
            waiting.add(task)
            task.add_done_callback(waiting.discard)
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)

    async def _resolve(self, item: _Pending, acks: list[asyncio.Future[PubAck]]) -> None:
        try:
            got = await asyncio.wait_for(asyncio.gather(*acks), ACK_TIMEOUT)
        except Exception as exc:
            for ack in acks:  # frees the client's in-flight slots of the ones left
                ack.cancel()
            self._fail(item, exc)
            return
        seq = max(int(a.seq) for a in got)
        self.last_seq = max(self.last_seq, seq)
        if not item.done.done():
            item.done.set_result(seq)

    def _fail(self, item: _Pending, exc: BaseException) -> None:
        self.failed_writes += 1
        if isinstance(exc, TimeoutError):
            why = f"the write log did not acknowledge within {ACK_TIMEOUT:.0f} s"
        else:
            why = f"the write log refused or could not be reached: {exc!r}"
        log.warning("write not acknowledged: %s", why)
        if not item.done.done():
            item.done.set_exception(Unavailable(f"write not acknowledged: {why}"))
