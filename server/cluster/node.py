"""One xtsdb node of a cluster: the write log, the shards it applies, membership.

:meth:`ClusterNode.start` connects to NATS, creates or joins the stream and the
key-value buckets (:mod:`.bootstrap`), applies the catalog log, starts
publishing and registers the node; from then on every membership change
recomputes which shards this node applies (:mod:`.placement`) and starts or
stops their appliers. Writes go to the log (:mod:`.publisher`); requests are
routed by :mod:`.router`. A single-node server never imports this module.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from xtsdb.protocol.cluster import ShardContents
from xtsdb.protocol.declare import Message, Op
from xtsdb.protocol.errors import InvalidInput, Unavailable
from xtsdb.server.cluster import placement
from xtsdb.server.cluster.applied import AppliedSeqs
from xtsdb.server.cluster.applier import ShardApplier
from xtsdb.server.cluster.bootstrap import STREAM, Handles, bootstrap, connect
from xtsdb.server.cluster.catalog_log import LogCatalog
from xtsdb.server.cluster.forwarder import Forwarder
from xtsdb.server.cluster.membership import Membership
from xtsdb.server.cluster.publisher import ACK_TIMEOUT, Publisher
from xtsdb.server.cluster.routed_reads import RoutedEngine
from xtsdb.server.cluster.router import Router
from xtsdb.server.cluster.shard_copy import copy_shard, wipe_shard
from xtsdb.server.config import ServerConfig
from xtsdb.server.engine import Engine
from xtsdb.server.engine.wal_records import WriteBatch
from xtsdb.server.write_queue import WriteQueue

if TYPE_CHECKING:
    from xtsdb.server.context import ServerContext

log = logging.getLogger("xtsdb.cluster")
T = TypeVar("T")

SAVE_EVERY = 0.05  # seconds between saves of the applied sequences (when they moved)


async def _bounded(aw: Awaitable[Any], seconds: float, what: str) -> None:
    try:
        await asyncio.wait_for(aw, seconds)
    except TimeoutError:
        log.warning("leaving the cluster: %s took over %.0f s; going on", what, seconds)
    except Exception as exc:
        log.warning("leaving the cluster: %s failed: %r", what, exc)


def advertised(host: str, port: int) -> str:
    """The address other nodes reach this one at (a wildcard host means this machine's name)."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ClusterNode:
    def __init__(
        self, config: ServerConfig, engine: Engine, writes: WriteQueue, pool: ThreadPoolExecutor
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self.shards = config.shards
        self.replication = config.replication
        self.engine = engine
        self.writes = writes
        self._pool = pool
        self.started_us = time.time_ns() // 1000
        self.address = ""
        self.joined = False
        self.appliers: dict[int, ShardApplier] = {}
        self.router = Router(self)
        self._h: Handles | None = None
        self._applied: AppliedSeqs | None = None
        self._catalog: LogCatalog | None = None
        self._publisher: Publisher | None = None
        self._membership: Membership | None = None
        self.forwarder = Forwarder(config.peer_token or None)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._saver: asyncio.Task[None] | None = None
        self._routed: RoutedEngine | None = None

    @property
    def read_engine(self) -> Engine:
        """What the HTTP reads query: the engine, with ``query`` of any tag routed."""
        if self._routed is None:
            return self.engine
        # Duck-typed: every attribute but ``query`` is the engine's (routed_reads.py).
        return cast(Engine, self._routed)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- joining and leaving ------------------------------------------------------

    async def join(self, host: str, port: int, shutdown: asyncio.Event) -> bool:
        """:meth:`start`, unless ``shutdown`` is set first (then it is cancelled); whether
        the node joined."""
        task = asyncio.ensure_future(self.start(host, port))
        stop = asyncio.ensure_future(shutdown.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            task.result()  # its failure is the server's
            return True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        log.info("stopped while joining the cluster")
        return False

    async def start(self, host: str, port: int) -> None:
        self.address = advertised(host, port)
        nc = await connect(self.config)
        self._h = h = await bootstrap(nc, self.config)
        self._applied = AppliedSeqs(Path(self.config.data_dir), self.shards)
        loop = asyncio.get_running_loop()
        self._catalog = LogCatalog(h.js, self.engine, loop)
        await self._catalog.start()
        self._routed = RoutedEngine(self, self.engine, asyncio.get_running_loop())
        self._publisher = Publisher(h.js, self.shards, nc.max_payload)
        self._publisher.start()
        self._saver = asyncio.create_task(self._save_loop(), name="xtsdb-applied-save")
        self._membership = Membership(
            h.members, self.node_id, self.config.heartbeat, self._report, self._placed
        )
        await self._membership.start()
        self._placed(self.members)
        self.joined = True
        log.info(
            "node %s joined the cluster at %s: %d members, applies %d of %d shards",
            self.node_id,
            self.address,
            len(self.members),
            len(self.appliers),
            self.shards,
        )

    async def close(self) -> None:
        """Leave: stop publishing (what was queued is sent), applying and the heartbeat.

        Each step is bounded: a NATS that stopped answering must not keep the
        node from closing its engine."""
        self.joined = False
        if self._membership is not None:
            await _bounded(self._membership.close(), 3.0, "leaving the members")
        if self._publisher is not None:
            await _bounded(self._publisher.stop(), ACK_TIMEOUT + 1, "the last publishes")
        stops = [a.stop() for a in self.appliers.values()]
        await _bounded(asyncio.gather(*stops, *self._tasks), 5.0, "stopping the appliers")
        self.appliers.clear()
        if self._saver is not None:
            self._saver.cancel()
            await asyncio.gather(self._saver, return_exceptions=True)
        if self._catalog is not None:
            await _bounded(self._catalog.close(), 3.0, "the catalog applier")
        await _bounded(self.forwarder.close(), 3.0, "closing forwarding connections")
        if self._applied is not None:
            await self.after_commits()  # what the appliers recorded is in the WAL: save it
            await self.run(self._applied.save)
            self._applied.close()
        if self._h is not None:
            await _bounded(self._h.nc.close(), 3.0, "closing the NATS connection")

    async def after_commits(self) -> None:
        await self.writes.submit(WriteBatch.build(0, np.empty(0, np.int64), np.empty(0)))

    # -- writes ---------------------------------------------------------------------

    def submit(self, batch: WriteBatch) -> asyncio.Future[int]:
        if not self.joined or self._publisher is None:
            raise Unavailable(f"node {self.node_id} has not joined its cluster")
        return self._publisher.submit(batch)

    def delete(self, tag: int, start: int, end: int) -> asyncio.Future[int]:
        if not self.joined or self._publisher is None:
            raise Unavailable(f"node {self.node_id} has not joined its cluster")
        return self._publisher.delete(tag, start, end)

    # -- shards -----------------------------------------------------------------------

    @property
    def catalog(self) -> LogCatalog:
        if self._catalog is None:
            raise Unavailable(f"node {self.node_id} has not joined its cluster")
        return self._catalog

    @property
    def members(self) -> dict[str, dict[str, Any]]:
        """Live members (node id -> its last report), as of this node's last heartbeat."""
        return self._membership.members if self._membership is not None else {}

    def owners(self, shard: int) -> list[str]:
        return placement.owners(shard, self.members, self.replication)

    def _placed(self, members: Mapping[str, dict[str, Any]]) -> None:
        """Members changed: start appliers of shards this node now owns, stop the others."""
        assert self._h is not None and self._applied is not None
        if self.node_id not in members:
            return  # our own entry expired (we were cut off): keep applying until we see it
        mine = {
            s
            for s in range(self.shards)
            if self.node_id in placement.owners(s, members, self.replication)
        }
        for shard in sorted(set(self.appliers) - mine):
            applier = self.appliers.pop(shard)
            self._spawn(applier.stop())
        for shard in sorted(mine - set(self.appliers)):
            applier = ShardApplier(
                shard,
                self._h.js,
                self._applied,
                self.writes.submit,
                self._delete_local,
                partial(copy_shard, self),
                partial(wipe_shard, self),
                partial(self.run, self._applied.save),
            )
            self.appliers[shard] = applier
            applier.start()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _delete_local(self, tag: int, start: int, end: int) -> int:
        return await self.run(self.engine.delete, tag, start, end)

    async def _save_loop(self) -> None:
        applied = self._applied
        assert applied is not None
        while True:
            await asyncio.sleep(SAVE_EVERY)
            if applied.dirty:
                try:
                    await self.run(applied.save)
                except OSError as exc:
                    log.error("could not save the applied sequences: %r", exc)

    async def shard_contents(self, shard: int, shards: int) -> ShardContents:
        if shards != self.shards or not 0 <= shard < shards:
            raise InvalidInput(f"shard {shard} of {shards}: this cluster has {self.shards}")
        applier = self.appliers.get(shard)
        if applier is None or not (applier.ready and applier.complete):
            raise Unavailable(f"node {self.node_id} does not hold shard {shard} caught up")
        seq = applier.seq  # before the ids: the data read next holds at least this much
        ids = {t for t in await self.run(self.engine.tag_ids) if t % shards == shard}
        ids |= {t.id for t in self.engine.catalog.all() if t.id % shards == shard}
        return ShardContents(applied_seq=seq, tags=np.array(sorted(ids), np.uint32))

    # -- what others see of this node ---------------------------------------------------

    def _report(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "started_us": self.started_us,
            "shards": {
                str(s): {
                    "applied_seq": a.seq,
                    "lag": a.lag,
                    "ready": a.ready and a.complete,
                }
                for s, a in self.appliers.items()
            },
        }

    def peer(self, node: str) -> dict[str, Any]:
        return self.members.get(node) or {}

    async def status(self) -> dict[str, Any]:
        assert self._h is not None
        try:
            last_seq = int((await self._h.js.stream_info(STREAM)).state.last_seq)
        except Exception as exc:
            raise Unavailable(f"the write log is unreachable: {exc!r}") from None
        members = dict(self.members)
        members[self.node_id] = self._report()  # our own, fresher than our last heartbeat
        return {
            "node": self.node_id,
            "members": {
                n: {"address": m.get("address", "?"), "started_us": m.get("started_us", 0)}
                for n, m in members.items()
            },
            "shards": self.shards,
            "replication": self.replication,
            "stream_last_seq": last_seq,
            "owners": {str(s): self.owners(s) for s in range(self.shards)},
            "replicas": {n: m.get("shards", {}) for n, m in members.items()},
        }

    # -- requests -----------------------------------------------------------------------

    def dispatch(
        self,
        ctx: ServerContext,
        op: Op[Any, Any],
        handler: Callable[..., Any],
        req: Message,
        msg: Mapping[str, Any],
    ) -> Any:
        return self.router.dispatch(ctx, op, handler, req, msg)
