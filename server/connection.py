"""One client connection: socket bytes in, frames out, with backpressure.

A :class:`Connection` is an ``asyncio.Protocol``: ``data_received`` feeds the
sans-I/O :class:`~xtsdb.protocol.frames.FrameDecoder`, each complete request
goes to :meth:`Service.dispatch`, and responses are written as they complete
-- possibly out of order, matched by the request id.

Memory stays bounded per connection by pausing the socket, never by
buffering: reading stops while the bytes of unanswered requests exceed
``max_pending_bytes``, while the client does not read its responses (the
transport's ``pause_writing``), and while the global write queue is full
(``Connections`` pauses everyone). The decoder then holds at most what
one read returned plus one partial frame, and partial frames of all
connections together are capped by a :class:`~xtsdb.server.limits.ByteBudget`
(``max_partial_bytes``): a frame that does not fit is refused with
``overloaded``. Answers are bounded too, by the connection's
:class:`~xtsdb.server.answer_gate.AnswerGate`.

:class:`~xtsdb.server.limits.Connections` is the set of open connections:
the connection cap, the global pause, and the gauges that ``stats`` reports.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from xtsdb.protocol.errors import Overloaded, ProtocolError, XtsdbError
from xtsdb.protocol.frames import FrameDecoder
from xtsdb.server.answer_gate import AnswerGate, close_unstarted
from xtsdb.server.auth import PREAUTH_MAX_FRAME, PeerAuth
from xtsdb.server.context import Frame
from xtsdb.server.limits import Connections
from xtsdb.server.service import Service

log = logging.getLogger("xtsdb.server")

MAX_INFLIGHT = 128
LINGER_S = 2.0  # a refused stream's bytes are read and dropped this long (_fail)
"""Requests of one connection being worked on at once; more wait in the socket.

