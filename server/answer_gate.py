"""The per-connection answer gate: how many requests of one connection answer at once.

A client may pipeline many small requests whose answers are large (queries).
Each answer is produced in memory before it is written, so the gate lets at
most :data:`MAX_RUNNING` requests of a connection produce theirs at once, and
none start while the client leaves earlier answers unread (the transport
paused writing): a client that pipelines queries and never reads holds a few
answers, not one per request. Writes skip the gate: their answers are a few
bytes, and holding them would hold the group commit's acknowledgements.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Coroutine
from typing import Any, TypeVar

MAX_RUNNING = 8
"""Requests of one connection producing their answers at once (writes aside: their
answers are a few bytes). The rest wait, holding only their request."""

T = TypeVar("T")


class AnswerGate:
    """Requests waiting for their turn to produce an answer; ``len()``: how many wait."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = MAX_RUNNING) -> None:
        self._loop = loop
        self.limit = limit
        self.running = 0  # requests producing their answers
        self.unread = False  # the client is not reading its answers: nothing starts
        self._waiting: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` once fewer than ``limit`` run and the client reads its answers."""
        try:
            while self.unread or self.running >= self.limit:
                waiter: asyncio.Future[None] = self._loop.create_future()
                self._waiting.append(waiter)
                await waiter
        except BaseException:
            close_unstarted(work)  # never started: nothing to undo
            raise
        self.running += 1
        try:
            return await work
        finally:
            self.running -= 1
            self.open()

    def reading(self, reads: bool) -> None:
        """The client stopped (False) or resumed (True) reading its answers."""
        self.unread = not reads
        self.open()

    def open(self) -> None:
        """Let waiting requests start, as many as there is room for."""
        free = self.limit - self.running
        while self._waiting and free > 0 and not self.unread:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1


def close_unstarted(coro: Any) -> None:
    """Close a request's coroutine that never ran, and the ones it was handed.

    A request is a chain (gate -> guard -> op) built before the task runs; a
    task cancelled before its first step (its connection went away) leaves every
    link unstarted, and each would be reported "never awaited". A started
    coroutine is left to its own ``finally`` blocks.
    """
    if not inspect.iscoroutine(coro) or inspect.getcoroutinestate(coro) != inspect.CORO_CREATED:
        return
    for arg in inspect.getcoroutinelocals(coro).values():
        close_unstarted(arg)
    coro.close()
