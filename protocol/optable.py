"""Every operation of the binary protocol, by name: the one table both sides read.

:data:`OPERATIONS` is built from the declarations in :mod:`.ops`,
:mod:`.analytics` and :mod:`.tags`; the sets below are derived from it, so an
op added there is known to the server's header check, its role check and the
client's retry rule at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .analytics import ANALYTICS_OPS
from .cluster import CLUSTER_OPS
from .declare import Op, Role
from .errors import ProtocolError, UnknownOperation
from .messages import INT64_MAX
from .ops import CORE_OPS
from .tags import CATALOG_OPS

OPERATIONS: dict[str, Op[Any, Any]] = {
    op.name: op for op in (*CORE_OPS, *ANALYTICS_OPS, *CATALOG_OPS, *CLUSTER_OPS)
}
"""Op name -> its declaration, in the order docs/protocol.md lists them."""

OPS: frozenset[str] = frozenset(OPERATIONS)
OPEN_OPS = frozenset(n for n, op in OPERATIONS.items() if op.role is Role.OPEN)
"""Answered before authentication (``hello``, ``ping``)."""
READ_OPS = frozenset(n for n, op in OPERATIONS.items() if op.role is Role.READ)
"""Any valid token may run these; every other op but the open ones needs ``write``."""
IDEMPOTENT_OPS = frozenset(n for n, op in OPERATIONS.items() if op.idempotent)
"""Safe to send twice: re-running them changes nothing on the server."""


def parse_request_header(msg: Mapping[str, Any]) -> tuple[int, str]:
    """``(id, op)`` of a request.

    :class:`ProtocolError` for a missing or ill-typed ``id`` or ``op``,
    :class:`UnknownOperation` for a ``str`` op that is not in :data:`OPS`.
    """
    req_id = msg.get("id")
    if type(req_id) is not int or not 0 <= req_id <= INT64_MAX:
        raise ProtocolError("request 'id' must be an int in 0..2**63-1")
    op = msg.get("op")
    if not isinstance(op, str):
        raise ProtocolError("request 'op' must be a str")
    if op not in OPERATIONS:
        raise UnknownOperation(f"unknown op {op[:64]!r}")
    return req_id, op
