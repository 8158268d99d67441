"""Live members: each node re-puts its entry in a KV bucket whose entries expire.

NATS 2.9 has no per-key TTL, so the ``members`` bucket has a ``max_age`` of
three heartbeats: a node that stops putting its key (dead, stopped, cut off
from NATS) disappears from the bucket within three heartbeats, and every
other node's next look at the bucket moves its shards. An entry also carries
what the node reports about itself (its address for forwarded reads, and the
sequence each of its shards has applied), which ``cluster_status`` shows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

log = logging.getLogger("xtsdb.cluster")


class Membership:
    def __init__(
        self,
        kv: KeyValue,
        node_id: str,
        heartbeat: float,
        report: Callable[[], dict[str, Any]],
        on_change: Callable[[dict[str, dict[str, Any]]], None],
    ) -> None:
        self.kv = kv
        self.node_id = node_id
        self.heartbeat = heartbeat
        self._report = report
        self._on_change = on_change
        self.members: dict[str, dict[str, Any]] = {}
        self.alive = False  # our own entry was put within the last heartbeat
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._loop(), name="xtsdb-heartbeat")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # Leaving on purpose: the others need not wait for the entry to expire.
        try:
            await asyncio.wait_for(self.kv.delete(self.node_id), 2.0)
        except Exception as exc:
            log.info("could not remove this node's member entry: %r", exc)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.alive = False
                log.warning("heartbeat failed: %r", exc)

    async def beat(self) -> None:
        await asyncio.wait_for(
            self.kv.put(self.node_id, json.dumps(self._report()).encode()), self.heartbeat
        )
        self.alive = True
        seen = await asyncio.wait_for(self.read(), self.heartbeat)
        if self.node_id not in seen:
            # Just put, so not a view of the cluster (nats-py's keys() may answer "no
            # keys" before its watcher delivered any): keep the last one.
            log.info("a member read without this node's own entry (%d): ignored", len(seen))
            return
        if set(seen) != set(self.members):
            log.info("members: %s", sorted(seen))
            self.members = seen
            self._on_change(seen)
        else:
            self.members = seen

    async def read(self) -> dict[str, dict[str, Any]]:
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return {}
        out = {}
        for key in keys:
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                continue  # expired between the two calls
            if entry.value:
                out[key] = json.loads(entry.value)
        return out
