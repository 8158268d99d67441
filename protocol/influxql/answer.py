"""InfluxDB 1.x ``/query`` answers: times, series, results, errors (JSON bytes).

A statement's answer is ``{"statement_id": i, "series": [...]}`` (no
``series`` key when nothing matched) or ``{"statement_id": i, "error": ...}``;
a query that does not parse is ``{"error": "error parsing query: ..."}``.
Times leave as RFC3339 with nanoseconds (trailing zeros trimmed, as Go's
``RFC3339Nano``) or, with ``epoch=``, as integers in that unit, truncated
toward zero as InfluxDB divides.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from xtsdb.protocol.errors import InvalidInput

from .lexer import UNITS_NS

# epoch= units (InfluxDB's: the duration units up to hours, and "n" for ns)
EPOCHS = {"n": 1} | {u: UNITS_NS[u] for u in ("ns", "u", "µ", "ms", "s", "m", "h")}
MIN_TIME = -(1 << 63) + 2  # InfluxDB's time range, nanoseconds
MAX_TIME = (1 << 63) - 2
_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:\d{2})?"
)


def parse_time(text: str) -> int:
    """An RFC3339 time (or ``YYYY-MM-DD[ HH:MM:SS[.f]]``, UTC) in nanoseconds."""
    m = _TIME.fullmatch(text.strip())
    if m is None:
        raise InvalidInput(f"invalid time {text!r}: use RFC3339, e.g. 2024-05-01T00:00:00Z")
    y, mo, d, hh, mm, ss, frac, zone = m.groups()
    try:
        t = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=UTC)
    except ValueError as exc:
        raise InvalidInput(f"invalid time {text!r}: {exc}") from None
    seconds = int(t.timestamp())
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    ns = seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0"))
    if not MIN_TIME <= ns <= MAX_TIME:
        raise InvalidInput(f"time {text!r} is outside InfluxDB's range (years 1677-2262)")
    return ns


def epoch_divisor(epoch: str) -> int:
    """The divisor of an ``epoch=`` parameter (``""``: RFC3339 strings, 0)."""
    if not epoch:
        return 0
    if epoch not in EPOCHS:
        raise InvalidInput(f"invalid epoch {epoch!r}: use one of {', '.join(EPOCHS)}")
    return EPOCHS[epoch]


def times(ns: npt.NDArray[np.int64], divisor: int) -> list[Any]:
    """Times as the answer writes them (see the module docstring)."""
    if divisor:
        q = np.abs(ns) // divisor  # truncation toward zero, as Go's integer division
        return (np.sign(ns) * q).tolist()  # type: ignore[no-any-return]
    text = np.datetime_as_string(ns.astype("datetime64[ns]"), unit="ns")
    return [_trim(s) for s in text.tolist()]


def _trim(s: str) -> str:
    date, _, frac = s.partition(".")
    frac = frac.rstrip("0")
    return f"{date}.{frac}Z" if frac else f"{date}Z"


@dataclass
class Series:
    """One series of an answer: its rows are ``times`` plus one list per column."""

    name: str | None
    columns: list[str]
    times: npt.NDArray[np.int64]
    cols: list[list[Any]]
    tags: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self, divisor: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        if self.tags is not None:
            out["tags"] = self.tags
        out["columns"] = self.columns
        if self.columns and self.columns[0] == "time":
            rows = zip(times(self.times, divisor), *self.cols, strict=True)
        else:
            rows = zip(*self.cols, strict=True)
        out["values"] = [list(r) for r in rows]
        return out


def statement_json(statement_id: int, series: list[Series], divisor: int) -> dict[str, Any]:
    out: dict[str, Any] = {"statement_id": statement_id}
    if series:
        out["series"] = [s.as_json(divisor) for s in series]
    return out


def chunked_lines(
    statement_id: int, series: list[Series], divisor: int, size: int, select: bool
) -> list[bytes]:
    """A statement's answer as ``chunked=true`` sends it: one JSON object per line.

    As InfluxDB 1.x: a line per series; for a SELECT, a series longer than
    ``size`` rows is cut into lines marked ``"partial": true``, and every line
    but the statement's last is marked partial at the result level too.
    """
    size = size if select else 1 << 62
    if not series:
        return [dumps([{"statement_id": statement_id}])]
    parts: list[dict[str, Any]] = []
    for s in series:
        rows = s.as_json(divisor)
        values = rows["values"]
        for start in range(0, max(len(values), 1), size):
            piece = {**rows, "values": values[start : start + size]}
            if start + size < len(values):
                piece["partial"] = True
            parts.append(piece)
    out = []
    for i, piece in enumerate(parts):
        result: dict[str, Any] = {"statement_id": statement_id, "series": [piece]}
        if select and i < len(parts) - 1:
            result["partial"] = True
        out.append(dumps([result]))
    return out


def statement_error(statement_id: int, message: str) -> dict[str, Any]:
    return {"statement_id": statement_id, "error": message}


def dumps(results: list[dict[str, Any]]) -> bytes:
    # allow_nan=False: a NaN or infinity left in an answer is a bug, not a JSON token
    return json.dumps({"results": results}, separators=(",", ":"), allow_nan=False).encode()


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}, separators=(",", ":")).encode()
