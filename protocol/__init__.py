"""The xtsdb wire protocol, sans I/O: bytes in, messages out; messages in, bytes out.

Nothing here opens a socket, touches a file or imports asyncio. The server
and both clients own their transports and share this package, so there is
exactly one encoder, one decoder and one set of checks.

- ``errors``   -- the one exception tree of xtsdb; each class has a stable wire
  ``code`` (:data:`~xtsdb.protocol.errors.ERROR_CLASSES`).
- ``frames``   -- framing: a 4-byte big-endian length, then a msgpack map.
  :func:`encode_frame` and :class:`FrameDecoder` (fed bytes in any pieces,
  checks every length prefix against ``max_frame`` before buffering a body).
- ``messages`` -- envelopes (``request``, ``ok_response``, ``error_response``,
  ``raise_for_error``, ``parse_request_header``), strict scalar field checks,
  and the array codec: arrays are the raw little-endian bytes of a fixed
  dtype in a msgpack ``bin`` (``pack_array`` / zero-copy ``unpack_array``).
- ``ops``      -- per-op builders and parsers (``write_request`` /
  ``parse_write``, ``query_request`` / ``parse_query``, ``points_response`` /
  ``parse_points``, ...), used by clients and server alike.

Data flows one way: a transport feeds bytes to a :class:`FrameDecoder`, takes
dicts out, parses them with ``parse_*``, builds answers with the builders and
sends ``encode_frame(answer)``. The wire format is specified for other
languages in ``docs/protocol.md``.
"""

from .errors import ERROR_CLASSES, XtsdbError, error_from_code
from .frames import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    decode_body,
    encode_body,
    encode_frame,
)
from .messages import (
    OPS,
    PROTOCOL_VERSION,
    Q_DTYPE,
    SUPPORTED_VERSIONS,
    TAGS_DTYPE,
    TS_DTYPE,
    VALUES_DTYPE,
    error_response,
    int_field,
    ok_response,
    pack_array,
    parse_request_header,
    parse_response_header,
    raise_for_error,
    readable_id,
    request,
    unpack_array,
)
from .ops import (
    GOOD_QUALITY,
    backup_request,
    hello_request,
    hello_response,
    last_request,
    last_response,
    parse_backup,
    parse_backup_response,
    parse_hello,
    parse_hello_response,
    parse_last,
    parse_last_response,
    parse_points,
    parse_query,
    parse_write,
    points_response,
    query_request,
    write_request,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "ERROR_CLASSES",
    "GOOD_QUALITY",
    "OPS",
    "PROTOCOL_VERSION",
    "Q_DTYPE",
    "SUPPORTED_VERSIONS",
    "TAGS_DTYPE",
    "TS_DTYPE",
    "VALUES_DTYPE",
    "FrameDecoder",
    "XtsdbError",
    "backup_request",
    "decode_body",
    "encode_body",
    "encode_frame",
    "error_from_code",
    "error_response",
    "hello_request",
    "hello_response",
    "int_field",
    "last_request",
    "last_response",
    "ok_response",
    "pack_array",
    "parse_backup",
    "parse_backup_response",
    "parse_hello",
    "parse_hello_response",
    "parse_last",
    "parse_last_response",
    "parse_points",
    "parse_query",
    "parse_request_header",
    "parse_response_header",
    "parse_write",
    "points_response",
    "query_request",
    "raise_for_error",
    "readable_id",
    "request",
    "unpack_array",
    "write_request",
]
