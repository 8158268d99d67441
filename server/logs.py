"""Log output: JSON lines for machines, readable lines for people.

``log_format`` chooses:

- ``json``: one JSON object per line, ``{"ts", "level", "logger", "msg", ...}``
  plus every field a call passed with ``extra={...}`` (the slow-request line
  carries ``op`` and ``duration_ms``, for example), and ``exc`` with the
  traceback when there is one. Log collectors (Docker's json-file driver,
  journald, Loki, ...) index the fields without a parsing rule.
- ``text``: ``2024-05-01 12:00:00,123 INFO xtsdb.server: message``.
- ``auto`` (the default): ``text`` when stderr is a terminal, ``json`` when it
  is not -- a container, a service manager, a pipe.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

LOG_FORMATS = ("auto", "json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Every attribute a bare LogRecord has: whatever else a record carries came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",  # Python 3.12+
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside strings are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # default=str: an odd `extra` value (a Path, an exception) must not lose the line.
        return json.dumps(out, default=str, ensure_ascii=False)


def resolve_format(log_format: str, stream: IO[str]) -> str:
    """``json`` or ``text``: what ``auto`` means for ``stream``."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {LOG_FORMATS}, not {log_format!r}")
    if log_format != "auto":
        return log_format
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream: not a person
        tty = False
    return "text" if tty else "json"


def make_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    if resolve_format(log_format, stream) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    return handler


def configure(level: str, log_format: str, stream: IO[str] | None = None) -> None:
    """Set up the root logger for the ``xtsdb-server`` process.

    Like ``logging.basicConfig`` (which it calls), it does nothing when the
    root logger already has handlers: an embedding application, or pytest
    calling ``main()`` in-process, keeps its own logging.
    """
    logging.basicConfig(level=level.upper(), handlers=[make_handler(log_format, stream)])
