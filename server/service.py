"""What the server does with one request, independent of sockets.

:meth:`Service.dispatch` takes a decoded request and returns either the
response frame at once (``hello``, ``ping``, and every request refused by
validation) or a coroutine producing it (work that waits for the group commit
or runs in the thread pool). The connection writes the bytes or runs the
coroutine as a task; nothing here knows about transports.

Encoding a query response happens in the pool thread too, so a large result
never stalls the event loop; and responses that carry arrays (query, plot,
last, aggregate, interpolate) are framed with ``encode_frame_parts``: a list of
pieces whose large arrays are views of the engine's result, which the
connection hands to ``transport.writelines`` without joining them.

The historian ops (analytics, the tag catalog, deletes) live in
:mod:`.historian`, a mixin of :class:`Service`. A tag may be named wherever a
request takes one; :meth:`Service.tag_id` resolves names through the catalog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any, TypeVar

import numpy as np

from xtsdb.protocol import (
    DEFAULT_MAX_FRAME,
    encode_frame,
    encode_frame_parts,
    error_response,
    hello_response,
    last_response,
    ok_response,
    parse_backup,
    parse_hello,
    parse_last,
    parse_query,
    parse_request_header,
    parse_write,
    points_response,
    readable_id,
)
from xtsdb.protocol.errors import (
    AuthenticationFailed,
    FrameTooLarge,
    InternalError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ShuttingDown,
    XtsdbError,
)
from xtsdb.server.auth import Authenticator, PeerAuth, check_op
from xtsdb.server.backup import Backups
from xtsdb.server.engine.wal_records import WriteBatch
from xtsdb.server.historian import EngineLike, Frame, HistorianOps
from xtsdb.server.write_queue import WriteQueue

log = logging.getLogger("xtsdb.server")

try:
    SERVER_VERSION = metadata.version("xtsdb")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    SERVER_VERSION = "0+unknown"
SERVER_NAME = f"xtsdb/{SERVER_VERSION}"

Response = Frame | Coroutine[Any, Any, Frame]
T = TypeVar("T")


def _frame(msg: Mapping[str, Any], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    frame: bytes = encode_frame(msg, max_frame)
    return frame


class _NewTag:
    """Writes to a name whose auto-creation is under way, in arrival order."""

    def __init__(self) -> None:
        self._waiting: list[tuple[tuple[Any, Any, Any], asyncio.Future[asyncio.Future[int]]]] = []

    def queue(self, cols: tuple[Any, Any, Any]) -> asyncio.Future[asyncio.Future[int]]:
        """A future of the write-queue future this write gets once its tag exists."""
        fut: asyncio.Future[asyncio.Future[int]] = asyncio.get_running_loop().create_future()
        self._waiting.append((cols, fut))
        return fut

    def release(self, writes: WriteQueue, created: asyncio.Future[int]) -> None:
        """Submit every waiting write (or fail it with the creation's error), in order."""
        error = created.exception() if not created.cancelled() else ShuttingDown()
        for cols, fut in self._waiting:
            # A write whose requester went away is queued all the same, as a write
            # already in the queue still commits when its connection closes.
            try:
                if error is not None:
                    raise error
                result: asyncio.Future[int] | BaseException = writes.submit(
                    WriteBatch.build(created.result(), *cols)
                )
            except Exception as exc:  # the creation failed, or the queue is stopping
                result = exc
            if fut.done():
                if isinstance(result, asyncio.Future):
                    result.add_done_callback(_consume)
            elif isinstance(result, asyncio.Future):
                fut.set_result(result)
            else:
                fut.set_exception(result)
        self._waiting.clear()


def _consume(fut: asyncio.Future[int]) -> None:
    """Retrieve the outcome of a write nobody waits for (no 'never retrieved' warning)."""
    if not fut.cancelled():
        fut.exception()


class Service(HistorianOps):
    """Request handlers plus the counters the ``stats`` op reports."""

    def __init__(
        self,
        engine: EngineLike,
        writes: WriteQueue,
        pool: ThreadPoolExecutor,
        *,
        max_frame: int,
        auth: Authenticator | None = None,
    ) -> None:
        self.engine = engine
        self.auth = auth  # None: no tokens configured, every connection may do everything
        self.writes = writes
        self.pool = pool
        self.max_frame = max_frame
        self.server_stats: Callable[[], dict[str, Any]] | None = None  # connection gauges
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.stopping = False
        # Set by the app: (op, request, seconds) of every request answered (metrics,
        # slow-request log), and the backup op's policy (None: refused).
        self.observe: Callable[[str, Mapping[str, Any], float], None] | None = None
        self.backups: Backups | None = None
        self.auto_create_tags = False  # set by the app from the config
        # Tag names whose auto-creation is under way, with the writes waiting for it.
        self._creating: dict[str, _NewTag] = {}

    # -- entry point ------------------------------------------------------

    def dispatch(self, msg: Mapping[str, Any], peer: PeerAuth | None = None) -> Response:
        """The response to ``msg``: ready bytes, or a coroutine that makes them.

        ``peer`` is the connection's authentication state; without one the
        request counts as unauthenticated (fail closed).
        """
        req_id = readable_id(msg)
        started = time.perf_counter()
        peer = peer if peer is not None else PeerAuth()
        try:
            req_id, op = parse_request_header(msg)
            self.requests[op] += 1
            if self.stopping and op != "ping":
                raise ShuttingDown("the server is stopping")
            check_op(self.auth, peer, op)
            if op == "hello":  # the one op that changes the connection's state
                result: Response = self._hello(req_id, msg, peer)
            else:
                result = getattr(self, "_op_" + op)(req_id, msg)
        except Exception as exc:
            return self.error(req_id, exc)
        if isinstance(result, bytes | list):
            self._observed(op, msg, started)
            return result
        return self._guard(req_id, result, (op, msg, started))

    def error(self, req_id: int | None, exc: BaseException) -> bytes:
        """The error frame for ``exc``; an unexpected exception is logged with its traceback."""
        if isinstance(exc, XtsdbError):
            err: XtsdbError = exc
        else:
            log.error("internal error handling request %s", req_id, exc_info=exc)
            err = InternalError(f"{type(exc).__name__}: {exc}")
        self.errors[err.name] += 1
        return _frame(error_response(req_id, err))

    async def _guard(
        self,
        req_id: int,
        work: Coroutine[Any, Any, Frame],
        timing: tuple[str, Mapping[str, Any], float] | None = None,
    ) -> Frame:
        try:
            return await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self.error(req_id, exc)
        finally:
            if timing is not None:
                self._observed(*timing)

    def _observed(self, op: str, msg: Mapping[str, Any], started: float) -> None:
        if self.observe is not None:
            self.observe(op, msg, time.perf_counter() - started)

    def _ok(self, req_id: int, **fields: Any) -> bytes:
        return _frame(ok_response(req_id, **fields))

    def _parts(self, msg: Mapping[str, Any], what: str) -> list[bytes | memoryview]:
        """A response that carries arrays, as pieces (see the module docstring)."""
        try:
            return encode_frame_parts(msg, self.max_frame)
        except FrameTooLarge:
            raise FrameTooLarge(
                f"the result ({what}) does not fit in one frame of {self.max_frame} "
                "bytes; ask for a shorter range or pass a limit"
            ) from None

    def tag_id(self, key: int | str) -> int:
        """The id of a tag given by id or by name (:class:`NotFound` for an unknown name)."""
        return key if isinstance(key, int) else self.engine.catalog.resolve(key)

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -- ops ---------------------------------------------------------------

    def _hello(self, req_id: int, msg: Mapping[str, Any], peer: PeerAuth) -> bytes:
        version, token, _client = parse_hello(msg)
        if self.auth is not None:
            try:
                peer.role = self.auth.authenticate(token)
            except AuthenticationFailed:
                peer.role, peer.hang_up = None, True  # one guess per connection
                raise
        return _frame(
            hello_response(
                req_id, SERVER_NAME, self.max_frame, auth=self.auth is not None, version=version
            )
        )

    def _op_ping(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        return self._ok(req_id)

    def _op_write(self, req_id: int, msg: Mapping[str, Any]) -> Coroutine[Any, Any, bytes]:
        tags, ts, values, qualities = parse_write(msg)
        if isinstance(tags, str):
            target = self._write_target(tags)
            if isinstance(target, _NewTag):
                # Validation on the loop: a bad write is refused before it waits for
                # (or causes) the creation of a tag; 0 stands in for the id to come.
                n = WriteBatch.build(0, ts, values, qualities).n_points
                return self._await_new_tag_write(req_id, n, target.queue((ts, values, qualities)))
            tags = target
        batch = WriteBatch.build(tags, ts, values, qualities)
        fut = self.writes.submit(batch)
        return self._await_write(req_id, batch.n_points, fut)

    async def _await_write(self, req_id: int, n: int, fut: asyncio.Future[int]) -> bytes:
        lsn = await fut
        return self._ok(req_id, n=n, lsn=lsn)

    async def _await_new_tag_write(
        self, req_id: int, n: int, queued: asyncio.Future[asyncio.Future[int]]
    ) -> bytes:
        return await self._await_write(req_id, n, await queued)

    def _write_target(self, name: str) -> int | _NewTag:
        """The id of a named write's tag, or the auto-creation its write must wait for."""
        pending = self._creating.get(name)
        if pending is not None:
            return pending
        info = self.engine.catalog.get(name)
        if info is not None:
            return info.id
        if not self.auto_create_tags:
            raise NotFound(f"no tag named {name!r} (the server does not auto-create tags)")
        new = self._creating[name] = _NewTag()
        task = asyncio.ensure_future(self._in_pool(self._get_or_create, name))

        def created(t: asyncio.Future[int]) -> None:
            # One callback queues every waiting write, in arrival order, and only then
            # lets later writes find the name in the catalog: nothing can run between.
            self._creating.pop(name, None)
            new.release(self.writes, t)

        task.add_done_callback(created)
        return new

    def _get_or_create(self, name: str) -> int:
        try:
            return self.engine.create_tag(name).id
        except InvalidInput:
            info = self.engine.catalog.get(name)  # created meanwhile (another connection)
            if info is None:
                raise  # a bad name
            return info.id

    async def _op_query(self, req_id: int, msg: Mapping[str, Any]) -> Frame:
        q = parse_query(msg)
        tag = self.tag_id(q.tag)

        def run() -> Frame:
            pts = self.engine.query(
                tag, q.start, q.end, q.limit, descending=q.descending, good_only=q.good_only
            )
            resp = points_response(
                req_id, pts.timestamps, pts.values, pts.qualities, pts.stats.as_dict(), pts.more
            )
            return self._parts(resp, f"{len(pts)} points")

        return await self._in_pool(run)

    async def _op_last(self, req_id: int, msg: Mapping[str, Any]) -> Frame:
        tags = parse_last(msg)
        ids = np.asarray([self.tag_id(t) for t in tags] if isinstance(tags, list) else tags,
                         dtype=np.uint32)  # fmt: skip

        def run() -> Frame:
            last = self.engine.last(ids)
            resp = last_response(
                req_id, last.tag_ids, last.timestamps, last.values, last.qualities, last.errors
            )
            return self._parts(resp, f"{len(last)} tags")

        return await self._in_pool(run)

    async def _op_flush(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        await self._in_pool(self.engine.flush)
        return self._ok(req_id)

    async def _op_stats(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        engine_stats = await self._in_pool(self.engine.stats)
        return self._ok(req_id, stats={"engine": engine_stats, "server": self.stats()})

    async def _op_backup(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        path = parse_backup(msg)
        if self.backups is None:
            raise PermissionDenied("backups are disabled on this server: set backup_dir")
        report = await self._in_pool(self.backups.run, path, lambda: self.stopping)
        return self._ok(req_id, backup=report)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.server_stats()) if self.server_stats else {}
        out["requests"] = dict(self.requests)
        out["errors"] = dict(self.errors)
        out.update(self.writes.stats())
        return out
