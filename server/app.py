"""Starting and stopping a whole server: :func:`serve` and :class:`ServerThread`.

:func:`serve` opens the HTTP port (probes answer during recovery), opens the
engine, starts the flush task, listens on the binary port, and runs until the
``shutdown`` event it is given is set (``main`` sets it from SIGTERM/SIGINT,
:class:`ServerThread` from ``stop()``). Then it stops accepting, lets
in-flight requests (binary and HTTP) finish within ``shutdown_timeout``,
commits every queued write, closes the connections, closes the engine (seal +
checkpoint) and last the HTTP port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from xtsdb.server.auth import Authenticator, load_tokens, token_file_is_private
from xtsdb.server.backup import Backups
from xtsdb.server.config import ServerConfig, is_loopback
from xtsdb.server.connection import Connection
from xtsdb.server.context import ServerContext
from xtsdb.server.engine import Engine
from xtsdb.server.http_api import HttpApi
from xtsdb.server.http_ops import Health
from xtsdb.server.limits import ByteBudget, Connections, memory_bound
from xtsdb.server.metrics import Metrics
from xtsdb.server.service import Service
from xtsdb.server.tls import server_context
from xtsdb.server.write_queue import WriteQueue

log = logging.getLogger("xtsdb.server")

ReadyCallback = Callable[[str, int], None]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed, asyncio's otherwise: the server runs on both."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


@dataclass
class _Front:
    """What exists before the engine opens: the HTTP port answers probes during recovery."""

    metrics: Metrics
    health: Health
    auth: Authenticator | None
    ssl_ctx: ssl.SSLContext | None
    budget: ByteBudget  # bodies being received, both ports together
    http: HttpApi | None


async def serve(
    config: ServerConfig,
    shutdown: asyncio.Event,
    on_ready: ReadyCallback | None = None,
    on_http: ReadyCallback | None = None,
) -> None:
    """Run a server until ``shutdown`` is set; ``on_ready(host, port)`` once it listens.

    The HTTP port (``http_port``; -1: none) listens first, before recovery, so
    that ``/readyz`` answers 503 while the WAL replays; ``on_http(host, port)``
    once it listens. Its data routes answer 503 until the engine is open.
    """
    auth, ssl_ctx = _security(config)
    metrics, health = Metrics(Path(config.data_dir).absolute()), Health()
    budget = ByteBudget(config.max_partial_bytes)
    http: HttpApi | None = None
    if config.http_port >= 0:
        http = HttpApi.from_config(config, metrics, health, auth, budget)
        await http.start(config.host, config.http_port, ssl=ssl_ctx)
        if on_http is not None:
            on_http(http.host, http.port)
    try:
        await _serve(
            config, shutdown, on_ready, _Front(metrics, health, auth, ssl_ctx, budget, http)
        )
    finally:
        if http is not None:
            await http.close()


async def _serve(
    config: ServerConfig,
    shutdown: asyncio.Event,
    on_ready: ReadyCallback | None,
    front: _Front,
) -> None:
    loop = asyncio.get_running_loop()
    data_dir = Path(config.data_dir).absolute()
    log.info("opening data directory %s", data_dir)
    started = time.monotonic()
    # Opening runs recovery (WAL replay), which may take seconds: not on the loop.
    engine = await loop.run_in_executor(None, Engine.open, data_dir, config.engine_config())
    log.info("engine ready in %.2f s", time.monotonic() - started)
    front.health.engine = engine
    front.metrics.attach(engine)
    try:
        await _run(engine, config, data_dir, shutdown, on_ready, front)
    finally:
        # The HTTP port outlives the engine: probes and scrapes must not reach a closed one.
        front.health.engine = None
        front.metrics.detach()
        await loop.run_in_executor(None, engine.close)
        log.info("xtsdb stopped: engine closed (sealed and checkpointed)")


async def _run(
    engine: Engine,
    config: ServerConfig,
    data_dir: Path,
    shutdown: asyncio.Event,
    on_ready: ReadyCallback | None,
    front: _Front,
) -> None:
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(config.query_threads, thread_name_prefix="xtsdb-query")
    registry = Connections(max_connections=config.max_connections, budget=front.budget)
    # The queue commits through a wrapper that times each group commit (metrics); over
    # its byte limit it pauses reading on every binary connection.
    writes = WriteQueue(
        front.metrics.timed(engine),
        max_queue_bytes=config.max_queue_bytes,
        on_pressure=registry.set_paused,
    )
    http = front.http
    cluster = None
    if config.cluster:  # imports nats: never loaded by a single node
        from xtsdb.server.cluster.node import ClusterNode

        cluster = ClusterNode(config, engine, writes, pool)
    ctx = ServerContext(
        engine,
        writes,
        pool,
        config.max_frame,
        auth=front.auth,
        backups=Backups(engine, config.backup_dir) if config.backup_dir else None,
        auto_create_tags=config.auto_create_tags,
        observe=front.metrics.observer(config.slow_query_ms),
        gauges=[registry.stats] if http is None else [registry.stats, http.stats],
        cluster=cluster,
    )
    service = Service(ctx)
    terms = memory_bound(config)
    log.info(
        "memory bound about %d MiB: %s",
        sum(n for _, n in terms) >> 20,
        "; ".join(f"{what} {n >> 20} MiB" for what, n in terms),
    )
    front.health.server_stats = ctx.stats

    def factory() -> Connection:
        return Connection(
            registry,
            service,
            max_frame=config.max_frame,
            max_pending_bytes=config.max_pending_bytes,
            idle_timeout=config.idle_timeout,
            frame_timeout=config.frame_timeout,
        )

    ssl_ctx = front.ssl_ctx
    try:
        listener = await loop.create_server(
            factory,
            config.host,
            config.port,
            backlog=1024,
            ssl=ssl_ctx,
            # A handshake that never finishes must not hold a socket for long either.
            ssl_handshake_timeout=(config.frame_timeout or None) if ssl_ctx else None,
        )
    except BaseException:
        pool.shutdown(wait=False)
        raise
    flush_task = loop.create_task(writes.run(), name="xtsdb-flush")
    try:
        host, port = listener.sockets[0].getsockname()[:2]
        # A node joins before it says it is ready (its appliers use the queue); a SIGTERM
        # while it joins (NATS may take a while) stops it at once.
        if cluster is not None and not await cluster.join(host, port, shutdown):
            return
        if config.ready_file is not None:
            _write_ready_file(config.ready_file, host, port)
        log.info(
            "xtsdb listening on %s:%d data_dir=%s durability=%s",
            host,
            port,
            data_dir,
            config.durability,
        )
        if http is not None:
            http.attach(ctx)
        front.health.phase = "ready"
        if on_ready is not None:
            on_ready(host, port)
        stop_wait = loop.create_task(shutdown.wait())
        await asyncio.wait({stop_wait, flush_task}, return_when=asyncio.FIRST_COMPLETED)
        if flush_task.done():  # only a bug ends it early; stop rather than hang every writer
            stop_wait.cancel()
            log.error("the flush task ended unexpectedly; stopping")
    finally:
        front.health.phase = "stopping"
        if http is not None:  # its requests in progress commit before the queue stops
            await http.drain(config.shutdown_timeout)
        await _stop(config, registry, ctx, writes, flush_task, listener)
        pool.shutdown(wait=False, cancel_futures=True)
        await loop.run_in_executor(None, pool.shutdown, True)
        if config.ready_file is not None:
            with contextlib.suppress(OSError):
                config.ready_file.unlink()


async def _stop(
    config: ServerConfig,
    registry: Connections,
    ctx: ServerContext,
    writes: WriteQueue,
    flush_task: asyncio.Task[None],
    listener: asyncio.Server,
) -> None:
    """Stop accepting, finish in-flight work within ``shutdown_timeout``, commit, close."""
    deadline = time.monotonic() + config.shutdown_timeout
    listener.close()
    ctx.stopping = True
    inflight = registry.inflight()
    log.info(
        "xtsdb stopping: %d connections, %d requests in flight, %d writes queued",
        len(registry.open),
        len(inflight),
        writes.depth,
    )
    if inflight:
        _, late = await asyncio.wait(inflight, timeout=config.shutdown_timeout)
        if late:
            log.warning(
                "%d requests still running after %.0f s; dropping their responses",
                len(late),
                config.shutdown_timeout,
            )
            for task in late:
                task.cancel()
    if ctx.cluster is not None:  # stops publishing and applying before the queue stops
        await ctx.cluster.close()
    # Everything already queued is committed before the engine closes; the
    # flush task refuses new writes from here on.
    writes.stop()
    try:
        await flush_task
    except Exception:
        log.exception("the flush task failed")
    for conn in list(registry.open):
        conn.close()
    deadline = max(deadline, time.monotonic() + 1.0)  # a moment to send the last answers
    while registry.open and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # transports flush their buffers, then report closed
    for conn in list(registry.open):
        conn.abort()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(listener.wait_closed(), 1.0)
    stats = writes.stats()
    log.info(
        "xtsdb served %d writes (%d points) in %d commits, %.1f writes per commit",
        stats["writes"],
        stats["points_written"],
        stats["commits"],
        stats["writes_per_commit"],
    )


def _security(config: ServerConfig) -> tuple[Authenticator | None, ssl.SSLContext | None]:
    """The token checker and TLS context the config asks for; logs the posture (no secrets)."""
    tokens = load_tokens(config.tokens, config.token_file)
    auth = Authenticator(tokens) if tokens else None
    ssl_ctx = server_context(config.tls_cert, config.tls_key, config.tls_client_ca)
    if config.token_file is not None and not token_file_is_private(config.token_file):
        log.warning("token file %s is readable by other users (chmod 600 it)", config.token_file)
    counts = auth.counts() if auth else {}
    tls_mode = "on, client certificates required" if config.tls_client_ca else "on"
    log.info(
        "authentication: %s; TLS: %s",
        ", ".join(f"{n} {role} tokens" for role, n in counts.items()) if auth else "off",
        tls_mode if ssl_ctx else "off",
    )
    if not is_loopback(config.host):
        if auth is None:
            log.warning("listening on %s with no authentication (--allow-remote)", config.host)
        elif ssl_ctx is None:
            log.warning("tokens travel in clear text to %s: configure --tls-cert", config.host)
    return auth, ssl_ctx


def _write_ready_file(path: Path, host: str, port: int) -> None:
    # Atomic: a reader polling for the file never sees it half-written.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{host} {port}\n")
    os.replace(tmp, path)


class ServerThread:
    """A complete server on its own event loop in a background thread.

    For tests and embedding::

        with ServerThread(ServerConfig(port=0, data_dir=tmp)) as srv:
            connect(srv.host, srv.port)

    ``start()`` returns once the server listens (or raises what stopped it);
    ``stop()`` shuts it down gracefully and re-raises a failure of the server.
    """

    def __init__(self, config: ServerConfig, *, start_timeout: float = 60.0) -> None:
        self.config = config
        self.start_timeout = start_timeout
        self.host = ""
        self.port = 0
        self.http_port = 0  # of the HTTP API, once started (config.http_port >= 0)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"xtsdb://{host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def data_dir(self) -> Path:
        return Path(self.config.data_dir)

    def start(self) -> ServerThread:
        if self._thread is not None:
            raise RuntimeError("ServerThread already started")
        self._thread = threading.Thread(target=self._thread_main, name="xtsdb-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            self.stop()
            raise TimeoutError(f"server did not start within {self.start_timeout} s")
        if self._error is not None:
            self._thread.join(self.start_timeout)
            raise self._error
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop; waits up to ``timeout`` (default: shutdown_timeout + 30 s)."""
        thread, loop, shutdown = self._thread, self._loop, self._shutdown
        if thread is None:
            return
        if loop is not None and shutdown is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may have just finished
                loop.call_soon_threadsafe(shutdown.set)
        thread.join(timeout if timeout is not None else self.config.shutdown_timeout + 30)
        if thread.is_alive():
            raise TimeoutError("server thread did not stop in time")
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _thread_main(self) -> None:
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                runner.run(self._main())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._shutdown = asyncio.Event()
        await serve(self.config, self._shutdown, self._on_ready, self._on_http)

    def _on_ready(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._ready.set()

    def _on_http(self, host: str, port: int) -> None:
        self.http_port = port

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
