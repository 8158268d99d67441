"""Server fixtures: a real server on 127.0.0.1:0 over a temp data directory.

- ``server``          a started :class:`ServerThread` (small engine sizes).
- ``server_factory``  ``server_factory(**overrides)`` starts another one with
                      :class:`ServerConfig` fields changed; stopped at teardown.
- ``raw``             ``raw(server)`` opens a :class:`RawConn`: a blocking socket
                      speaking frames, for tests that send hand-made bytes.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xtsdb.protocol import FrameDecoder, encode_frame, request
from xtsdb.server.app import ServerThread
from xtsdb.server.config import ServerConfig
from xtsdb.server.engine.container import FORMAT_VERSION


def require_program(program: str, package: str) -> str:
    """The path of a system program a test drives for real.

    Locally a missing program skips the test with the Debian package to install;
    in CI (``CI`` set, as ``.ci/run`` runs) it fails instead, because ``.ci/run``
    installs every such package and a skip there would hide a missing step.
    """
    path = shutil.which(program)
    if path is None:
        message = f"{program} not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(message + ": .ci/run must install it")
        pytest.skip(message)
    return path


def set_format_version(data_dir: Path, version: int) -> None:
    """Rewrite the format version ``xtsdb.meta`` records, with a valid CRC: what a
    directory written by another version of xtsdb looks like to this one."""
    meta = data_dir / "xtsdb.meta"
    body, _, _ = meta.read_bytes().rpartition(b"\n")
    body = body.replace(b'"version": %d' % FORMAT_VERSION, b'"version": %d' % version)
    meta.write_bytes(body + b"\n" + str(zlib.crc32(body)).encode())


SMALL_ENGINE: dict[str, Any] = {
    "chunk_size": 256 * 1024,
    "meta_extents": 1,
    "block_points": 1000,
    "read_workers": 1,
}


def server_config(data_dir: Path, **overrides: Any) -> ServerConfig:
    base = ServerConfig(
        host="127.0.0.1",
        port=0,
        data_dir=data_dir,
        shutdown_timeout=10.0,
        query_threads=4,
        http_port=0,  # any free port: tests run side by side
        **SMALL_ENGINE,
    )
    return base.replace(**overrides)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def make(**overrides: Any) -> ServerThread:
        overrides.setdefault("data_dir", tmp_path / f"data{len(started)}")
        srv = ServerThread(server_config(**overrides)).start()
        started.append(srv)
        return srv

    yield make
    for srv in reversed(started):
        srv.stop(timeout=30)


@pytest.fixture
def server(server_factory: Callable[..., ServerThread]) -> ServerThread:
    return server_factory()


class RawConn:
    """A blocking socket that sends and receives whole frames; every wait is bounded."""

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.decoder = FrameDecoder()
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.sendall(encode_frame(msg))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> dict[str, Any]:
        """The next response; ``ConnectionError`` if the server closed the connection."""
        while True:
            msg = self.decoder.next_message()
            if msg is not None:
                return msg
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("server closed the connection")
            self.decoder.feed(data)

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its response (checked to carry the same id)."""
        req_id = self.next_id()
        self.send(request(op, req_id, **fields))
        resp = self.recv()
        assert resp["id"] == req_id, resp
        return resp

    def is_closed_by_server(self) -> bool:
        """True if the server closes the connection (EOF or reset) within the socket timeout."""
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    return True
                self.decoder.feed(data)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw() -> Iterator[Callable[..., RawConn]]:
    conns: list[RawConn] = []

    def connect(srv: ServerThread, timeout: float = 10.0) -> RawConn:
        conn = RawConn((srv.host, srv.port), timeout)
        conns.append(conn)
        return conn

    yield connect
    for conn in conns:
        conn.close()
