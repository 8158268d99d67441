"""Framing: a 4-byte big-endian length, then that many bytes of msgpack.

:func:`encode_frame` turns one message (a ``dict`` with ``str`` keys) into the
bytes to send; :func:`encode_frame_parts` gives the same bytes as a list of
pieces in which large arrays are views, not copies (for ``writelines``).
:class:`FrameDecoder` is fed bytes as they arrive, in pieces of any size, and
hands back decoded messages; on the client it can also lend the buffer a large
answer is received into (``recv_into``) and give that answer's arrays as views
of it. None of them touches a socket.

A 1-D numpy array of a wire dtype (:data:`WIRE_DTYPES`) in a message is sent
as a ``bin`` of its little-endian bytes; other arrays are refused.

The decoder treats its input as untrusted: a length prefix is checked against
``max_frame`` as soon as its four bytes are in, before a byte of that frame's
body is buffered, and the msgpack body is unpacked with limits on every
container so a hostile peer cannot make it allocate or recurse without bound.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import msgpack
import numpy as np

from .buffers import Bytes, ReusableBuffers
from .errors import FrameTooLarge, ProtocolError
from .msgpack_views import unpack_map_views

DEFAULT_MAX_FRAME = 64 * 1024 * 1024
"""Largest frame body (bytes) either side accepts unless configured otherwise."""

PREFIX_SIZE = 4
MAX_STR_LEN = 1024 * 1024
"""Longest ``str`` a body may hold: strings are names, tokens and error messages."""
MAX_ARRAY_LEN = 65536
"""Longest msgpack array: bulk data travels as ``bin``, never as arrays of numbers."""
MAX_MAP_LEN = 4096

_MSGPACK_ERRORS: dict[type[BaseException], str] = {
    msgpack.StackError: "msgpack nesting too deep",
    msgpack.FormatError: "invalid msgpack type byte",
    msgpack.ExtraData: "trailing bytes after the msgpack object",
}


WIRE_DTYPES: frozenset[np.dtype[Any]] = frozenset(np.dtype(d) for d in ("<i8", "<f8", "u1", "<u4"))
"""The dtypes a 1-D numpy array in a message may have; it is sent as a ``bin`` of its bytes."""

BIN_INLINE_MAX = 64 * 1024
"""Smaller ``bin`` values are copied into the packed bytes by :func:`encode_frame_parts`;
larger ones are passed through as views (a copy costs more than another buffer then)."""


VIEW_MIN = 512 * 1024
"""Bodies from this size are received in place and unpacked into views (``views=True``):
below it, walking the map in Python costs more than msgpack's copy of the arrays."""


def _pack_default(obj: Any) -> Any:
    # numpy scalars leak easily into stats and counters. Arrays are sent as bin
    # only in a wire dtype: only the builder knows which one a field must have,
    # so anything else (int32, float32, big-endian, 2-D) is refused, not guessed.
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return array_bytes(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__!r} object")


def array_bytes(arr: np.ndarray[Any, Any]) -> memoryview:
    """The raw bytes of a 1-D wire-dtype array, as a byte view (a copy only if strided)."""
    if arr.ndim != 1 or arr.dtype not in WIRE_DTYPES:
        raise TypeError(
            f"a {arr.ndim}-D {arr.dtype} array is not a wire array: "
            "convert it with pack_array/wire_array(arr, dtype)"
        )
    return np.ascontiguousarray(arr).data.cast("B")


def encode_body(msg: Mapping[str, Any]) -> bytes:
    """The msgpack body of one message, without the length prefix."""
    try:
        return msgpack.packb(msg, use_bin_type=True, default=_pack_default)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode message: {exc}") from exc


