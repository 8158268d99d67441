"""``xtsdb-server`` / ``python -m xtsdb.server``: load the config, run until a signal.

Exit codes: 0 after a clean stop (SIGTERM or SIGINT), 1 when the server
could not start (data directory locked or damaged, address in use), 2 for a
bad configuration.

``xtsdb-server check --data-dir D [--repair]`` verifies a stopped server's
data directory instead (:mod:`xtsdb.server.check`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from xtsdb.protocol.errors import XtsdbError
from xtsdb.server import logs
from xtsdb.server.app import new_event_loop, serve
from xtsdb.server.config import ConfigError, ServerConfig

log = logging.getLogger("xtsdb.server")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["check"]:  # the one subcommand: offline verification (server/check.py)
        from xtsdb.server.check import main as check_main

        return check_main(args[1:])
    try:
        config = ServerConfig.load(args, os.environ)
    except ConfigError as exc:
        print(f"xtsdb-server: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse: --help, or a malformed flag (already reported)
        return exc.code if isinstance(exc.code, int) else 2
    logs.configure(config.log_level, config.log_format)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(_serve_until_signal(config))
    except (XtsdbError, OSError) as exc:
        # Expected start-up failures (lock held, bad format, port in use): one
        # clear line, no traceback.
        log.error("xtsdb could not run: %s", exc)
        return 1
    return 0


async def _serve_until_signal(config: ServerConfig) -> None:
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if shutdown.is_set():
            log.warning(
                "received %s again; already stopping (shutdown_timeout %.0f s)",
                sig.name,
                config.shutdown_timeout,
            )
            return
        log.info("received %s, stopping", sig.name)
        shutdown.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await serve(config, shutdown)
