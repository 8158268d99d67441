"""The tag catalog every node shares: catalog changes as an ordered log, applied everywhere.

Every change of the catalog (create, settings, rename, remove) is a frame of
the ``XTSDB_CATALOG`` stream (3 replicas, kept forever: a new node rebuilds
the catalog from its beginning). Each node applies the frames in stream order
to its engine's catalog with :func:`apply_frame`, a deterministic function of
the catalog and the frame, so every node ends with the same names and ids:

- ``create``: the name gets id ``NAMED_BASE + the frame's sequence`` (unique by
  construction) unless the name already exists, in which case nothing happens
  and the creator learns the existing id;
- ``update`` merges settings; ``rename`` happens only if the new name is free
  at that point of the log; ``remove`` drops the name (the points go through
  the write log, as a delete).

A node that changes the catalog publishes the frame, waits until its own
applier reached the frame's sequence, then reads the outcome from its catalog.
Why a log and not compare-and-set on a key-value bucket: on Debian's
nats-server 2.9 a bucket's expected-revision check is not atomic on a
replicated stream, and concurrent creations both won (tested).

Each frame is applied exactly once: its sequence is committed in the catalog's
own SQLite transaction with the change (``Catalog.logged``). Applying a frame
again would not be harmless: whether a ``create`` makes a tag depends on the
catalog at that point of the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, PubAck

from xtsdb.protocol.errors import InternalError, InvalidInput, NotFound, Unavailable
from xtsdb.server.cluster.bootstrap import CATALOG_STREAM as STREAM
from xtsdb.server.cluster.bootstrap import CATALOG_SUBJECT as SUBJECT
from xtsdb.server.cluster.resume import keep_running
from xtsdb.server.engine import Engine
from xtsdb.server.engine.catalog import TagInfo, check_meta, check_name

log = logging.getLogger("xtsdb.cluster")

NAMED_BASE = 1 << 31
WAIT = 10.0  # seconds a change waits for this node to apply it

Allocated = tuple[int, dict[str, Any], bool] | InvalidInput


def apply_frame(engine: Engine, seq: int, frame: dict[str, Any]) -> None:
    """Apply one catalog frame, deterministically, and commit ``seq`` with it; a frame at
    or before the sequence committed last is skipped (redelivered: applied already)."""
    with engine.catalog.logged(seq) as fresh:
        if fresh:
            _apply(engine, seq, frame)


def _apply(engine: Engine, seq: int, frame: dict[str, Any]) -> None:
    catalog, op = engine.catalog, frame.get("op")
    if op == "create":
        tag_id = NAMED_BASE + seq
        if catalog.get(frame["name"]) is None and catalog.get(tag_id) is None:
            engine.adopt_tag(frame["name"], tag_id, frame.get("meta") or {})
        return
    info = catalog.get(int(frame["id"]))
    if info is None:
        return  # removed earlier in the log
    if op == "update":
        engine.update_tag(info.id, **(frame.get("meta") or {}))
    elif op == "rename":
        if catalog.get(frame["name"]) is None:
            catalog.rename(info.id, frame["name"])
    elif op == "remove":
        engine.forget_tag(info.name)
    else:
        log.error("catalog frame %d of unknown kind %r skipped", seq, op)


def _check_settings(meta: dict[str, Any]) -> dict[str, Any]:
    fields = check_meta(meta)
    if fields.get("duplicates") == "reject":
        # A replica applies writes after the fact: it cannot refuse one.
        raise InvalidInput("duplicate policy 'reject' is not available in cluster mode")
    return fields


class LogCatalog:
    def __init__(
        self, js: JetStreamContext, engine: Engine, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.js = js
        self.engine = engine
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self.seq = 0
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.frames = 0

    async def start(self, timeout: float = 60.0) -> None:
        """Apply every frame there is now before the node serves anything."""
        self.seq = await self._loop.run_in_executor(None, self.engine.catalog.log_seq)
        self._task = asyncio.create_task(self._apply_loop(), name="xtsdb-catalog")
        info = await self.js.stream_info(STREAM)
        await self._wait(int(info.state.last_seq), timeout)
        self.engine.catalog.allocator = self.allocate

    async def close(self) -> None:
        self.engine.catalog.allocator = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- changes ----------------------------------------------------------------------

    async def _publish(self, frames: Sequence[dict[str, Any]]) -> list[int]:
        """Publish ``frames`` in order; once applied here, their sequences."""
        futs: list[asyncio.Future[PubAck]] = []
        try:  # pipelined, in order: one round trip for a request's many new names
            for f in frames:
                futs.append(
                    await self.js.publish_async(SUBJECT, json.dumps(f).encode(), stream=STREAM)
                )
            acks = await asyncio.wait_for(asyncio.gather(*futs), WAIT)
        except Exception as exc:
            for fut in futs:
                fut.cancel()
            raise Unavailable(f"the catalog log is unreachable: {exc!r}") from None
        seqs = [int(a.seq) for a in acks]
        await self._wait(max(seqs), WAIT)
        return seqs

    def allocate(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Allocated]:
        """``Catalog.allocator``: ids of new names (blocks: called from the query pool)."""
        if threading.get_ident() == self._loop_thread:
            raise InternalError("a tag was created on the event loop thread in cluster mode")
        fut = asyncio.run_coroutine_threadsafe(self._allocate(list(items)), self._loop)
        try:
            return fut.result(WAIT + 5)
        except TimeoutError:
            fut.cancel()
            raise Unavailable(f"the catalog log did not answer within {WAIT:.0f} s") from None

    async def _allocate(self, items: list[tuple[str, dict[str, Any]]]) -> list[Allocated]:
        out: list[Allocated | None] = [None] * len(items)
        frames, where = [], []
        for i, (name, meta) in enumerate(items):
            try:
                fields = _check_settings(meta)
            except InvalidInput as exc:
                out[i] = exc
                continue
            frames.append({"op": "create", "name": name, "meta": fields})
            where.append(i)
        seqs = await self._publish(frames) if frames else []
        for i, seq in zip(where, seqs, strict=True):
            info = self.engine.catalog.get(items[i][0])
            if info is None:  # created and removed again before this node applied it
                out[i] = InvalidInput(f"tag {items[i][0]!r} was removed meanwhile")
            else:
                settings = {k: getattr(info, k) for k in items[i][1]}
                out[i] = (info.id, settings, info.id == NAMED_BASE + seq)
        return [x for x in out if x is not None]

    async def update(self, key: int | str, meta: dict[str, Any]) -> TagInfo:
        fields = _check_settings(meta)
        info = self._require(key)
        if "duplicates" in fields and fields["duplicates"] != info.duplicates:
            raise InvalidInput(
                "duplicates is fixed when a tag is created in cluster mode: replicas seal at "
                "different moments, and a change would re-decide their buffered points apart"
            )
        await self._publish([{"op": "update", "id": info.id, "meta": fields}])
        return self._require(info.id)

    async def rename(self, key: int | str, new_name: str) -> TagInfo:
        check_name(new_name)
        info = self._require(key)
        if new_name == info.name:
            return info
        if self.engine.catalog.get(new_name) is not None:
            raise InvalidInput(f"a tag named {new_name!r} exists already")
        await self._publish([{"op": "rename", "id": info.id, "name": new_name}])
        after = self._require(info.id)
        if after.name != new_name:
            raise InvalidInput(f"a tag named {new_name!r} exists already")
        return after

    async def remove(self, key: int | str) -> TagInfo:
        """The name, for every node (the caller deleted the points through the write log)."""
        info = self._require(key)
        await self._publish([{"op": "remove", "id": info.id}])
        return info

    async def lookup(self, name: str) -> int:
        """The id of ``name`` once this node applied every catalog frame there is now."""
        try:
            last = int((await self.js.stream_info(STREAM)).state.last_seq)
        except Exception as exc:
            raise Unavailable(f"the catalog log is unreachable: {exc!r}") from None
        await self._wait(last, WAIT)
        return self._require(name).id

    def _require(self, key: int | str) -> TagInfo:
        info = self.engine.catalog.get(key)
        if info is None:
            raise NotFound(f"no tag {key!r} in the catalog")
        return info

    # -- applying -------------------------------------------------------------------

    async def _wait(self, seq: int, timeout: float) -> None:
        async def reached() -> None:
            async with self._progress:
                await self._progress.wait_for(lambda: self.seq >= seq)

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            raise Unavailable(
                f"this node applied the catalog up to {self.seq}, not {seq}, in {timeout:.0f} s"
            ) from None

    def _skip(self, seq: int) -> None:
        with self.engine.catalog.logged(seq):
            pass  # committed as applied, changing nothing

    async def _apply_loop(self) -> None:
        await keep_running(self._consume, "catalog", 0.5)

    async def _consume(self) -> None:
        cfg = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.seq + 1
        )
        sub = await self.js.subscribe(
            SUBJECT, stream=STREAM, ordered_consumer=True, config=cfg, idle_heartbeat=1.0
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except TimeoutError:
                    continue
                seq = int(msg.metadata.sequence.stream)
                if seq <= self.seq:
                    continue
                try:
                    frame = json.loads(msg.data)
                    await self._loop.run_in_executor(None, apply_frame, self.engine, seq, frame)
                except (ValueError, KeyError, TypeError, InvalidInput, NotFound) as exc:
                    # Every node refuses it alike (the frame was checked before it was
                    # published): skipped, and its sequence committed all the same.
                    log.error("catalog frame %d not applied: %r", seq, exc)
                    await self._loop.run_in_executor(None, self._skip, seq)
                self.frames += 1
                self.seq = seq
                async with self._progress:
                    self._progress.notify_all()
        finally:
            await asyncio.gather(sub.unsubscribe(), return_exceptions=True)
