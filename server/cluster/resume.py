"""Keeping a consumer of the log running through NATS failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("xtsdb.cluster")


async def keep_running(
    consume: Callable[[], Awaitable[None]],
    what: str,
    wait: float,
    on_error: Callable[[], None] = lambda: None,
) -> None:
    """Run ``consume`` again after any failure (a NATS server gone, a consumer reset),
    ``wait`` seconds later; only cancellation ends it. ``consume`` resumes from where the
    caller's own state says it got, so nothing is skipped or applied twice."""
    while True:
        try:
            await consume()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s: applying stopped (%r); resuming", what, exc)
            on_error()
            await asyncio.sleep(wait)
