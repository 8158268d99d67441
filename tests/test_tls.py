"""TLS on the TCP port: server config, both clients, client certificates, the CLI.

Certificates are throwaway ones made by ``trustme`` (a test-only dependency)
for ``localhost`` and ``127.0.0.1``; nothing here touches the system trust store.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from xtsdb.client import AsyncClient, Client
from xtsdb.client.cli import main as cli_main
from xtsdb.protocol import encode_frame, request
from xtsdb.protocol.errors import InvalidInput, XtsdbConnectionError
from xtsdb.server.app import ServerThread
from xtsdb.server.config import ConfigError, ServerConfig

trustme = pytest.importorskip("trustme")

TOKEN = "write-secret-0123456789abcdef"


@dataclass
class Pki:
    ca: Path  # CA certificate the clients trust
    cert: Path  # server certificate chain
    key: Path  # server private key
    combined: Path  # server key + chain in one file
    client: Path  # client key + certificate, signed by the same CA
    other_ca: Path  # a CA that signed nothing here
    misnamed: Path  # key + certificate from the right CA, for another host name


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("sensor-17@example.com")
    names = ("ca", "cert", "key", "both", "client", "other", "misnamed")
    p = Pki(*(d / f"{name}.pem" for name in names))
    ca.issue_cert("db.example.org").private_key_and_cert_chain_pem.write_to_path(str(p.misnamed))
    ca.cert_pem.write_to_path(str(p.ca))
    other.cert_pem.write_to_path(str(p.other_ca))
    server.private_key_pem.write_to_path(str(p.key))
    for blob in server.cert_chain_pems:
        blob.write_to_path(str(p.cert), append=True)
    server.private_key_and_cert_chain_pem.write_to_path(str(p.combined))
    client.private_key_and_cert_chain_pem.write_to_path(str(p.client))
    return p


def tls_url(srv: ServerThread, token: str | None = None) -> str:
    return f"xtsdbs://{':' + token + '@' if token else ''}{srv.host}:{srv.port}"


@pytest.fixture
def tls_server(server_factory: Callable[..., ServerThread], pki: Pki) -> ServerThread:
    return server_factory(tls_cert=pki.cert, tls_key=pki.key)


def test_sync_round_trip_and_concurrent_use(tls_server: ServerThread, pki: Pki) -> None:
    n = 300_000  # several frames, each many TLS records
    ts = np.arange(n, dtype=np.int64)
    with Client(tls_url(tls_server), ca=pki.ca, max_points_per_frame=100_000) as db:
        assert db.write(1, ts, ts * 0.5) == n
        got = db.query(1, 0, n)
        np.testing.assert_array_equal(got.values, ts * 0.5)
        errors: list[BaseException] = []

        def worker(i: int) -> None:  # sends from several threads while the reader decrypts
            try:
                for j in range(200):
                    db.write_point(10 + i, j, float(j))
                db.flush()
                assert db.query(1, 0, 1000).timestamps.size == 1000
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == [] and not any(t.is_alive() for t in threads)
        assert db.last([10, 11, 12, 13]).values.tolist() == [199.0] * 4


async def test_async_round_trip(tls_server: ServerThread, pki: Pki) -> None:
    async with await AsyncClient.connect(tls_url(tls_server), ca=pki.ca) as db:
        ts = np.arange(50_000, dtype=np.int64)
        assert await db.write(2, ts, ts * 2.0) == ts.size
        np.testing.assert_array_equal((await db.query(2, 0, 1 << 40)).values, ts * 2.0)


def test_key_and_chain_in_one_file_and_tokens_over_tls(
    server_factory: Callable[..., ServerThread], pki: Pki
) -> None:
    srv = server_factory(tls_cert=pki.combined, tokens=(f"write:{TOKEN}",))
    with Client(tls_url(srv, TOKEN), ca=pki.ca) as db:
        assert db.write(3, [1], [1.0]) == 1
    ctx = ssl.create_default_context(cafile=str(pki.ca))  # a ready-made context works too
    with Client(f"xtsdb://{srv.host}:{srv.port}", tls=ctx, token=TOKEN) as db:
        assert db.query(3, 0, 10).values.tolist() == [1.0]


def test_untrusted_or_misnamed_server_is_refused(
    tls_server: ServerThread, server_factory: Callable[..., ServerThread], pki: Pki
) -> None:
    with pytest.raises(XtsdbConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        Client(tls_url(tls_server), ca=pki.other_ca, timeout=5)
    with pytest.raises(XtsdbConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        Client(tls_url(tls_server), timeout=5)  # the system trust store knows no trustme CA
    # A certificate from the trusted CA, but for db.example.org: not for 127.0.0.1.
    misnamed = server_factory(tls_cert=pki.misnamed)
    with pytest.raises(XtsdbConnectionError, match="mismatch"):
        Client(tls_url(misnamed), ca=pki.ca, timeout=5)


def test_plain_and_tls_do_not_mix(tls_server: ServerThread, server: ServerThread, pki: Pki) -> None:
    with pytest.raises(XtsdbConnectionError):  # plain client, TLS server
        Client(f"xtsdb://{tls_server.host}:{tls_server.port}", timeout=5)
    with pytest.raises(XtsdbConnectionError):  # TLS client, plain server
        Client(tls_url(server), ca=pki.ca, timeout=5)
    with Client(tls_url(tls_server), ca=pki.ca) as db:  # the TLS server is unharmed
        assert db.ping() >= 0


def test_client_certificates_required(
    server_factory: Callable[..., ServerThread], pki: Pki
) -> None:
    srv = server_factory(tls_cert=pki.cert, tls_key=pki.key, tls_client_ca=pki.ca)
    with pytest.raises(XtsdbConnectionError):  # no certificate: handshake or hello fails
        Client(tls_url(srv), ca=pki.ca, timeout=5)
    with Client(tls_url(srv), ca=pki.ca, cert=pki.client) as db:
        assert db.write(4, [5], [6.0]) == 1


async def test_async_client_certificate(
    server_factory: Callable[..., ServerThread], pki: Pki
) -> None:
    srv = server_factory(tls_cert=pki.cert, tls_key=pki.key, tls_client_ca=pki.ca)
    async with await AsyncClient.connect(tls_url(srv), ca=pki.ca, cert=pki.client) as db:
        assert await db.ping() >= 0


def test_stalled_handshake_is_cut_off(
    server_factory: Callable[..., ServerThread], pki: Pki
) -> None:
    srv = server_factory(tls_cert=pki.cert, tls_key=pki.key, frame_timeout=0.3)
    with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
        with contextlib.suppress(ConnectionResetError):  # a reset is a close too
            assert sock.recv(1024) == b""  # closed by the server, well before 10 s


def test_cli_over_tls(
    tls_server: ServerThread, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["--url", tls_url(tls_server), "--ca", str(pki.ca), "ping"]) == 0
    assert "pong" in capsys.readouterr().out
    assert cli_main(["--url", tls_url(tls_server), "ping"]) == 1
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err


def test_tls_configuration_errors(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match="need tls_cert"):
        ServerConfig(tls_key=pki.key)
    with pytest.raises(ConfigError, match="need tls_cert"):
        ServerConfig(tls_client_ca=pki.ca)
    with pytest.raises(ConfigError, match="cannot load tls_cert"):
        ServerConfig(tls_cert=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="cannot load tls_cert"):
        ServerConfig(tls_cert=pki.cert, tls_key=pki.client)  # a key that does not match
    with pytest.raises(ConfigError, match="cannot load tls_client_ca"):
        ServerConfig(tls_cert=pki.combined, tls_client_ca=tmp_path / "nope.pem")
    cfg = ServerConfig.load([], {"XTSDB_TLS_CERT": str(pki.cert), "XTSDB_TLS_KEY": str(pki.key)})
    assert cfg.tls_cert == pki.cert
    with pytest.raises(InvalidInput, match="tls=False"):
        Client("xtsdbs://127.0.0.1:1", tls=False)
    with pytest.raises(InvalidInput, match="key= needs cert="):
        Client("xtsdbs://127.0.0.1:1", key=pki.key)


def test_plain_frames_on_a_tls_port_never_reach_the_service(
    tls_server: ServerThread, pki: Pki
) -> None:
    with socket.create_connection((tls_server.host, tls_server.port), timeout=10) as sock:
        sock.sendall(encode_frame(request("ping", 1)))
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1024):
                data += chunk
        assert b"ok" not in data  # at most a TLS alert, never a response
    with Client(tls_url(tls_server), ca=pki.ca) as db:
        assert "ping" not in db.stats()["server"]["requests"]


def test_http_port_speaks_tls_when_the_binary_port_does(
    server_factory: Callable[..., ServerThread], pki: Pki
) -> None:
    # Tokens go to the HTTP port too (/write, /query, remote write): with a certificate
    # configured it is HTTPS only, with the same certificate and trust.
    srv = server_factory(tls_cert=pki.cert, tls_key=pki.key, tokens=[f"write:{TOKEN}"], http_port=0)
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    conn = http.client.HTTPSConnection(srv.host, srv.http_port, timeout=5, context=ctx)
    conn.request("GET", "/query?q=SHOW+DATABASES", headers={"Authorization": f"Token {TOKEN}"})
    resp = conn.getresponse()
    assert resp.status == 200 and b"databases" in resp.read()
    conn.close()
    plain = http.client.HTTPConnection(srv.host, srv.http_port, timeout=5)
    with pytest.raises((OSError, http.client.HTTPException)):  # plain HTTP gets no answer
        plain.request("GET", "/ping")
        plain.getresponse()
    plain.close()
