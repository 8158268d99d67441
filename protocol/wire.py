"""Field kinds: how one field of a message travels, what it may hold, and how the docs say it.

A message is declared as a dataclass whose fields carry a :class:`Kind` in their
metadata (see :func:`arg` and :mod:`.declare`). The kind is the one place a
field's wire type and checks are written: the client's encoder, the server's
parser and the op tables of ``docs/protocol.md`` all come from it.

Most kinds map one attribute to one wire key. A few map one attribute to one of
two keys (``tag`` or ``tags``) or to several (an aggregate's single result is
sent as its ``start`` and ``values``); they override :meth:`Kind.put` and
:meth:`Kind.take` instead of :meth:`Kind.encode` and :meth:`Kind.decode`.

Arrays share a length by naming a symbol (``"n"``): the field that defines the
symbol is handled first, and every other array with the symbol must match it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InvalidInput
from .messages import (
    INT64_MAX,
    INT64_MIN,
    TAGS_DTYPE,
    int_field,
    tag_field,
    unpack_array,
    wire_array,
)

MISSING: Any = dataclasses.MISSING
Lengths = dict[str, tuple[int, str]]
"""Array length symbols seen so far in one message: symbol -> (length, field that set it)."""

_DTYPE_NAMES = {"<i8": "int64", "<f8": "float64", "u1": "uint8", "<u4": "uint32"}


class Kind:
    """A field's wire type: encode (from loose Python values), decode (from untrusted ones)."""

    type_doc = "any"
    defines: str | None = None  # the length symbol this field sets (handled first)
    bulky = False  # holds arrays: a response with one is framed in uncopied pieces
    one_key = True  # reads and writes the wire key of its own name (put/take not overridden)

    def encode(self, value: Any, name: str, lengths: Lengths) -> Any:
        return value

    def decode(self, value: Any, name: str, lengths: Lengths) -> Any:
        return value

    def put(self, out: dict[str, Any], name: str, value: Any, lengths: Lengths) -> None:
        out[name] = self.encode(value, name, lengths)

    def take(self, msg: Mapping[str, Any], name: str, lengths: Lengths, default: Any) -> Any:
        raw = msg.get(name)
        if raw is None:
            if default is MISSING:
                raise InvalidInput(f"missing field {name!r}")
            return default
        return self.decode(raw, name, lengths)

    def doc_rows(self, name: str, doc: str, optional: bool) -> list[tuple[str, str, str]]:
        """``(wire key, type, meaning)`` rows of the docs' field table."""
        return [(name, self.type_doc + (", optional" if optional else ""), doc)]


def arg(kind: Kind, doc: str, *, default: Any = MISSING, always: bool = False) -> Any:
    """A message field of ``kind``; ``doc`` is its line in docs/protocol.md.

    A field with a default is optional: left out of the message when it holds
    its default (or ``None``), unless ``always``, so a request that does not use
    an option is the same frame as before the option existed.
    """
    meta = {"kind": kind, "doc": doc, "always": always}
    if isinstance(default, dict | list):
        factory = default.copy
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# -- scalars --------------------------------------------------------------------


class Int(Kind):
    def __init__(self, lo: int = INT64_MIN, hi: int = INT64_MAX) -> None:
        self.lo, self.hi = lo, hi
        if lo == INT64_MIN and hi == INT64_MAX:
            self.type_doc = "int"
        elif hi == INT64_MAX:
            self.type_doc = f"int >= {lo}"
        else:
            self.type_doc = f"int `{lo}..{hi:_}`".replace("_", "")

    def encode(self, value: Any, name: str, lengths: Lengths) -> int:
        return int_field(value, name, self.lo, self.hi)

    decode = encode


class Bool(Kind):
    type_doc = "bool"

    def encode(self, value: Any, name: str, lengths: Lengths) -> bool:
        if not isinstance(value, bool | np.bool_):
            raise InvalidInput(f"{name!r} must be a bool, got {type(value).__name__}")
        return bool(value)

    decode = encode


class Str(Kind):
    def __init__(self, nonempty: bool = False) -> None:
        self.nonempty = nonempty
        self.type_doc = "str"

    def encode(self, value: Any, name: str, lengths: Lengths) -> str:
        if not isinstance(value, str):
            raise InvalidInput(f"{name!r} must be a str, got {type(value).__name__}")
        if self.nonempty and not value:
            raise InvalidInput(f"{name!r} must be a non-empty str")
        return value

    decode = encode


class Choice(Str):
    """One of a fixed set of names."""

    def __init__(self, choices: tuple[str, ...]) -> None:
        super().__init__(nonempty=True)
        self.choices = choices
        self.type_doc = "str: " + ", ".join(f"`{c}`" for c in choices)

    def encode(self, value: Any, name: str, lengths: Lengths) -> str:
        if value not in self.choices:
            shown = value[:32] if isinstance(value, str) else value
            raise InvalidInput(f"{name!r} must be one of {self.choices}, got {shown!r}")
        return str(value)

    decode = encode


