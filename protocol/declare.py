"""One declaration per operation: :class:`Op`, and the messages it carries.

An operation is its name, a request message, a response message (dataclasses
whose fields are declared with :func:`~.wire.arg`), the role it needs, whether
sending it twice is harmless, and the errors it may answer. Everything else is
derived from that:

- the client builds a request with :meth:`Op.encode` (or :meth:`Op.build`) and
  reads the answer with :meth:`Op.parse_answer`;
- the server parses a request with :meth:`Op.parse` -- the code that refuses a
  malformed request is the code that documents it -- and answers with
  :meth:`Op.answer` (or :meth:`Op.reply`);
- :data:`~.optable.OPERATIONS`, the role table of the server's auth, the
  client's retry rule and the op tables of ``docs/protocol.md`` read the same
  objects.

Field order is wire order: a message map holds its fields in declaration order,
so frames are byte-for-byte what they were before the declarations existed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar, dataclass_transform

import numpy as np

from .errors import InvalidInput, ProtocolError, XtsdbError
from .messages import INT64_MAX, int_field, ok_response, raise_for_error
from .wire import MISSING, Kind, Lengths, arg

T = TypeVar("T")


class Role(Enum):
    """What a connection must have authenticated as to run an op."""

    OPEN = "open"  # answered before authentication (hello, ping)
    READ = "read"  # any valid token
    WRITE = "write"  # a token with the write role


class Message:
    """Base of request and response dataclasses: unpacks like a tuple, in field order."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __iter__(self) -> Iterator[Any]:
        return (getattr(self, f.name) for f in dataclasses.fields(self))


@dataclass_transform(kw_only_default=True, field_specifiers=(arg,))
def message(cls: type[T]) -> type[T]:
    """Declare a message: a keyword-only dataclass whose fields use :func:`arg`.

    Not frozen: a frozen dataclass's ``__init__`` costs three times as much, and one
    is made for every request and every answer."""
    return dataclass(kw_only=True)(cls)


