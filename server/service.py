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
    parse_hello,
    parse_last,
    parse_query,
    parse_request_header,
    parse_write,
    points_response,
    readable_id,
)
from xtsdb.protocol.errors import FrameTooLarge, InternalError, ShuttingDown, XtsdbError
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
    ) -> None:
        self.engine = engine
        self.writes = writes
        self.pool = pool
        self.max_frame = max_frame
        self.server_stats: Callable[[], dict[str, Any]] | None = None  # connection gauges
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.stopping = False

    # -- entry point ------------------------------------------------------

    def dispatch(self, msg: Mapping[str, Any]) -> Response:
        """The response to ``msg``: ready bytes, or a coroutine that makes them."""
        req_id = readable_id(msg)
        try:
            req_id, op = parse_request_header(msg)
            self.requests[op] += 1
            if self.stopping and op != "ping":
                raise ShuttingDown("the server is stopping")
            handler = getattr(self, "_op_" + op)
            result: Response = handler(req_id, msg)
        except Exception as exc:
            return self.error(req_id, exc)
        if isinstance(result, bytes):
            return result
        return self._guard(req_id, result)

    def error(self, req_id: int | None, exc: BaseException) -> bytes:
        """The error frame for ``exc``; an unexpected exception is logged with its traceback."""
        if isinstance(exc, XtsdbError):
            err: XtsdbError = exc
        else:
            log.error("internal error handling request %s", req_id, exc_info=exc)
            err = InternalError(f"{type(exc).__name__}: {exc}")
        self.errors[err.name] += 1
        return _frame(error_response(req_id, err))

    async def _guard(self, req_id: int, work: Coroutine[Any, Any, bytes]) -> bytes:
        try:
            return await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self.error(req_id, exc)

    def _ok(self, req_id: int, **fields: Any) -> bytes:
        return _frame(ok_response(req_id, **fields))

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -- ops ---------------------------------------------------------------

    def _op_hello(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        # The token is accepted and ignored until authentication lands.
        version, _token, _client = parse_hello(msg)
        return _frame(
            hello_response(req_id, SERVER_NAME, self.max_frame, auth=False, version=version)
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

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.server_stats()) if self.server_stats else {}
        out["requests"] = dict(self.requests)
        out["errors"] = dict(self.errors)
        out.update(self.writes.stats())
        return out
