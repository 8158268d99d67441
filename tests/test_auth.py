"""Token authentication: configuration, the wire rules, the SDK and CLI, and secrecy.

A real server (``server_factory``) with a read token and a write token; raw
frames check exactly what a stranger, a reader and a writer may do, the SDK
and CLI check the same from the user's side, and every secret used here is
searched for in the captured logs, reprs and error messages.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from xtsdb.client import AsyncClient, Client
from xtsdb.client.cli import main as cli_main
from xtsdb.protocol import WRITE
from xtsdb.protocol.errors import (
    AuthenticationFailed,
    FrameTooLarge,
    InvalidInput,
    PermissionDenied,
)
from xtsdb.server.app import ServerThread
from xtsdb.server.auth import Authenticator, PeerAuth, check_op, load_tokens
from xtsdb.server.config import ConfigError, ServerConfig
from xtsdb.server.main import main as server_main

if TYPE_CHECKING:
    from conftest import RawConn

Raw = Callable[..., "RawConn"]
READ_SECRET = "read-secret-0123456789abcdef"
WRITE_SECRET = "write-secret-0123456789abcdef"
WRONG_SECRET = "wrong-secret-0123456789abcdef"
TOKENS = (f"read:{READ_SECRET}", f"write:{WRITE_SECRET}")
ALL_SECRETS = (READ_SECRET, WRITE_SECRET, WRONG_SECRET)


def code(resp: dict[str, Any]) -> int:
    assert resp["ok"] is False, resp
    c: int = resp["error"]["code"]
    return c


@pytest.fixture
def secured(server_factory: Callable[..., ServerThread]) -> ServerThread:
    return server_factory(tokens=TOKENS)


def url_of(srv: ServerThread, token: str | None = None) -> str:
    return f"xtsdb://{':' + token + '@' if token else ''}{srv.host}:{srv.port}"


# -- configuration ------------------------------------------------------------------------


def test_tokens_from_flags_env_toml_and_file(tmp_path: Path) -> None:
    a, b, c = "a" * 16, "b" * 16, "c" * 16
    flags = ServerConfig.load(["--token", f"read:{a}", "--tokens", f"write:{b},read:{c}"], {})
    assert flags.tokens == (f"read:{a}", f"write:{b}", f"read:{c}")
    env = ServerConfig.load([], {"XTSDB_TOKENS": f"read:{a}, write:{b}"})
    assert env.tokens == (f"read:{a}", f"write:{b}")
    toml = tmp_path / "x.toml"
    toml.write_text(f'tokens = ["write:{c}"]\n')
    assert ServerConfig.load(["--config", str(toml)], {}).tokens == (f"write:{c}",)
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# operators\nwrite:{a}\n\nread:{b}  # dashboards\n")
    cfg = ServerConfig.load([], {"XTSDB_TOKEN_FILE": str(token_file)})
    roles = sorted(t.role for t in load_tokens(cfg.tokens, cfg.token_file))
    assert roles == ["read", "write"]
    for c_ in (flags, env, cfg):
        assert a not in repr(c_) and b not in repr(c_)  # secrets stay out of reprs


@pytest.mark.parametrize(
    "entry, reason",
    [
        ("admin:" + "s" * 20, "role"),
        ("read:tiny", "shorter than 16"),
        ("no-colon-" + "s" * 20, "expected 'read:SECRET'"),
        ("read:" + "s" * 10 + " " + "s" * 10, "whitespace"),
    ],
)
def test_bad_token_entries_are_refused_without_echoing_them(entry: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        ServerConfig.load(["--token", entry], {})
    secret = entry.partition(":")[2] or entry
    assert secret not in str(info.value)


def test_bad_token_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read token file"):
        ServerConfig(token_file=tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no tokens"):
        ServerConfig(token_file=empty)


def test_remote_bind_needs_a_token_or_allow_remote(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="without authentication") as info:
        ServerConfig.load(["--host", "0.0.0.0"], {})
    assert "--tokens" in str(info.value) and "--allow-remote" in str(info.value)
    assert ServerConfig.load(["--host", "0.0.0.0", "--token", f"read:{READ_SECRET}"], {}).tokens
    assert ServerConfig.load(["--host", "0.0.0.0", "--allow-remote"], {}).allow_remote
    assert ServerConfig.load(["--host", "::1"], {}).host == "::1"  # loopback needs neither
    assert server_main(["--host", "10.1.2.3", "--data-dir", str(tmp_path / "d")]) == 2


def test_op_rules() -> None:
    auth = Authenticator(load_tokens(TOKENS, None))
    stranger, reader, writer = PeerAuth(), PeerAuth("read"), PeerAuth("write")
    for op in ("hello", "ping"):
        check_op(auth, stranger, op)
    for op in ("query", "last", "stats", "write", "flush"):
        with pytest.raises(AuthenticationFailed):
            check_op(auth, stranger, op)
        check_op(auth, writer, op)
        check_op(None, stranger, op)  # no tokens configured: open server
    for op in ("query", "last", "stats", "aggregate", "interpolate", "plot", "tag_get", "tag_list"):
        check_op(auth, reader, op)
    changes = ("delete", "delete_tag", "tag_create", "tag_update", "tag_rename", "tag_remove")
    for op in ("write", "flush", "backup", *changes, "an_op_added_later"):  # fail closed
        with pytest.raises(PermissionDenied):
            check_op(auth, reader, op)
    assert auth.authenticate(WRITE_SECRET) == "write"
    assert auth.authenticate(READ_SECRET) == "read"
    for bad in (None, "", WRONG_SECRET, READ_SECRET + "x", READ_SECRET[:-1]):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(bad)
    assert READ_SECRET not in repr(auth) and READ_SECRET not in repr(load_tokens(TOKENS, None))


# -- the wire -----------------------------------------------------------------------------


def test_unauthenticated_connection_gets_only_authentication_failed(
    secured: ServerThread, raw: Raw
) -> None:
    conn = raw(secured)
    assert conn.call("ping")["ok"]  # liveness probes need no secret
    ts = np.arange(3, dtype="<i8").tobytes()
    vals = np.ones(3, dtype="<f8").tobytes()
    requests: list[tuple[str, dict[str, Any]]] = [
        ("write", {"tag": 1, "ts": ts, "values": vals}),
        ("query", {"tag": 1, "start": 0, "end": 10}),
        ("last", {"tags": np.array([1], "<u4").tobytes()}),
        ("stats", {}),
        ("flush", {}),
    ]
    for op, fields in requests:
        resp = conn.call(op, **fields)
        assert code(resp) == AuthenticationFailed.code, (op, resp)
    assert conn.call("ping")["ok"]  # still connected, still a stranger
    hello = conn.call("hello", versions=[1], token=WRITE_SECRET)
    assert hello["ok"] and hello["auth"] is True
    assert conn.call("query", tag=1, start=0, end=10)["ok"]  # nothing was written above


@pytest.mark.parametrize("token", [None, WRONG_SECRET, READ_SECRET.upper()])
def test_failed_hello_is_answered_then_the_connection_closed(
    secured: ServerThread, raw: Raw, token: str | None
) -> None:
    conn = raw(secured, timeout=5)
    fields: dict[str, Any] = {"versions": [1]}
    if token is not None:
        fields["token"] = token
    assert code(conn.call("hello", **fields)) == AuthenticationFailed.code
    assert conn.is_closed_by_server()  # one guess per connection


def test_roles(secured: ServerThread, raw: Raw) -> None:
    writer, reader = raw(secured), raw(secured)
    assert writer.call("hello", versions=[1], token=WRITE_SECRET)["ok"]
    assert reader.call("hello", versions=[1], token=READ_SECRET)["ok"]
    ts = np.arange(5, dtype=np.int64)
    writer.send(WRITE.build(100, 7, ts, ts * 2.0))
    assert writer.recv()["n"] == 5
    reader.send(WRITE.build(100, 7, ts, ts * 3.0))
    assert code(reader.recv()) == PermissionDenied.code
    assert code(reader.call("flush")) == PermissionDenied.code
    resp = reader.call("query", tag=7, start=0, end=10)
    assert np.frombuffer(resp["values"], "<f8").tolist() == (ts * 2.0).tolist()
    assert reader.call("stats")["ok"] and writer.call("flush")["ok"]
    # A second hello re-authenticates: the reader becomes a writer.
    assert reader.call("hello", versions=[1], token=WRITE_SECRET)["ok"]
    assert reader.call("flush")["ok"]


def test_big_frames_wait_for_authentication(
    server_factory: Callable[..., ServerThread], raw: Raw
) -> None:
    srv = server_factory(tokens=TOKENS, max_frame=4 << 20)
    stranger = raw(srv, timeout=5)
    stranger.send_raw(struct.pack(">I", 1 << 20))  # 1 MiB announced before hello
    assert code(stranger.recv()) == FrameTooLarge.code
    assert stranger.is_closed_by_server()
    member = raw(srv)
    assert member.call("hello", versions=[1], token=WRITE_SECRET)["max_frame"] == 4 << 20
    ts = np.arange(100_000, dtype=np.int64)  # a 1.7 MB frame: fine once authenticated
    member.send(WRITE.build(1, 3, ts, ts * 1.0))
    assert member.recv()["n"] == ts.size


def test_connection_that_never_authenticates_is_closed(
    server_factory: Callable[..., ServerThread], raw: Raw
) -> None:
    srv = server_factory(tokens=TOKENS, frame_timeout=1.0)
    lurker, member = raw(srv, timeout=10), raw(srv, timeout=10)
    assert member.call("hello", versions=[1], token=READ_SECRET)["ok"]
    assert lurker.call("ping")["ok"]
    assert lurker.is_closed_by_server()  # within the 10 s socket timeout
    assert member.call("ping")["ok"]
    assert member.call("stats")["stats"]["server"]["connections_auth_timeout"] == 1


# -- SDK and CLI ---------------------------------------------------------------------------


def test_sync_client_token_keyword_and_url(secured: ServerThread) -> None:
    ts = np.arange(10, dtype=np.int64)
    with Client(url_of(secured), token=WRITE_SECRET) as db:
        assert db.write(5, ts, ts * 0.5) == 10
    with Client(url_of(secured, READ_SECRET)) as db:
        assert db.query(5, 0, 100).values.tolist() == (ts * 0.5).tolist()
        with pytest.raises(PermissionDenied):
            db.write(5, ts, ts)
        assert READ_SECRET not in db.url and READ_SECRET not in repr(db._core)
    with pytest.raises(AuthenticationFailed):
        Client(url_of(secured), token=WRONG_SECRET)
    with pytest.raises(AuthenticationFailed, match="requires a token"):
        Client(url_of(secured))
    with pytest.raises(InvalidInput, match="both in the URL and as token"):
        Client(url_of(secured, READ_SECRET), token=WRITE_SECRET)


async def test_async_client_token(secured: ServerThread) -> None:
    async with await AsyncClient.connect(url_of(secured, WRITE_SECRET)) as db:
        assert await db.write(6, [1, 2], [1.0, 2.0]) == 2
    with pytest.raises(AuthenticationFailed):
        await AsyncClient.connect(url_of(secured), token=WRONG_SECRET)


def test_cli_token_flag_and_environment(
    secured: ServerThread, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("XTSDB_TOKEN", raising=False)
    url = url_of(secured)
    assert cli_main(["--url", url, "ping"]) == 1
    err = capsys.readouterr().err
    assert "requires a token" in err and err.count("\n") == 1
    assert cli_main(["--url", url, "--token", READ_SECRET, "ping"]) == 0
    monkeypatch.setenv("XTSDB_TOKEN", READ_SECRET)
    assert cli_main(["--url", url, "ping"]) == 0
    monkeypatch.setenv("XTSDB_TOKEN", WRONG_SECRET)
    assert cli_main(["--url", url, "last", "1"]) == 1
    monkeypatch.setenv("XTSDB_URL", url_of(secured, WRONG_SECRET))
    monkeypatch.delenv("XTSDB_TOKEN")
    assert cli_main(["--help"]) == 0
    out = capsys.readouterr()
    for secret in ALL_SECRETS:
        assert secret not in out.out + out.err


# -- secrecy ------------------------------------------------------------------------------


def test_tokens_never_appear_in_logs_reprs_or_errors(
    server_factory: Callable[..., ServerThread],
    raw: Raw,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "tokens"
    token_file.write_text(f"write:{WRITE_SECRET}\n")
    os.chmod(token_file, 0o644)  # readable by others: the server warns (naming the file only)
    srv = server_factory(tokens=(f"read:{READ_SECRET}",), token_file=token_file)
    seen: list[str] = [repr(srv.config), str(srv.config)]
    for token in (WRONG_SECRET, READ_SECRET, WRITE_SECRET):
        conn = raw(srv, timeout=5)
        if conn.call("hello", versions=[1], token=token, client=f"client-{token[:5]}")["ok"]:
            conn.call("write", tag=1, ts=b"\x00" * 8, values=b"\x00" * 8)
    for url, kw in ((url_of(srv, WRONG_SECRET), {}), (url_of(srv), {"token": WRONG_SECRET})):
        with pytest.raises(AuthenticationFailed) as info:
            Client(url, **kw)
        seen.append(str(info.value) + repr(info.value))
    with pytest.raises(InvalidInput) as bad_url:
        Client(f"xtsdb://:{WRONG_SECRET}@host/path")
    seen.append(str(bad_url.value))
    with Client(url_of(srv, READ_SECRET)) as db:
        seen += [repr(db._core), db.url]
        try:
            db.write(1, [1], [1.0])
        except PermissionDenied as exc:
            seen.append(str(exc))
    for bad_entry in (f"admin:{WRONG_SECRET}", f"read:{WRONG_SECRET} x"):
        with pytest.raises(ConfigError) as cfg_err:
            ServerConfig.load(["--token", bad_entry], {})
        seen.append(str(cfg_err.value))
    assert "readable by other users" in caplog.text
    assert "authentication failed" in caplog.text
    text = caplog.text + "\n".join(seen)
    for secret in ALL_SECRETS:
        assert secret not in text