Bounds what small requests with large answers (queries) can pin in memory,
and a pool of ``query_threads`` could not run more at once anyway."""

REQUEST_OVERHEAD = 256
"""Bytes charged per unanswered request on top of its frame: a flood of tiny
requests (pings) must hit ``max_pending_bytes`` too, since each holds a task."""


class Connection(asyncio.Protocol):
    def __init__(
        self,
        registry: Connections,
        service: Service,
        *,
        max_frame: int,
        max_pending_bytes: int,
        idle_timeout: float,
        frame_timeout: float = 0.0,
    ) -> None:
        self.registry = registry
        self.service = service
        self.auth = PeerAuth()
        self.max_frame = max_frame
        # Until it authenticates a connection may only send small frames (hello, ping).
        needs_auth = self.service.auth is not None
        self.decoder = FrameDecoder(min(max_frame, PREAUTH_MAX_FRAME) if needs_auth else max_frame)
        self.max_pending = max_pending_bytes
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self._frame_started: float | None = None  # when the frame now half-received began
        self._frame_timer: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task[Frame]] = set()
        self.pending = 0  # bytes (+ overhead) of requests received and not yet answered
        self.reserved = 0  # bytes charged to the registry's budget for partial frames
        self.reading_paused = False
        self.peer = "?"
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.gate = AnswerGate(self._loop)  # requests waiting to produce their answers
        self._closing = False
        self._eof = False
        self._draining = False
        self._frames_done = True  # the last drain consumed every complete frame
        self._last_activity = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if not self.registry.admit(self):
            log.warning(
                "refusing connection from %s: %d connections open (max_connections)",
                self.peer,
                len(self.registry.open),
            )
            self._closing = True
            overloaded = Overloaded(
                f"too many connections ({self.registry.max_connections}); try again later"
            )
            self._transport.write(self.service.error(None, overloaded))
            self._transport.close()
            return
        log.debug("connection from %s", self.peer)
        if self.idle_timeout > 0:
            self._idle_timer = self._loop.call_later(self.idle_timeout, self._check_idle)
        if self.service.auth is not None and self.frame_timeout > 0:
            self._loop.call_later(self.frame_timeout, self._check_authenticated)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._frame_timer is not None:
            self._frame_timer.cancel()
        if self in self.registry.open:
            self.registry.open.discard(self)
            log.debug("connection from %s closed (%s)", self.peer, exc or "clean")
        self.registry.budget.give(self.reserved)
        self.reserved = 0
        # Queued writes still commit (their futures are already in the write
        # queue); only the answers, which nobody can receive now, are dropped.
        for task in list(self.tasks):
            task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_activity = self._loop.time()
        try:
            self.decoder.feed(data)
        except ProtocolError as exc:
            # No way to find the next frame boundary: answer once and hang up.
            log.info("closing %s: %s", self.peer, exc)
            self._fail(exc)
            return
        if not self._charge():
            log.warning(
                "refusing a frame of %s: %d bytes of partial requests already held "
                "(max_partial_bytes %d)",
                self.peer,
                self.registry.budget.used,
                self.registry.budget.cap,
            )
            self._fail(Overloaded("the server holds too many partial requests; retry later"))
            return
        self._frames_done = False
        self.drain()

    def eof_received(self) -> bool:
        if self._closing:  # a lingering close (_fail): the client is done too
            self.close()
            return False
        # A client may half-close after its last request: answer what is in
        # flight, then close (returning True keeps our side writable).
        self._eof = True
        self.drain()
        self._close_if_done()
        # TLS has no half-close: asyncio closes the transport anyway (and warns if asked not to).
        t = self._transport
        return t is None or t.get_extra_info("sslcontext") is None

    def pause_writing(self) -> None:
        # The client is not reading its responses: stop reading its requests.
        self.gate.reading(False)
        self._sync_reading()

    def resume_writing(self) -> None:
        self.gate.reading(True)
        self.kick()

    # -- request flow --------------------------------------------------------

    def blocked(self) -> bool:
        return (
            self._closing
            or self.gate.unread
            or self.registry.paused
            or self.pending > self.max_pending
            or len(self.tasks) >= MAX_INFLIGHT
        )

    def drain(self) -> None:
        """Handle every buffered complete frame while not blocked, then (un)pause the socket."""
        if self._draining:
            return  # re-entered from a synchronous response; the outer loop continues
        self._draining = True
        try:
            while not self.blocked():
                before = self.decoder.buffered
                try:
                    msg = self.decoder.next_message()
                except ProtocolError as exc:  # a bad body costs only that frame
                    self._frame_started = None
                    self._write(self.service.error(None, exc))
                    continue
                if msg is None:
                    self._frames_done = True
                    break
                self._frame_started = None
                self._handle(msg, before - self.decoder.buffered)
        finally:
            self._draining = False
        self._charge()  # frames taken out: give their bytes back
        self._sync_reading()
        self._watch_frame()

    def _charge(self) -> bool:
        """Charge the budget for what the decoder holds, the partial frame at its full size.

        False, with the charge unchanged, when a larger charge does not fit.
        """
        held = self.decoder.buffered
        want = held + self.decoder.wanted if held else 0
        delta = want - self.reserved
        if delta > 0 and not self.registry.budget.take(delta):
            return False
        if delta < 0:
            self.registry.budget.give(-delta)
        self.reserved = want
        return True

    def kick(self) -> None:
        """Something that blocked reading may have cleared: continue with buffered frames."""
        if not self._closing:
            self.drain()

    def _handle(self, msg: dict[str, Any], size: int) -> None:
        cost = size + REQUEST_OVERHEAD
        self.pending += cost
        if self.pending > self.registry.pending_peak:
            self.registry.pending_peak = self.pending
        result = self.service.dispatch(msg, self.auth)
        if self.auth.role is not None:
            self.decoder.max_frame = self.max_frame
        if isinstance(result, bytes | list):
            self._respond(result, cost)
            if self.auth.hang_up:
                log.info("closing %s: authentication failed", self.peer)  # never the token
                self.close()
            return
        work = result
        if msg.get("op") != "write":
            result = self.gate.run(work)
        task = self._loop.create_task(result)
        self.tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, cost, work))

    def _task_done(self, task: asyncio.Task[Frame], cost: int, work: object) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            # A task cancelled before its first step never entered the gate,
            # so the request's own coroutine is closed here, not by the gate.
            close_unstarted(task.get_coro())
            close_unstarted(work)
            self.pending -= cost
            return
        exc = task.exception()
        if exc is not None:  # Service guards its coroutines; this is a bug, not a client error
            self._respond(self.service.error(None, exc), cost)
        else:
            self._respond(task.result(), cost)
        self._close_if_done()

    def _respond(self, frame: Frame, cost: int) -> None:
        self.pending -= cost
        self._write(frame)
        if not self._draining:
            self.kick()

    def _write(self, frame: Frame) -> None:
        t = self._transport
        if t is None or t.is_closing():
            return
        if isinstance(frame, bytes):
            t.write(frame)
        else:
            # Pieces viewing large result arrays: the transport keeps them (no join)
            # and counts them in its write buffer, so pause_writing still applies.
            t.writelines(frame)

    def write_buffer_size(self) -> int:
        t = self._transport
        return t.get_write_buffer_size() if t is not None and not t.is_closing() else 0

    def _sync_reading(self) -> None:
        t = self._transport
        if t is None or t.is_closing():
            return
        want_pause = self.blocked()
        if want_pause and not self.reading_paused:
            t.pause_reading()
            self.reading_paused = True
            self.registry.read_pauses += 1
        elif not want_pause and self.reading_paused:
            t.resume_reading()
            self.reading_paused = False

    # -- closing ----------------------------------------------------------------

    def _fail(self, exc: XtsdbError) -> None:
        """Answer ``exc`` and hang up, with a lingering close where TCP allows it.

        Closing a socket with unread bytes sends a reset, which can destroy the
        answer before the client reads it (seen with a too-large frame whose body
        was still arriving): so the answer is followed by a FIN and what the
        client still sends is read and dropped for up to ``LINGER_S``.
        """
        self._write(self.service.error(None, exc))
        t = self._transport
        if t is None or t.is_closing() or not t.can_write_eof():
            self.close()
            return
        self._closing = True  # data_received drops everything from now on
        t.write_eof()
        if self.reading_paused:
            t.resume_reading()
            self.reading_paused = False
        self._loop.call_later(LINGER_S, self.close)

    def _close_if_done(self) -> None:
        if self._eof and not self.tasks and self._frames_done:
            self.close()

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self._closing:
            return
        idle_for = self._loop.time() - self._last_activity
        busy = bool(self.tasks) or self.reading_paused  # waiting on us is not idling
        if busy or idle_for < self.idle_timeout:
            delay = self.idle_timeout if busy else max(self.idle_timeout - idle_for, 0.05)
            self._idle_timer = self._loop.call_later(delay, self._check_idle)
            return
        log.info("closing %s: idle for %.0f s (idle_timeout)", self.peer, idle_for)
        self.registry.idle_closed += 1
        self.close()

    def _watch_frame(self) -> None:
        """Run the frame_timeout clock while a frame is half received and we are reading."""
        partial = self._frames_done and self.decoder.buffered > 0
        if not partial or self.frame_timeout <= 0 or self._closing:
            self._frame_started = None
            return
        if self._frame_started is None:
            self._frame_started = self._loop.time()
        if self._frame_timer is None:
            self._frame_timer = self._loop.call_later(self.frame_timeout, self._check_frame)

    def _check_frame(self) -> None:
        # Slow loris: idle_timeout never fires for a client that sends a byte now
        # and then, so a started frame must complete within frame_timeout.
        self._frame_timer = None
        if self._closing or self._frame_started is None:
            return
        now = self._loop.time()
        if self.reading_paused:  # we stopped reading, so the client cannot finish: not its fault
            self._frame_started = now
        late = now - self._frame_started
        if late < self.frame_timeout:
            self._frame_timer = self._loop.call_later(self.frame_timeout - late, self._check_frame)
            return
        log.info(
            "closing %s: a frame is still incomplete after %.1f s (frame_timeout)", self.peer, late
        )
        self.registry.frame_timeouts += 1
        self.abort()  # abort, not close: a peer this slow may not read our buffered answers

    def _check_authenticated(self) -> None:
        if self._closing or self.auth.role is not None:
            return
        log.info("closing %s: no successful hello within %.1f s", self.peer, self.frame_timeout)
        self.registry.auth_timeouts += 1
        self.abort()

    def close(self) -> None:
        """Close after the responses already written are flushed."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now (shutdown after its timeout)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()
