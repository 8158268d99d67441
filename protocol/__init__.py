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
  ``raise_for_error``), strict scalar field checks, and the array codec: arrays
  are the raw little-endian bytes of a fixed dtype in a msgpack ``bin``
  (``pack_array`` / zero-copy ``unpack_array``).
- ``declare``, ``wire`` -- how an operation is declared once: an :class:`Op`
  (name, request and response messages, role, idempotency, errors) whose
  message fields carry a wire kind (type, checks, docs). ``op.encode`` /
  ``op.build`` make a request, ``op.parse`` checks one, ``op.answer`` /
  ``op.reply`` make the response, ``op.parse_answer`` reads it.
- ``ops``, ``analytics``, ``tags`` -- the declarations: ``HELLO``, ``PING``,
  ``WRITE``, ``QUERY``, ``LAST``, ``FLUSH``, ``STATS``, ``BACKUP``;
  ``AGGREGATE``, ``INTERPOLATE``, ``PLOT``; the ``TAG_*`` ops and the deletes.
- ``optable`` -- :data:`OPERATIONS` by name, and what derives from it (``OPS``,
  ``READ_OPS``, ``IDEMPOTENT_OPS``, ``parse_request_header``); ``opdocs``
  renders docs/protocol.md's op reference from it.
- ``line_protocol`` -- InfluxDB line protocol text -> tag names and columns
  (the server's HTTP ``/write``); not part of the binary protocol.

A tag is referred to by its id or its name (``tag_field``); the server
resolves names. Responses keep arrays as numpy arrays in wire dtypes, so the
server can send a large answer with :func:`encode_frame_parts`.

Data flows one way: a transport feeds bytes to a :class:`FrameDecoder`, takes
dicts out, finds the op (``parse_request_header``), parses with it, answers
with it and sends ``encode_frame(answer)``. The wire format is specified for
other languages in ``docs/protocol.md``.
"""

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
    TAG_SEARCH,
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
    "TAG_SEARCH",
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
