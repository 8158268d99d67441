"""The xtsdb client SDK and the ``xtsdb`` command line tool.

Two clients with one set of operations (``write``, ``write_many``,
``write_point``/``flush``, ``query``, ``last``, ``stats``, ``ping``,
``flush_server``)::

    import xtsdb.client

    with xtsdb.client.connect("xtsdb://127.0.0.1:7878") as db:
        db.write(17, timestamps_us, values)
        result = db.query(17, start, end)

    async with await xtsdb.client.AsyncClient.connect(url) as db:
        await db.write(17, timestamps_us, values)

How the pieces meet:

- ``_core``     -- sans-I/O and shared by both clients: URL parsing, request
  ids, per-connection bookkeeping (:class:`~._core.Session` matches responses
  to requests by id), and one *plan* per operation (a generator of
  send/wait steps: paged queries, pipelined multi-frame writes).
- ``batching``  -- the ``write_point`` buffer (``array.array`` columns).
- ``_convert``  -- timestamps (int us, aware datetimes, ``datetime64``) and
  column checks, done before anything is sent.
- ``results``   -- :class:`QueryResult` and :class:`LastResult`.
- ``aio``       -- :class:`AsyncClient`: asyncio streams and a reader task.
- ``sync``      -- :class:`Client`: a blocking socket, a reader thread and a
  flusher thread.
- ``cli``       -- ``xtsdb ping | write-csv | query | last | stats``.

Errors are the classes of :mod:`xtsdb.protocol.errors`, whether raised by a
check here or sent by the server; :class:`XtsdbConnectionError` is a
``ConnectionError`` and :class:`XtsdbTimeout` a ``TimeoutError``.
"""

from __future__ import annotations

from xtsdb.protocol.errors import (
    InvalidInput,
    XtsdbConnectionError,
    XtsdbError,
    XtsdbTimeout,
)

from ._core import DEFAULT_PORT, DEFAULT_URL
from .aio import AsyncClient
from .results import LastResult, QueryResult
from .sync import Client, connect

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_URL",
    "AsyncClient",
    "Client",
    "InvalidInput",
    "LastResult",
    "QueryResult",
    "XtsdbConnectionError",
    "XtsdbError",
    "XtsdbTimeout",
    "connect",
]