def encode_frame(msg: Mapping[str, Any], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Length prefix + msgpack body of ``msg``.

    :class:`FrameTooLarge` if the body exceeds ``max_frame``; :class:`ProtocolError`
    if ``msg`` holds something msgpack cannot encode.
    """
    body = encode_body(msg)
    if len(body) > max_frame:
        raise FrameTooLarge(f"message of {len(body)} bytes exceeds the frame limit of {max_frame}")
    return len(body).to_bytes(PREFIX_SIZE, "big") + body


def _bin_header(n: int) -> bytes:
    # msgpack's Packer has no bin-header method; these are the spec's bin 8/16/32.
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _large_bin(obj: Any) -> bytes | memoryview | None:
    """``obj`` as the bytes of a ``bin`` if it is one of at least BIN_INLINE_MAX bytes."""
    if isinstance(obj, np.ndarray):
        return array_bytes(obj) if obj.nbytes >= BIN_INLINE_MAX else None
    if isinstance(obj, bytes):
        return obj if len(obj) >= BIN_INLINE_MAX else None
    if isinstance(obj, bytearray | memoryview):
        view = memoryview(obj)
        if view.nbytes >= BIN_INLINE_MAX and view.c_contiguous:
            return view.cast("B")
    return None


def encode_frame_parts(
    msg: Mapping[str, Any], max_frame: int = DEFAULT_MAX_FRAME
) -> list[bytes | memoryview]:
    """The bytes of :func:`encode_frame` as a list of pieces, large ``bin`` values uncopied.

    Joined, the pieces are byte for byte ``encode_frame(msg)``. Maps and
    arrays are walked (their headers and small values packed as msgpack
    would), and every ``bin`` of at least :data:`BIN_INLINE_MAX` bytes -- a
    wire-dtype numpy array, ``bytes``, a contiguous buffer -- becomes a piece
    of its own that views the caller's memory. A 1 M-point query result then
    reaches the socket (``transport.writelines``) without being copied into
    one big ``bytes`` first. The caller must not modify those buffers until
    they are sent.
    """
    out = _Parts()
    try:
        out.walk(msg)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode message: {exc}") from exc
    parts, small = out.parts, out.small
    if small or not parts:
        parts.append(bytes(small))
    size = sum(len(p) for p in parts)  # byte views: len() is the byte count
    if size > max_frame:
        raise FrameTooLarge(f"message of {size} bytes exceeds the frame limit of {max_frame}")
    parts[0] = size.to_bytes(PREFIX_SIZE, "big") + parts[0]  # parts[0] is always small
    return parts


class _Parts:
    """The pieces of one frame being built (a class, not a closure: a recursive
    closure is a reference cycle, and the cycle would keep the large pieces --
    views of a query's result buffers -- alive until the garbage collector runs)."""

    def __init__(self) -> None:
        self.packer = msgpack.Packer(use_bin_type=True, default=_pack_default)
        self.parts: list[bytes | memoryview] = []
        self.small = bytearray()  # packed bytes since the last large piece

    def walk(self, obj: Any) -> None:
        packer = self.packer
        if isinstance(obj, dict):
            self.small += packer.pack_map_header(len(obj))
            for key, value in obj.items():
                self.small += packer.pack(key)
                self.walk(value)
        elif isinstance(obj, list | tuple):
            self.small += packer.pack_array_header(len(obj))
            for value in obj:
                self.walk(value)
        elif (raw := _large_bin(obj)) is not None:
            self.small += _bin_header(len(raw))
            self.parts.append(bytes(self.small))
            self.parts.append(raw)
            self.small = bytearray()
        else:
            self.small += packer.pack(obj)


def _unpack(body: bytes | bytearray | memoryview, max_frame: int) -> Any:
    """One msgpack object from untrusted bytes, every container and string bounded."""
    return msgpack.unpackb(
        body,
        raw=False,
        strict_map_key=True,
        max_bin_len=max_frame,
        max_str_len=min(MAX_STR_LEN, max_frame),
        max_array_len=MAX_ARRAY_LEN,
        max_map_len=MAX_MAP_LEN,
        max_ext_len=0,
    )


def decode_body(
    body: bytes | bytearray | memoryview, max_frame: int = DEFAULT_MAX_FRAME, views: bool = False
) -> dict[str, Any]:
    """One untrusted frame body as a ``dict`` with ``str`` keys, or :class:`ProtocolError`.

    With ``views``, ``bin`` values of the top-level map of at least
    :data:`BIN_INLINE_MAX` bytes are read-only ``memoryview`` s of ``body``
    instead of copies (:mod:`.msgpack_views`): whoever keeps them keeps ``body``.
    """
    try:
        if views:
            view = memoryview(body).toreadonly()
            unpack = functools.partial(_unpack, max_frame=max_frame)
            obj = unpack_map_views(view, unpack, BIN_INLINE_MAX, MAX_ARRAY_LEN, MAX_MAP_LEN)
        else:
            obj = _unpack(body, max_frame)
    # Untrusted bytes: whatever the unpacker raises (ValueError and its msgpack
    # subclasses, UnicodeDecodeError, TypeError, OverflowError, RecursionError,
    # ...) means the frame is not a valid message, never that the server broke.
    except Exception as exc:
        reason = _MSGPACK_ERRORS.get(type(exc)) or str(exc) or type(exc).__name__
        raise ProtocolError(f"frame body is not valid msgpack: {reason}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"frame body must be a msgpack map, got {type(obj).__name__}")
    if not all(type(key) is str for key in obj):
        raise ProtocolError("frame body map keys must be strings")
    return obj


class FrameDecoder:
    """Turns a byte stream into messages; feed it bytes, take messages out.

    Bytes of the frame being received accumulate in one ``bytearray`` (amortised
    linear, whatever the piece size); a complete body is queued as is and
    unpacked by :meth:`next_message`, so a 60 MB frame in 64 KiB pieces is
    copied once on the way in.

    With ``views`` (the client's side: it trusts its server's answers to be
    worth keeping), a body of at least :data:`VIEW_MIN` bytes is received
    into a buffer of its own, exactly its size (from ``buffers`` when given:
    reused once no message refers to it), and its large ``bin`` values come
    out as views of that buffer, not copies. A transport that can read into
    memory asks :meth:`read_buffer` where to put the next bytes and reports
    them with :meth:`received`: a large body then goes from the socket to its
    buffer with no copy in between, and small frames through a scratch buffer.

    A bad length prefix (zero, or over ``max_frame``) makes the stream unusable
    -- there is no way to find the next frame -- so :meth:`feed` raises and every
    later :meth:`feed` raises the same error; frames completed before the bad
    prefix can still be taken. A bad *body* only costs that frame:
    :meth:`next_message` raises :class:`ProtocolError` with the frame consumed,
    and the next call returns the next frame (iteration stops at such an error;
    iterate again to go on).
    """

    def __init__(
        self,
        max_frame: int = DEFAULT_MAX_FRAME,
        *,
        views: bool = False,
        buffers: ReusableBuffers | None = None,
    ) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be >= 1")
        self.max_frame = max_frame
        self._prefix = bytearray()  # partial length prefix (< 4 bytes)
        self._body = bytearray()  # partial body of the current frame
        self._body_len = -1  # length of the current frame's body; -1 while reading a prefix
        self._ready: deque[bytearray | Bytes] = deque()  # complete bodies not yet decoded
        self._buffered = 0
        self._failed: ProtocolError | None = None
        self._views = views
        self._buffers = buffers
        self._big: Bytes | None = None  # a large body, received in place
        self._filled = 0  # bytes of it received
        self._scratch = bytearray(0)  # where read_buffer puts bytes between large bodies
        self._lent_big = False  # read_buffer's last answer was the large body

    @property
    def buffered(self) -> int:
        """Bytes fed that no returned message accounts for yet (prefixes included)."""
        return self._buffered

    @property
    def wanted(self) -> int:
        """Bytes that complete the current prefix or body; 4 between frames."""
        if self._body_len < 0:
            return PREFIX_SIZE - len(self._prefix)
        return self._body_len - (self._filled if self._big is not None else len(self._body))

    def read_buffer(self, size: int = 1 << 18) -> memoryview:
        """Where the next bytes of the stream should go (``socket.recv_into``); at most
        ``size`` bytes unless a large body is being received in place."""
        self._lent_big = self._big is not None
        if self._big is not None:
            return self._big.data[self._filled :]
        if len(self._scratch) != size:
            self._scratch = bytearray(size)
        return memoryview(self._scratch)

    def body_buffer(self) -> memoryview | None:
        """The rest of a large body being received in place (for ``recv_into``), else None:
        between large bodies, bytes are better read as they come and :meth:`feed`."""
        return self.read_buffer() if self._big is not None else None

    def received(self, n: int) -> None:
        """``n`` bytes were put at the start of the last :meth:`read_buffer`."""
        if not self._lent_big:
            self.feed(memoryview(self._scratch)[:n])
        elif n:
            self._buffered += n
            self._filled += n
            self._finish_big()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Take the next bytes of the stream; raise at once on a bad length prefix."""
        if self._failed is not None:
            raise type(self._failed)(f"stream already failed: {self._failed}")
        view = memoryview(data).cast("B")
        try:
            while view:
                view = self._take_prefix(view) if self._body_len < 0 else self._take_body(view)
        except ProtocolError as exc:
            self._failed = exc
            raise

    def _take_prefix(self, view: memoryview) -> memoryview:
        take = PREFIX_SIZE - len(self._prefix)
        self._prefix += view[:take]
        self._buffered += min(take, len(view))
        if len(self._prefix) < PREFIX_SIZE:
            return view[take:]
        length = int.from_bytes(self._prefix, "big")
        if length == 0:
            raise ProtocolError("frame length 0: a frame body is at least one byte")
        if length > self.max_frame:
            raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
        self._body_len = length
        self._prefix.clear()
        # A large body not all here yet gets a buffer of its own, for the rest to be
        # received in place; one already all here is copied out once, as any body.
        if self._views and length >= VIEW_MIN and len(view) - take < length:
            buf = self._buffers.take(length) if self._buffers is not None else None
            self._big = buf[:length] if buf is not None else np.empty(length, np.uint8)
            self._filled = 0
        return view[take:]

    def _finish_big(self) -> None:
        if self._big is not None and self._filled == self._body_len:
            self._ready.append(self._big)
            self._big = None
            self._body_len = -1

    def _take_body(self, view: memoryview) -> memoryview:
        if self._big is not None:
            take = min(self._body_len - self._filled, len(view))
            self._big.data[self._filled : self._filled + take] = view[:take]  # a memcpy
            self._buffered += take
            self._filled += take
            self._finish_big()
            return view[take:]
        take = self._body_len - len(self._body)
        if not self._body and len(view) >= take:
            self._ready.append(bytearray(view[:take]))  # whole body in this piece: one copy
        else:
            self._body += view[:take]
            if len(self._body) < self._body_len:
                self._buffered += len(view)
                return view[len(view) :]
            self._ready.append(self._body)
            self._body = bytearray()
        self._buffered += take
        self._body_len = -1
        return view[take:]

    def next_message(self) -> dict[str, Any] | None:
        """The next complete message, or ``None`` until more bytes arrive.

        Raises :class:`ProtocolError` for a body that is not a msgpack map with
        ``str`` keys; that frame is gone, the stream stays in sync.
        """
        if not self._ready:
            return None
        body = self._ready.popleft()
        self._buffered -= PREFIX_SIZE + len(body)
        if isinstance(body, np.ndarray):
            return decode_body(body.data, self.max_frame, views=True)
        return decode_body(body, self.max_frame, self._views and len(body) >= VIEW_MIN)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (msg := self.next_message()) is not None:
            yield msg
