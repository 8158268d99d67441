"""Several servers behind one client: parsing them and the order to try them in.

A cluster is reached through any of its nodes, so a client may be given
several: ``xtsdb://h1:7878,h2:7878,h3:7878`` (one scheme and token for all), or
a list of URLs. :class:`Hosts` keeps them and the one in use: the first
connection tries them as given (or shuffled, to spread many clients over the
nodes); after a lost connection the others come first, from the next one on,
and the lost one last (it may have come back). Sans-I/O: the transports try
the addresses; this module only says in which order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from xtsdb.protocol.errors import InvalidInput

DEFAULT_PORT = 7878


_USERINFO = re.compile(r"(?<=://)[^@/?#]*@")


def redact(url: str) -> str:
    """``url`` with any ``user:token@`` part replaced by ``***@``: safe to print."""
    return _USERINFO.sub("***@", url)


@dataclass(frozen=True)
class Target:
    """Where and how to connect: what a URL says."""

    host: str
    port: int
    tls: bool
    url: str  # redacted
    token: str | None = field(default=None, repr=False)


def parse_target(url: str) -> Target:
    """``xtsdb://[:TOKEN@]host[:port]`` (``xtsdbs://`` for TLS); :class:`InvalidInput` otherwise."""
    shown = redact(url)  # never echo a token, not even in an error about the URL
    parts = urlsplit(url)
    if parts.scheme not in ("xtsdb", "xtsdbs"):
        raise InvalidInput(f"{shown!r}: the URL must look like xtsdb[s]://host:port")
    token = None
    if parts.username or parts.password is not None:
        if parts.username:
            raise InvalidInput(f"{shown!r}: put the token after a colon: xtsdb://:TOKEN@host:port")
        token = unquote(parts.password or "") or None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidInput(f"{shown!r}: an xtsdb URL has no path, query or fragment")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"{shown!r}: {exc}") from None
    if not parts.hostname:
        raise InvalidInput(f"{shown!r}: no host")
    port = DEFAULT_PORT if port is None else port
    return Target(parts.hostname, port, parts.scheme == "xtsdbs", shown, token)


def parse_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of an xtsdb URL (see :func:`parse_target`)."""
    target = parse_target(url)
    return target.host, target.port


def split_hosts(url: str) -> list[str]:
    """``xtsdb://[:TOKEN@]h1:p1,h2:p2`` -> one URL per host, each with the scheme and
    token; a URL with one host is returned as is."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return [url]  # parse_target explains what a URL must look like
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if "," not in hosts:
        return [url]
    parts = hosts.split(",")
    if any(not p.strip() for p in parts):
        raise InvalidInput(f"{redact(url)!r}: an empty host in the list")
    return [f"{scheme}://{userinfo}{at}{p.strip()}{slash}{tail}" for p in parts]


def parse_targets(url: str | Sequence[str]) -> list[Target]:
    """Every server a client may use, checked: one scheme and one token for all."""
    urls = [u for one in ([url] if isinstance(url, str) else url) for u in split_hosts(one)]
    if not urls:
        raise InvalidInput("no server URL given")
    targets = [parse_target(u) for u in urls]
    if len({t.tls for t in targets}) > 1:
        raise InvalidInput("mixed xtsdb:// and xtsdbs:// URLs: use one scheme for every host")
    if len({t.token for t in targets}) > 1:
        raise InvalidInput("different tokens in the URLs: a client has one token")
    if len({(t.host, t.port) for t in targets}) < len(targets):
        raise InvalidInput("a host is listed twice")
    return targets


class Hosts:
    """The servers and which one is in use."""

    def __init__(self, targets: list[Target], shuffle: bool = False) -> None:
        self.targets = list(targets)
        if shuffle:
            random.shuffle(self.targets)
        self.current = 0
        self.connected = False  # once one connection was made, reconnecting fails over

    @property
    def target(self) -> Target:
        return self.targets[self.current]

    def order(self) -> list[int]:
        """The indexes to try now: from the first before any connection; then from the
        one after the current, the current last."""
        n = len(self.targets)
        start = self.current + 1 if self.connected else 0
        return [(start + k) % n for k in range(n)]

    def use(self, index: int) -> None:
        """Record a connection made to ``targets[index]``."""
        self.current, self.connected = index, True

    def describe(self) -> str:
        """The servers for a message (tokens redacted): ``h1:7878, h2:7878``."""
        return ", ".join(f"{t.host}:{t.port}" for t in self.targets)
