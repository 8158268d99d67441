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
- ``analytics`` -- the same for ``aggregate``, ``interpolate`` and ``plot``.
- ``tags``     -- the same for the tag catalog (``tag_*``) and the deletes.
- ``line_protocol`` -- InfluxDB line protocol text -> tag names and columns
  (the server's HTTP ``/write``); not part of the binary protocol.

A tag is referred to by its id or its name (``tag_field``); the server
resolves names. Response builders keep arrays as numpy arrays in wire dtypes,
so the server can send a large answer with :func:`encode_frame_parts`.

Data flows one way: a transport feeds bytes to a :class:`FrameDecoder`, takes
dicts out, parses them with ``parse_*``, builds answers with the builders and
sends ``encode_frame(answer)``. The wire format is specified for other
languages in ``docs/protocol.md``.
"""

from . import legacy
from .analytics import AGGREGATE, AGGREGATES, INTERPOLATE, PLOT
from .declare import Message, Op, Role
from .errors import ERROR_CLASSES, XtsdbError, error_from_code
from .frames import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    decode_body,
    encode_body,
    encode_frame,
    encode_frame_parts,
)
from .legacy import *  # noqa: F403 - TRANSITIONAL, removed before this change lands
from .messages import (
    GOOD_QUALITY,
    PROTOCOL_VERSION,
    Q_DTYPE,
    SUPPORTED_VERSIONS,
    TAGS_DTYPE,
    TS_DTYPE,
    TS_LIMIT,
    VALUES_DTYPE,
    error_response,
    int_field,
    ok_response,
    pack_array,
    parse_response_header,
    raise_for_error,
    readable_id,
    request,
    tag_field,
    unpack_array,
    wire_array,
)
from .ops import BACKUP, FLUSH, HELLO, LAST, PING, QUERY, STATS, WRITE
from .optable import IDEMPOTENT_OPS, OPERATIONS, OPS, READ_OPS, parse_request_header
from .tags import (
    DELETE,
    DELETE_TAG,
    TAG_CREATE,
    TAG_GET,
    TAG_LIST,
    TAG_REMOVE,
    TAG_RENAME,
    TAG_UPDATE,
)

__all__ = [
    "AGGREGATE",
    "AGGREGATES",
    "BACKUP",
    "DEFAULT_MAX_FRAME",
    "DELETE",
    "DELETE_TAG",
    "ERROR_CLASSES",
    "FLUSH",
    "GOOD_QUALITY",
    "HELLO",
    "IDEMPOTENT_OPS",
    "INTERPOLATE",
    "LAST",
    "OPERATIONS",
    "OPS",
    "PING",
    "PLOT",
    "PROTOCOL_VERSION",
    "QUERY",
    "Q_DTYPE",
    "READ_OPS",
    "STATS",
    "SUPPORTED_VERSIONS",
    "TAGS_DTYPE",
    "TAG_CREATE",
    "TAG_GET",
    "TAG_LIST",
    "TAG_REMOVE",
    "TAG_RENAME",
    "TAG_UPDATE",
    "TS_DTYPE",
    "TS_LIMIT",
    "VALUES_DTYPE",
    "WRITE",
    "FrameDecoder",
    "Message",
    "Op",
    "Role",
    "XtsdbError",
    "decode_body",
    "encode_body",
    "encode_frame",
    "encode_frame_parts",
    "error_from_code",
    "error_response",
    "int_field",
    "legacy",
    "ok_response",
    "pack_array",
    "parse_request_header",
    "parse_response_header",
    "raise_for_error",
    "readable_id",
    "request",
    "tag_field",
    "unpack_array",
    "wire_array",
]
