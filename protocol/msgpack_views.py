"""Unpacking a frame body with its large ``bin`` values left where they are.

msgpack's unpacker copies every ``bin`` into a new ``bytes``: a 1 M-point
query answer (17 MB) would be copied once more after it was received.
:func:`unpack_map_views` walks the body's top-level map itself and gives each
large ``bin`` value back as a ``memoryview`` of the body, so the client's numpy
arrays view the very buffer the socket filled. Every other key and value is
unpacked by msgpack from its slice of the body, with the caller's limits: the
walk only measures values (:func:`_end`), it builds nothing, and it checks
every length against the body, so a hostile body cannot make it read outside
the buffer, recurse without bound or allocate.

Anything malformed raises ``ValueError``; the caller words the error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_DEPTH = 256
"""Nesting beyond this is refused (the frames carry flat maps of fields)."""

_WIDTHS = (1, 2, 4)
# Type byte -> (bytes of the length field, fixed bytes after it) of length-prefixed kinds.
_SIZED = {
    **{0xC4 + i: (w, 0) for i, w in enumerate(_WIDTHS)},  # bin 8/16/32
    **{0xC7 + i: (w, 1) for i, w in enumerate(_WIDTHS)},  # ext 8/16/32 (and a type byte)
    **{0xD9 + i: (w, 0) for i, w in enumerate(_WIDTHS)},  # str 8/16/32
}
# Type byte -> total size of the fixed-size kinds.
_FIXED = {
    **dict.fromkeys((0xC0, 0xC2, 0xC3), 1),  # nil, false, true
    0xCA: 5,  # float 32
    0xCB: 9,  # float 64
    **{0xCC + i: 1 + s for i, s in enumerate((1, 2, 4, 8))},  # uint 8..64
    **{0xD0 + i: 1 + s for i, s in enumerate((1, 2, 4, 8))},  # int 8..64
    **{0xD4 + i: 2 + s for i, s in enumerate((1, 2, 4, 8, 16))},  # fixext 1..16
}
_BIN = (0xC4, 0xC5, 0xC6)


def _uint(mv: memoryview, at: int, size: int) -> int:
    if at + size > len(mv):
        raise ValueError("msgpack value runs past the end of the body")
    return int.from_bytes(mv[at : at + size], "big")


def _container(mv: memoryview, pos: int) -> tuple[int, int, int] | None:
    """``(items, header size, values per item)`` of an array or map at ``pos``, else None."""
    b = mv[pos]
    if 0x80 <= b <= 0x8F:
        return b & 0x0F, 1, 2
    if 0x90 <= b <= 0x9F:
        return b & 0x0F, 1, 1
    if b in (0xDC, 0xDE):
        return _uint(mv, pos + 1, 2), 3, 2 if b == 0xDE else 1
    if b in (0xDD, 0xDF):
        return _uint(mv, pos + 1, 4), 5, 2 if b == 0xDF else 1
    return None


def _end(mv: memoryview, pos: int, depth: int, max_items: int) -> int:
    """Where the msgpack object starting at ``pos`` ends (checked against the body)."""
    if pos >= len(mv):
        raise ValueError("msgpack value runs past the end of the body")
    b = mv[pos]
    if b <= 0x7F or b >= 0xE0:  # positive and negative fixint
        end = pos + 1
    elif 0xA0 <= b <= 0xBF:  # fixstr
        end = pos + 1 + (b & 0x1F)
    elif b in _FIXED:
        end = pos + _FIXED[b]
    elif b in _SIZED:
        width, extra = _SIZED[b]
        end = pos + 1 + width + extra + _uint(mv, pos + 1, width)
    elif (box := _container(mv, pos)) is not None:
        items, head, per = box
        if depth >= MAX_DEPTH:
            raise ValueError("msgpack nesting too deep")
        if items > max_items:
            raise ValueError(f"msgpack container of {items} items exceeds the limit")
        end = pos + head
        for _ in range(items * per):
            end = _end(mv, end, depth + 1, max_items)
    else:
        raise ValueError(f"invalid msgpack type byte 0x{b:02x}")
    if end > len(mv):
        raise ValueError("msgpack value runs past the end of the body")
    return end


def unpack_map_views(
    body: memoryview,
    unpack: Callable[[memoryview], Any],
    min_view: int,
    max_items: int,
    max_map: int,
) -> dict[Any, Any]:
    """The top-level map of ``body``; ``bin`` values of ``min_view`` bytes or more as views.

    ``unpack`` unpacks one complete msgpack object (the caller's msgpack limits);
    ``max_items`` bounds every container the walk measures, ``max_map`` the map itself.
    """
    mv = body.cast("B") if body.format != "B" else body
    if not len(mv):
        raise ValueError("empty body")
    box = _container(mv, 0)
    if box is None or box[2] != 2:
        raise TypeError("frame body is not a msgpack map")
    items, pos, _ = box
    if items > max_map:
        raise ValueError(f"msgpack map of {items} items exceeds the limit")
    out: dict[Any, Any] = {}
    for _ in range(items):
        key_end = _end(mv, pos, 1, max_items)
        key = unpack(mv[pos:key_end])
        end = _end(mv, key_end, 1, max_items)
        tag = mv[key_end]
        if tag in _BIN and end - key_end >= min_view:
            width = _SIZED[tag][0]
            out[key] = mv[key_end + 1 + width : end]
        else:
            out[key] = unpack(mv[key_end:end])
        pos = end
    if pos != len(mv):
        raise ValueError("trailing bytes after the msgpack object")
    return out
