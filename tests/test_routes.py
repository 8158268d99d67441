"""The server's route table against the op declarations: every op answered, by the right handler."""

from __future__ import annotations

import typing

from xtsdb.protocol import HELLO, OPERATIONS
from xtsdb.server.auth import OPEN_OPS, READ_OPS
from xtsdb.server.routes import ROUTES


def test_every_declared_op_but_hello_has_a_route() -> None:
    # hello changes the connection's own state, so the dispatcher answers it itself.
    assert set(ROUTES) == set(OPERATIONS) - {HELLO.name}
    for name, route in ROUTES.items():
        assert route.op is OPERATIONS[name]


def test_each_handler_takes_its_ops_request_and_returns_its_response() -> None:
    for route in ROUTES.values():
        hints = typing.get_type_hints(route.handler)
        assert hints["req"] is route.op.request, route.op.name
        returned = hints["return"]
        assert route.op.response in (returned, *typing.get_args(returned)), route.op.name


def test_roles_come_from_the_declarations() -> None:
    assert {"hello", "ping"} == OPEN_OPS
    reads = {"query", "last", "stats", "aggregate", "interpolate", "plot", "tag_get", "tag_list"}
    # what read tokens could do before the declarations, and the tag search added since
    assert reads | {"tag_search", "cluster_status", "cluster_shard_tags"} == READ_OPS
