"""Prometheus label sets <-> xtsdb tag names.

A series ``metric{a="x", b="y"}`` is stored as the tag named as the
line-protocol series ``metric,a=x,b=y`` with the field ``value`` would be::

    metric,a=x,b=y.value

labels sorted by name (byte order of their UTF-8, as line protocol sorts tag
keys), empty label values left out (Prometheus treats them as absent).
``__name__`` (required) is the measurement. So a Prometheus series and the
same series written by Telegraf as ``metric,a=x,b=y value=...`` are one tag.

Escapes are line protocol's (docs/ingest.md): a backslash before a comma or
space in the metric name, before a comma, ``=`` or space in label names and
values. Line protocol never needs to escape a backslash itself, because its
names never end in one; Prometheus values can (``path="C:\\"``), so here a
backslash is doubled when it is followed by a backslash, a comma, ``=``, a
space, or ends its part. A name without such a backslash is written exactly
as line protocol writes it, and every name reads back to its label set.

Reading back (remote read) also shows line-protocol tags of other fields:
``cpu,host=a.usage_idle`` is ``cpu_usage_idle{host="a"}`` (Telegraf's
Prometheus naming). Names outside the scheme (no field separator) are not
visible to remote read.
"""

from __future__ import annotations

import functools
import re

from xtsdb.protocol.errors import InvalidInput

FIELD = "value"
MAX_NAME = 256  # the catalog's limit on a tag name

Labels = list[tuple[str, str]]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # as the tag catalog's rule for names
_PLAIN = re.compile(r"[\\, =]")
_BACKSLASH = re.compile(r"\\(?=[\\,= ]|$)")
_MEASUREMENT = re.compile(r"([, ])")
_TAG = re.compile(r"([,= ])")
_TOKENS = re.compile(r"\\.|\\$|[,=.]|[^\\,=.]+", re.S)
_UNESCAPE = re.compile(r"\\([\\,= ])")
_FIELD_UNESCAPE = re.compile(r"\\([,= .])")


def _esc(text: str, special: re.Pattern[str]) -> str:
    if not _PLAIN.search(text):
        return text
    return special.sub(r"\\\1", _BACKSLASH.sub(r"\\\\", text))


def tag_name(labels: Labels) -> str:
    """The tag name of a label set; InvalidInput if Prometheus would not send it."""
    metric = ""
    rest: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in labels:
        if not name:
            raise InvalidInput("a label with an empty name")
        if name in seen:
            raise InvalidInput(f"label {name!r} appears twice in one series")
        seen.add(name)
        if name == "__name__":
            metric = value
        elif value:
            rest.append((name, value))
    if not metric:
        raise InvalidInput(f"a series without a __name__ label: {dict(labels)}")
    rest.sort(key=lambda kv: kv[0].encode())
    parts = [_esc(metric, _MEASUREMENT)]
    parts += [f"{_esc(k, _TAG)}={_esc(v, _TAG)}" for k, v in rest]
    out = ",".join(parts) + "." + FIELD
    # The catalog's rules, checked here so that a request is refused before
    # any of its tags is created.
    if len(out) > MAX_NAME:
        raise InvalidInput(f"series {out[:60]!r}... makes a tag name over {MAX_NAME} characters")
    if _CONTROL.search(out):
        raise InvalidInput(f"series {out[:60]!r}: a label holds a control character")
    return out


def parse_name(name: str) -> dict[str, str] | None:
    """The label set a tag name shows to remote read, or None if it shows none.

    The inverse of :func:`tag_name` for ``.value`` names; other fields give
    ``measurement_field`` as ``__name__``.
    """
    items = _parsed(name)
    return None if items is None else dict(items)


@functools.lru_cache(maxsize=1 << 18)
def _parsed(name: str) -> tuple[tuple[str, str], ...] | None:
    """Cached: every remote read looks at every tag name, and names do not change."""
    labels = _parse(name)
    return None if labels is None else tuple(labels.items())


def _parse(name: str) -> dict[str, str] | None:
    tokens = _TOKENS.findall(name)
    dot = max((i for i, t in enumerate(tokens) if t == "."), default=-1)
    if dot <= 0 or dot == len(tokens) - 1:
        return None
    fld = _FIELD_UNESCAPE.sub(r"\1", "".join(tokens[dot + 1 :]))
    pieces: list[list[str]] = [[]]
    for t in tokens[:dot]:
        if t == ",":
            pieces.append([])
        else:
            pieces[-1].append(t)
    metric = _unescape(pieces[0])
    if not metric:
        return None
    labels = {"__name__": metric if fld == FIELD else f"{metric}_{fld}"}
    for piece in pieces[1:]:
        if "=" not in piece or piece.index("=") == 0:
            return None
        eq = piece.index("=")
        key, value = _unescape(piece[:eq]), _unescape(piece[eq + 1 :])
        if not value or key in labels:
            return None
        labels[key] = value
    return labels


def _unescape(tokens: list[str]) -> str:
    return _UNESCAPE.sub(r"\1", "".join(tokens))
