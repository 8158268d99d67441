"""Materialising a shard: its frames of the write log applied to the local engine, in order.

One task per owned shard reads the shard's subject with an *ordered consumer*
starting right after the shard's applied sequence (:mod:`.applied`). Why not a
durable consumer: "how far has this replica applied" must be committed with
the engine's data, not in NATS, or a crash between the two would skip frames
without the node knowing. An ordered consumer is ephemeral (nothing to clean up
when a shard moves away), delivers in stream order and re-creates itself from
the last sequence it delivered on a gap. Any failure ends the subscription and
the task subscribes again from the applied sequence.

Frames are applied in batches: the writes of a batch go through the node's
group commit (one WAL fsync for many), a delete waits for the writes before
it, and only once all are committed is the batch's last sequence recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from xtsdb.protocol.errors import Unavailable
from xtsdb.server.cluster import logframes
from xtsdb.server.cluster.applied import AppliedSeqs
from xtsdb.server.cluster.bootstrap import STREAM, subject
from xtsdb.server.cluster.log_check import Trail, diverged_after
from xtsdb.server.cluster.resume import keep_running
from xtsdb.server.engine.wal_records import WriteBatch

log = logging.getLogger("xtsdb.cluster")

BATCH = 512  # frames per recorded sequence
RESUBSCRIBE_WAIT = 0.5
IDLE = 0.5  # seconds without a frame before asking the consumer how far behind it is
CHECK_EVERY = 2.0  # seconds between checks, when idle, that the last frame is the log's
PENDING_BYTES = 8 << 20  # frames received and not applied yet, per shard (then redelivered)


def _note_position(sub: Any, seq: int) -> None:
    """Tell nats-py's ordered consumer how far it delivered. nats-py 2.16 resets an ordered
    consumer (a NATS server gone, a missed heartbeat) from ``_sseq + 1`` but never advances
    ``_sseq`` (js/client.py): every reset replayed the shard's whole log from sequence 1
    (correct, since applied frames are skipped, but up to --stream-max-age of frames)."""
    jsi = getattr(getattr(sub, "_sub", None), "_jsi", None)
    if jsi is not None and hasattr(jsi, "_sseq"):
        jsi._sseq = max(int(jsi._sseq or 0), seq)


class LogRewritten(Exception):
    """The log changed under this replica: the applier starts again from its sequence."""


class ShardApplier:
    def __init__(
        self,
        shard: int,
        js: JetStreamContext,
        applied: AppliedSeqs,
        commit: Callable[[WriteBatch], Awaitable[int]],
        delete: Callable[[int, int, int], Awaitable[Any]],
        copy: Callable[[int], Awaitable[int | None]],
        wipe: Callable[[int], Awaitable[None]],
        save: Callable[[], Awaitable[None]],
    ) -> None:
        self.shard = shard
        self.js = js
        self.applied = applied
        self._commit = commit
        self._delete = delete
        self._copy = copy
        self._wipe = wipe
        self._save = save
        self.trail = Trail()
        self._checked = 0.0
        self._verified = 0  # frames up to this sequence were found to be the log's
        self.rebuilds = 0
        self.lag = -1  # frames of this shard in the log after the applied one; -1: not known
        self.ready = False  # caught up with the log at least once since this task started
        self.complete = True  # False: frames it needed had aged out of the log
        self.frames = 0
        self._progress = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def seq(self) -> int:
        return self.applied.get(self.shard)

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name=f"xtsdb-apply-{self.shard}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def wait_applied(self, min_seq: int, timeout: float) -> None:
        """Return once every frame of this shard up to stream sequence ``min_seq`` is applied."""
        deadline = time.monotonic() + timeout
        target = min_seq
        if self.seq < target:
            try:  # the shard's own last frame may be older than min_seq (another shard's)
                last = await self.js.get_last_msg(STREAM, subject(self.shard))
                target = min(target, int(last.seq or 0))
            except NotFoundError:
                return  # nothing was ever written to this shard
        while self.seq < target:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(
                    f"shard {self.shard} has applied up to {self.seq}, not {target}, "
                    f"after {timeout:.1f} s"
                )
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), left)

    async def _loop(self) -> None:
        await keep_running(
            self._consume, f"shard {self.shard}", RESUBSCRIBE_WAIT, self._lag_unknown
        )

    def _lag_unknown(self) -> None:
        self.lag = -1

    async def _consume(self) -> None:
        start = self.seq + 1
        if await self._aged_out(start):
            copied = await self._copy(self.shard)  # from a peer: docs/cluster.md
            if copied is not None:
                self.applied.record(self.shard, copied)
                self.complete = True
                start = copied + 1
        cfg = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
        sub = await self.js.subscribe(
            subject(self.shard),
            stream=STREAM,
            ordered_consumer=True,
            config=cfg,
            idle_heartbeat=1.0,
            pending_bytes_limit=PENDING_BYTES,
        )
        try:
            while True:
                try:
                    first = await sub.next_msg(timeout=IDLE)
                except TimeoutError:
                    info = await sub.consumer_info()
                    if info.num_pending == 0 and sub.pending_msgs == 0:
                        self._caught_up()
                    if time.monotonic() - self._checked > CHECK_EVERY:
                        self._checked = time.monotonic()
                        await self._check_log()
                    continue
                msgs = [first]
                while len(msgs) < BATCH and sub.pending_msgs:
                    msgs.append(await sub.next_msg(timeout=IDLE))
                await self._apply(msgs)
                _note_position(sub, self.seq)
        finally:
            await asyncio.gather(sub.unsubscribe(), return_exceptions=True)

    async def _check_log(self) -> None:
        """Rebuild this shard if a frame it applied is no longer the log's (log_check.py)."""
        good = await diverged_after(self.js, subject(self.shard), self.trail, self._verified)
        if good is None:
            if self.trail.entries:
                self._verified = self.trail.entries[-1][0]
            return
        first = int((await self.js.stream_info(STREAM)).state.first_seq)
        # With the shard's whole history in the log, rebuild it exactly from the start;
        # otherwise go back to the newest frame that is still the log's (what the frames
        # it applied wrongly wrote may stay: they were never acknowledged).
        back = 0 if first <= 1 else good
        log.error(
            "shard %d: a frame applied here after %d is no longer the write log's (a NATS "
            "quorum loss rewrote it); %s",
            self.shard,
            good,
            "rebuilding the shard from the log" if back == 0 else f"re-applying after {back}",
        )
        self.applied.rewind(self.shard, back)
        await self._save()  # durable before anything is deleted
        if back == 0:
            await self._wipe(self.shard)
        self.trail.clear()
        self._verified = 0
        self.rebuilds += 1
        self.ready = False
        raise LogRewritten(f"shard {self.shard}: applying again from {back + 1}")

    def _caught_up(self) -> None:
        self.lag = 0
        if not self.ready:
            log.info("shard %d: caught up at sequence %d", self.shard, self.seq)
        self.ready = True
        self._progress.set()

    async def _aged_out(self, start: int) -> bool:
        """Whether frames this replica needs (from ``start``) have left the log."""
        first = (await self.js.stream_info(STREAM)).state.first_seq
        if first > start and (start > 1 or first > 1):
            self.complete = False
            log.error(
                "shard %d: this replica has applied up to %d but the write log starts at %d: "
                "frames in between aged out (stream_max_age); copying the shard from a peer, "
                "reads go to other replicas meanwhile (docs/cluster.md)",
                self.shard,
                start - 1,
                first,
            )
            return True
        return False

    async def _apply(self, msgs: list[Any]) -> None:
        writes: list[Awaitable[int]] = []
        last = self.seq
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            if seq <= last:
                continue  # redelivered after a consumer reset: applied already
            frame = logframes.decode(msg.data)
            self.trail.add(seq, msg.data)
            if isinstance(frame, WriteBatch):
                writes.append(self._commit(frame))
            else:
                await asyncio.gather(*writes)  # a delete covers every write before it
                writes.clear()
                await self._delete(frame.tag, frame.start, frame.end)
            last = seq
        await asyncio.gather(*writes)
        self.frames += len(msgs)
        self.applied.record(self.shard, last)
        self.lag = int(msgs[-1].metadata.num_pending)
        if self.lag == 0:
            self._caught_up()
        self._progress.set()
