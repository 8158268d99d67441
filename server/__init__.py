"""The xtsdb network server: the only place where the event loop, the flush
task, the thread pools and the storage engine meet.

Data flows one way: socket -> frame -> request -> engine -> result -> frame ->
socket.

- ``config``       :class:`ServerConfig`: every setting declared with its help
                   and checks; ``config_sources`` loads it from flags >
                   ``XTSDB_*`` environment > TOML file > defaults.
- ``connection``   :class:`Connection`, an ``asyncio.Protocol`` per client:
                   feeds the sans-I/O :mod:`xtsdb.protocol` decoder, pauses the
                   socket for backpressure, writes responses as they complete
                   (out of order, matched by id); ``answer_gate`` bounds how
                   many of its requests produce answers at once.
- ``limits``       :class:`Connections` (the connection cap, the all-readers
                   pause, the gauges), the budget of partial requests shared by
                   both ports, and :func:`memory_bound`.
- ``context``      :class:`ServerContext`: what the binary and HTTP endpoints
                   share (engine, write queue, query pool, auth, stopping).
- ``service``      :class:`Service`: dispatches a decoded request to its op's
                   handler (``routes``), independent of sockets.
- ``historian``    the handlers of the historian ops (aggregate, interpolate,
                   plot, deletes, the tag catalog).
- ``write_queue``  :class:`WriteQueue`: the group commit; one flush task turns
                   every write queued meanwhile into one WAL write + one fsync.
- ``http_api``     the one HTTP port (``http_port``): every route below on one
                   listener, open before recovery (data routes answer 503
                   until the engine is open); ``http_gate`` checks credentials
                   and roles on the request head and holds the start/stop gate.
- ``http_endpoint`` :class:`HttpListener` and :class:`Router`: the HTTP plumbing
                   (``http_request`` reads a request within its limits).
- ``influx``       :class:`InfluxRoutes`: InfluxDB 1.x ``/write`` (line
                   protocol into the write queue; ``influx_write`` cuts a body
                   into batches), ``/query`` (InfluxQL: ``influxql_*``),
                   ``/ping``, ``/health``.
- ``http_prom``    Prometheus remote write and read (``prom_*``): a remote
                   write is one batch of the group commit, answered after it.
- ``http_ops``     ``/metrics`` (``metrics``), ``/healthz``, ``/readyz``.
- ``app``          :func:`serve` (runs until a shutdown event is set, then stops
                   gracefully) and :class:`ServerThread` (a server in a
                   background thread, for tests and embedding).
- ``main``         the ``xtsdb-server`` command: config, logging, uvloop,
                   SIGTERM/SIGINT.
- ``engine/``      the storage engine: blocking, thread-safe, no asyncio.
"""
