"""What the server does with one request, independent of sockets.

:meth:`Service.dispatch` takes a decoded request and returns either the
response frame at once (``hello``, ``ping``, and every request refused by
validation) or a coroutine producing it (work that waits for the group commit
or runs in the thread pool). The connection writes the bytes or runs the
coroutine as a task; nothing here knows about transports.

Encoding a query response (the array bytes) happens in the pool thread too,
so a large result never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any, Protocol, TypeVar

import numpy as np

from xtsdb.protocol import (
    DEFAULT_MAX_FRAME,
    encode_frame,
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
    PermissionDenied,
    ShuttingDown,
    XtsdbError,
)
from xtsdb.server.auth import Authenticator, PeerAuth, check_op
from xtsdb.server.backup import Backups
from xtsdb.server.engine.batch import WriteBatch
from xtsdb.server.engine.points import LastPoints, Points
from xtsdb.server.write_queue import WriteQueue

log = logging.getLogger("xtsdb.server")

try:
    SERVER_VERSION = metadata.version("xtsdb")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    SERVER_VERSION = "0+unknown"
SERVER_NAME = f"xtsdb/{SERVER_VERSION}"

Response = bytes | Coroutine[Any, Any, bytes]
T = TypeVar("T")


def _frame(msg: Mapping[str, Any], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    frame: bytes = encode_frame(msg, max_frame)
    return frame


class EngineLike(Protocol):
    """The engine methods the server calls (all blocking)."""

    def write_batches(self, batches: list[WriteBatch]) -> int: ...
    def query(
        self, tag_id: int, start_us: int, end_us: int, limit: int | None = None
    ) -> Points: ...
    def last(self, tag_ids: Any) -> LastPoints: ...
    def flush(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class Service:
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
        if isinstance(result, bytes):
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
        work: Coroutine[Any, Any, bytes],
        timing: tuple[str, Mapping[str, Any], float] | None = None,
    ) -> bytes:
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
        # Validation on the loop: a bad write is refused before it is queued.
        batch = WriteBatch.build(tags, ts, values, qualities)
        fut = self.writes.submit(batch)
        return self._await_write(req_id, batch.n_points, fut)

    async def _await_write(self, req_id: int, n: int, fut: asyncio.Future[int]) -> bytes:
        lsn = await fut
        return self._ok(req_id, n=n, lsn=lsn)

    async def _op_query(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        tag, start, end, limit = parse_query(msg)

        def run() -> bytes:
            pts = self.engine.query(tag, start, end, limit)
            resp = points_response(
                req_id, pts.timestamps, pts.values, pts.qualities, pts.stats.as_dict()
            )
            try:
                return _frame(resp, self.max_frame)
            except FrameTooLarge:
                raise FrameTooLarge(
                    f"the result ({len(pts)} points) does not fit in one frame of "
                    f"{self.max_frame} bytes; query a shorter range or pass a limit"
                ) from None

        return await self._in_pool(run)

    async def _op_last(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        tags = parse_last(msg)

        def run() -> bytes:
            last = self.engine.last(np.asarray(tags))
            return _frame(
                last_response(req_id, last.tag_ids, last.timestamps, last.values, last.qualities),
                self.max_frame,
            )

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
