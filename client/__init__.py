"""The xtsdb client SDK and the ``xtsdb`` command line tool.

Two clients with one set of operations (``write``, ``write_many``,
``write_point``/``flush``, ``query``, ``last``, ``stats``, ``ping``,
``flush_server``; the historian ops ``aggregate``, ``interpolate``, ``plot``,
``delete``, ``delete_tag``; the tag catalog ``create_tag``, ``tag``,
``tags``, ``update_tag``, ``rename_tag``, ``remove_tag``)::

    import xtsdb.client

    with xtsdb.client.connect("xtsdb://127.0.0.1:7878") as db:
        db.write(17, timestamps_us, values)
        result = db.query(17, start, end)

    async with await xtsdb.client.AsyncClient.connect(url) as db:
        await db.write(17, timestamps_us, values)

How the pieces meet:

- ``_core``     -- sans-I/O and shared by both clients: URL parsing, request
  ids, per-connection bookkeeping (:class:`~._core.Session` matches responses
  to requests by id), *plans* (generators of send/wait steps: paged queries,
  pipelined multi-frame writes), and the retry-once and reconnect rules.
- ``_ops``, ``historian`` -- every operation, declared once: a plan function
  with the method's signature and docstring.
- ``_surface``  -- ``operation``: a plan function -> a blocking method of
  :class:`Client` and a coroutine method of :class:`AsyncClient`, with that
  signature for ``help()``, ``inspect`` and type checkers; the constructor
  both clients share.
- ``_points``, ``_ledger`` -- the ``write_point`` state, sans-I/O: buffer,
  numbered batches, what each caller was told of failures; ``point_buffer``
  -- the buffer itself (``array.array`` columns).
- ``_convert``  -- timestamps (int us, aware datetimes, ``datetime64``) and
  column checks, done before anything is sent.
- ``results``   -- :class:`QueryResult`, :class:`LastResult`, :class:`AggregateResult`,
  :class:`InterpolateResult` and :class:`TagInfo`.
- ``aio`` (+ ``aio_points``) -- :class:`AsyncClient`: asyncio streams, a reader
  task, the flush timer. ``sync`` (+ ``sync_points``) -- :class:`Client`: a
  blocking socket, a reader thread and a flusher thread. Both only move bytes,
  wait and run timers; adding an operation changes neither.
- ``cli``       -- ``xtsdb ping | write-csv | query | last | stats``.
- ``cli_ingest``, ``importexport``, ``csv_chunks``, ``parquet_io`` -- ``xtsdb
  import`` / ``export``: files in chunks -> columns -> multi-tag writes, and back.
- ``dataframes`` -- ``write_df`` / ``query_df``: pandas frames <-> write items
  and query results (pandas and pyarrow are optional extras, imported lazily).

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
from .results import (
    AggregateResult,
    InterpolateResult,
    LastResult,
    QueryResult,
    TagInfo,
    TagPage,
)
from .sync import Client, connect

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_URL",
    "AggregateResult",
    "AsyncClient",
    "Client",
    "InterpolateResult",
    "InvalidInput",
    "LastResult",
    "QueryResult",
    "TagInfo",
    "TagPage",
    "XtsdbConnectionError",
    "XtsdbError",
    "XtsdbTimeout",
    "connect",
]