@message
class Empty(Message):
    """A message with no fields (beyond ``id`` and ``op``/``ok``)."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: Kind
    doc: str
    default: Any
    always: bool

    @property
    def optional(self) -> bool:
        return self.default is not MISSING

    def absent(self) -> Any:
        """The value of the field when a message leaves it out (a fresh dict or list)."""
        default = self.default
        return default.copy() if isinstance(default, dict | list) else default


@dataclass(frozen=True)
class Layout:
    """A message class's fields in wire order, and in the order they are handled:
    fields that set an array length first, so the others are checked against them."""

    fields: tuple[FieldSpec, ...]
    order: tuple[FieldSpec, ...]


def layout(cls: type[Message]) -> Layout:
    """The :class:`Layout` of a message class, built once."""
    cached: Layout | None = cls.__dict__.get("_xtsdb_layout")
    if cached is not None:
        return cached
    out = []
    for f in dataclasses.fields(cls):
        if "kind" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with wire.arg()")
        default: Any = f.default
        factory: Any = f.default_factory
        if factory is not MISSING:
            default = factory()
        out.append(
            FieldSpec(f.name, f.metadata["kind"], f.metadata["doc"], default, f.metadata["always"])
        )
    fields = tuple(out)
    order = tuple(sorted(fields, key=lambda s: s.kind.defines is None))
    result = Layout(fields, fields if order == fields else order)
    setattr(cls, "_xtsdb_layout", result)  # noqa: B010 - a class attribute, set once
    return result


def specs(cls: type[Message]) -> tuple[FieldSpec, ...]:
    """The wire fields of a message class, in declaration (= wire) order."""
    return layout(cls).fields


def _is_default(spec: FieldSpec, value: Any) -> bool:
    if value is None:
        return True
    if spec.always or spec.default is MISSING:
        return False
    default = spec.default
    return type(value) is type(default) and not hasattr(value, "shape") and value == default


def encode_fields(msg: Message) -> dict[str, Any]:
    """The wire fields of ``msg``: checked, converted, defaults left out, in field order."""
    plan = layout(type(msg))
    in_place = plan.order is plan.fields  # else written per field, then joined in wire order
    lengths: Lengths = {}
    parts: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {}
    for spec in plan.order:
        name = spec.name
        value = getattr(msg, name)
        if value is None and spec.default is MISSING:
            raise InvalidInput(f"missing field {name!r}")
        part = out if in_place else parts.setdefault(name, {})
        if _is_default(spec, value):
            continue
        if spec.kind.one_key:
            part[name] = spec.kind.encode(value, name, lengths)
        else:
            spec.kind.put(part, name, value, lengths)
    if not in_place:
        for spec in plan.fields:
            out.update(parts[spec.name])
    return out


M = TypeVar("M", bound=Message)


def decode_fields(cls: type[M], msg: Mapping[str, Any]) -> M:
    """A ``cls`` from the fields of a decoded message; :class:`InvalidInput` naming a bad one.

    Keys the message does not declare are ignored (a newer peer may send more).
    """
    lengths: Lengths = {}
    values: dict[str, Any] = {}
    for spec in layout(cls).order:
        kind, name = spec.kind, spec.name
        if not kind.one_key:  # a kind that reads several keys, or decides between two
            values[name] = kind.take(msg, name, lengths, spec.absent())
            continue
        raw = msg.get(name)  # inline Kind.take: this loop runs for every request
        if raw is not None:
            values[name] = kind.decode(raw, name, lengths)
        elif spec.default is MISSING:
            raise InvalidInput(f"missing field {name!r}")
        else:
            values[name] = spec.absent()
    return cls(**values)


Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True, eq=False)
class Op(Generic[Req, Resp]):
    """One operation of the binary protocol, declared once."""

    name: str
    request: type[Req]
    response: type[Resp]
    role: Role
    idempotent: bool
    """Safe to send twice: the client may resend it after a lost connection."""
    errors: tuple[type[XtsdbError], ...]
    """The errors this op answers besides those any request may get (docs/protocol.md)."""
    summary: str

    @functools.cached_property
    def bulky(self) -> bool:
        """Whether the response carries arrays (framed in uncopied pieces by the server)."""
        return any(s.kind.bulky for s in specs(self.response))

    # -- requests (client side builds, server side parses) -------------------

    def encode(self, req_id: int, req: Req) -> dict[str, Any]:
        """The request message ``{"id", "op", ...fields}``."""
        if not isinstance(req, self.request):
            raise TypeError(
                f"{self.name} takes a {self.request.__name__}, not {type(req).__name__}"
            )
        fields = encode_fields(req)
        for key, value in fields.items():
            # Requests carry bytes, as a decoded message does: a request dict compares
            # equal to its decoding, and the caller may reuse its arrays at once.
            if isinstance(value, np.ndarray):
                fields[key] = value.tobytes()
        return {"id": int_field(req_id, "id", 0, INT64_MAX), "op": self.name, **fields}

    def build(self, req_id: int, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """:meth:`encode` of a request made from ``args`` in field order and ``kwargs``."""
        return self.encode(req_id, self.request(**_by_name(self.request, args, kwargs)))

    def parse(self, msg: Mapping[str, Any]) -> Req:
        """The checked fields of a request; :class:`InvalidInput` naming the bad field."""
        return decode_fields(self.request, msg)

    # -- responses (server side answers, client side parses) -------------------

    def answer(self, req_id: int, resp: Resp) -> dict[str, Any]:
        """The success response ``{"id", "ok": true, ...fields}``."""
        if not isinstance(resp, self.response):
            raise TypeError(
                f"{self.name} answers a {self.response.__name__}, not {type(resp).__name__}"
            )
        return ok_response(req_id, **encode_fields(resp))

    def reply(self, req_id: int, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """:meth:`answer` with a response made from ``args`` in field order and ``kwargs``."""
        return self.answer(req_id, self.response(**_by_name(self.response, args, kwargs)))

    def parse_answer(self, resp: Mapping[str, Any]) -> Resp:
        """The fields of a success response; raises the error an error response carries.

        A malformed success response is the server's fault: :class:`ProtocolError`.
        """
        raise_for_error(resp)
        try:
            return decode_fields(self.response, resp)
        except InvalidInput as exc:
            raise ProtocolError(f"malformed {self.name} response: {exc}") from exc


def _by_name(cls: type[Message], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    names = [s.name for s in specs(cls)]
    if len(args) > len(names):
        raise TypeError(f"{cls.__name__} has {len(names)} fields, got {len(args)} values")
    return dict(zip(names, args, strict=False)) | kwargs
