"""Framing: a 4-byte big-endian length, then that many bytes of msgpack.

:func:`encode_frame` turns one message (a ``dict`` with ``str`` keys) into the
bytes to send. :class:`FrameDecoder` is fed bytes as they arrive, in pieces of
any size, and hands back decoded messages. Neither touches a socket.

The decoder treats its input as untrusted: a length prefix is checked against
``max_frame`` as soon as its four bytes are in, before a byte of that frame's
body is buffered, and the msgpack body is unpacked with limits on every
container so a hostile peer cannot make it allocate or recurse without bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import msgpack
import numpy as np

from .errors import FrameTooLarge, ProtocolError

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


def _pack_default(obj: Any) -> Any:
    # numpy scalars leak easily into stats and counters; arrays must not leak,
    # because only the caller knows which wire dtype they should have.
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        raise TypeError("numpy arrays must be packed with pack_array(arr, dtype)")
    raise TypeError(f"cannot serialize {type(obj).__name__!r} object")


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


def decode_body(
    body: bytes | bytearray | memoryview, max_frame: int = DEFAULT_MAX_FRAME
) -> dict[str, Any]:
    """One untrusted frame body as a ``dict`` with ``str`` keys, or :class:`ProtocolError`."""
    try:
        obj = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_frame,
            max_str_len=min(MAX_STR_LEN, max_frame),
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=MAX_MAP_LEN,
            max_ext_len=0,
        )
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

    A bad length prefix (zero, or over ``max_frame``) makes the stream unusable
    -- there is no way to find the next frame -- so :meth:`feed` raises and every
    later :meth:`feed` raises the same error; frames completed before the bad
    prefix can still be taken. A bad *body* only costs that frame:
    :meth:`next_message` raises :class:`ProtocolError` with the frame consumed,
    and the next call returns the next frame (iteration stops at such an error;
    iterate again to go on).
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be >= 1")
        self.max_frame = max_frame
        self._prefix = bytearray()  # partial length prefix (< 4 bytes)
        self._body = bytearray()  # partial body of the current frame
        self._body_len = -1  # length of the current frame's body; -1 while reading a prefix
        self._ready: deque[bytearray] = deque()  # complete bodies not yet decoded
        self._buffered = 0
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes fed that no returned message accounts for yet (prefixes included)."""
        return self._buffered

    @property
    def wanted(self) -> int:
        """Bytes that complete the current prefix or body; 4 between frames."""
        if self._body_len < 0:
            return PREFIX_SIZE - len(self._prefix)
        return self._body_len - len(self._body)

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
        return view[take:]

    def _take_body(self, view: memoryview) -> memoryview:
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
        return decode_body(body, self.max_frame)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (msg := self.next_message()) is not None:
            yield msg