class Tag(Kind):
    """A tag by id (``0..2^32-1``) or by name (resolved by the server)."""

    type_doc = "int `0..2^32-1` or str"

    def encode(self, value: Any, name: str, lengths: Lengths) -> int | str:
        return tag_field(value, name)

    decode = encode


class IntList(Kind):
    type_doc = "array of int"

    def decode(self, value: Any, name: str, lengths: Lengths) -> list[int]:
        if not isinstance(value, list | tuple) or not all(type(v) is int for v in value):
            raise InvalidInput(f"{name!r} must be an array of ints")
        return list(value)

    encode = decode


class Map(Kind):
    """A map whose keys may grow between releases; checked only for being a map."""

    def __init__(self, type_doc: str = "map str -> any") -> None:
        self.type_doc = type_doc

    def decode(self, raw: Any, name: str, lengths: Lengths) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise InvalidInput(f"{name!r} must be a map")
        return raw

    def encode(self, value: Any, name: str, lengths: Lengths) -> dict[str, Any]:
        return dict(value)


class Counts(Map):
    """``map str -> int`` (read statistics)."""

    def __init__(self) -> None:
        super().__init__("map str -> int")

    def encode(self, value: Any, name: str, lengths: Lengths) -> dict[str, int]:
        return {str(k): int(v) for k, v in (value or {}).items()}

    def decode(self, raw: Any, name: str, lengths: Lengths) -> dict[str, int]:
        return {str(k): int(v) for k, v in super().decode(raw, name, lengths).items()}


# -- arrays ---------------------------------------------------------------------


class Array(Kind):
    """A ``bin`` of a wire dtype; ``length`` names the symbol of a shared length.

    ``defines``: this field sets the symbol (handled before the others).
    ``broadcast``: a scalar is repeated to the shared length (a write's one quality).
    """

    bulky = True

    def __init__(
        self, dtype: str, length: str = "n", *, defines: bool = False, broadcast: bool = False
    ) -> None:
        self.dtype, self.length, self.broadcast = dtype, length, broadcast
        self.defines = length if defines else None
        self.type_doc = f"bin {_DTYPE_NAMES[dtype]}[{length}]"

    def encode(self, value: Any, name: str, lengths: Lengths) -> Any:
        seen = lengths.get(self.length)
        if self.broadcast and seen is not None and np.ndim(value) == 0:
            value = np.full(seen[0], value)
        arr = wire_array(value, self.dtype)
        if seen is None:
            lengths[self.length] = (arr.shape[0], name)
        elif arr.shape[0] != seen[0]:
            raise InvalidInput(f"{name!r} has {arr.shape[0]} elements, {seen[1]!r} has {seen[0]}")
        return arr

    def decode(self, raw: Any, name: str, lengths: Lengths) -> Any:
        seen = lengths.get(self.length)
        arr = unpack_array(raw, self.dtype, name, None if seen is None else seen[0])
        if seen is None:
            lengths[self.length] = (arr.shape[0], name)
        return arr


class TagIds(Kind):
    """Tags as a ``bin`` of uint32 ids, or an array of ids and names."""

    type_doc = "bin uint32[k], or array of int/str"
    bulky = True

    def encode(self, value: Any, name: str, lengths: Lengths) -> Any:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list | tuple) and any(isinstance(t, str) for t in value):
            return [tag_field(t, name) for t in value]
        return wire_array(np.atleast_1d(np.asarray(value)), TAGS_DTYPE)

    def decode(self, raw: Any, name: str, lengths: Lengths) -> Any:
        if isinstance(raw, list):
            return [tag_field(t, name) for t in raw]
        return unpack_array(raw, TAGS_DTYPE, name)


class OneTagOrIds(Kind):
    """``tag`` (one id or name for every point) or ``tags`` (a uint32 id per point)."""

    one_key = False

    def __init__(self, one: str, many: str, what: str) -> None:
        self.one, self.many, self.what = one, many, what
        self.ids = Array(TAGS_DTYPE)

    def put(self, out: dict[str, Any], name: str, value: Any, lengths: Lengths) -> None:
        if isinstance(value, str) or (
            isinstance(value, int | np.integer) and not isinstance(value, bool)
        ):
            out[self.one] = tag_field(value, self.one)
        else:
            out[self.many] = self.ids.encode(value, self.many, lengths)

    def take(self, msg: Mapping[str, Any], name: str, lengths: Lengths, default: Any) -> Any:
        has_one, has_many = msg.get(self.one) is not None, msg.get(self.many) is not None
        if has_one == has_many:
            raise InvalidInput(
                f"{self.what} needs exactly one of {self.one!r} (int) or {self.many!r} (bin)"
            )
        if has_one:
            return tag_field(msg[self.one], self.one)
        return self.ids.decode(msg[self.many], self.many, lengths)

    def doc_rows(self, name: str, doc: str, optional: bool) -> list[tuple[str, str, str]]:
        one_doc, many_doc = doc.split("|")
        return [
            (self.one, Tag.type_doc, f"{one_doc}; **exactly one** of `{self.one}`, `{self.many}`"),
            (self.many, self.ids.type_doc, many_doc),
        ]
