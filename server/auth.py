"""Token authentication: who may connect, and which ops each role may run.

A token is configured as ``"role:secret"``; the role is ``read`` (the ops in
:data:`READ_OPS`: reading points, analytics and the catalog) or ``write`` (every
op: also ``write``, ``flush``, ``backup``, deletes, catalog changes). With no
token configured the server is open, as before; with at least one, a
connection must send a valid ``token`` in ``hello`` before any op but ``hello``
and ``ping`` (see :data:`OPEN_OPS`). :class:`PeerAuth` is one connection's
state; the connection passes it to ``Service.dispatch``, which calls
:func:`check_op` for every request and :meth:`Authenticator.authenticate` for
``hello``.

Secrets never leave this module in a readable form: :class:`Token` keeps only
a SHA-256 digest (so every comparison is between 32-byte strings, and
``hmac.compare_digest`` leaks neither content nor length), error messages
name an entry by its position, never by its text, and nothing here logs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xtsdb.protocol.errors import AuthenticationFailed, PermissionDenied
from xtsdb.protocol.optable import OPEN_OPS as OPEN_OPS
from xtsdb.protocol.optable import READ_OPS as READ_OPS

ROLES = ("read", "write")
"""In increasing order of power: a ``write`` token may do everything a ``read`` one may."""

# Which op needs which role is declared with the op (xtsdb.protocol.optable):
# OPEN_OPS are answered before authentication -- ``ping`` on purpose: liveness
# probes speak it without secrets, and it reveals nothing that accepting the TCP
# connection has not already revealed; READ_OPS may run with any valid token;
# every other op needs the ``write`` role, so an op is closed to read tokens
# unless its declaration says otherwise (fail closed).

MIN_SECRET_LEN = 16
"""Shorter secrets are refused at start-up: an attacker may try one per connection."""

PREAUTH_MAX_FRAME = 64 * 1024
"""Largest frame a connection may send before it authenticates (``hello`` and
``ping`` are tiny), so a stranger cannot make the server buffer ``max_frame``
bytes per connection."""


class TokenConfigError(ValueError):
    """A token entry or the token file is malformed; the message never quotes a secret."""


@dataclass(frozen=True)
class Token:
    role: str
    digest: bytes = field(repr=False)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def parse_entry(entry: str, where: str) -> Token:
    """``"role:secret"`` as a :class:`Token`; ``where`` names the entry in errors."""
    role, sep, secret = entry.strip().partition(":")
    if not sep:
        raise TokenConfigError(f"{where}: expected 'read:SECRET' or 'write:SECRET'")
    if role not in ROLES:
        raise TokenConfigError(f"{where}: the role must be one of {ROLES}")
    if len(secret) < MIN_SECRET_LEN:
        raise TokenConfigError(
            f"{where}: the secret is shorter than {MIN_SECRET_LEN} characters "
            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if any(c.isspace() or c == "," or not c.isprintable() for c in secret):
        raise TokenConfigError(f"{where}: the secret may not hold whitespace or commas")
    return Token(role, _digest(secret))


def read_token_file(path: Path) -> list[str]:
    """The entries of a token file: one ``role:secret`` per line, ``#`` comments, blank lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise TokenConfigError(f"cannot read token file {path}: {reason or exc}") from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def token_file_is_private(path: Path) -> bool:
    """False if the group or others may read the file (worth a warning, like ssh's keys)."""
    try:
        return not os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    except OSError:
        return True  # reading it failed or will fail with a clearer message


def load_tokens(entries: Sequence[str], token_file: Path | None) -> list[Token]:
    """Every configured token: ``entries`` (from flags, env or TOML) and the file's lines."""
    tokens = [parse_entry(e, f"tokens entry {i + 1}") for i, e in enumerate(entries)]
    if token_file is not None:
        lines = read_token_file(token_file)
        if not lines:
            raise TokenConfigError(f"token file {token_file} holds no tokens")
        tokens += [parse_entry(e, f"{token_file} entry {i + 1}") for i, e in enumerate(lines)]
    return tokens


class Authenticator:
    """The configured tokens; :meth:`authenticate` turns a presented secret into a role."""

    def __init__(self, tokens: Iterable[Token]) -> None:
        self._tokens = list(tokens)
        if not self._tokens:
            raise ValueError("an Authenticator needs at least one token")

    def __repr__(self) -> str:
        return f"Authenticator({len(self._tokens)} tokens)"

    def counts(self) -> dict[str, int]:
        return {role: sum(t.role == role for t in self._tokens) for role in ROLES}

    def authenticate(self, presented: str | None) -> str:
        """The role of ``presented``; :class:`AuthenticationFailed` if it matches no token."""
        if presented is None:
            raise AuthenticationFailed("this server requires a token in hello")
        digest = _digest(presented)
        best = -1
        # Every token is compared, match or not, so timing says nothing about which matched.
        for t in self._tokens:
            if hmac.compare_digest(t.digest, digest):
                best = max(best, ROLES.index(t.role))
        if best < 0:
            raise AuthenticationFailed("invalid token")
        return ROLES[best]


@dataclass
class PeerAuth:
    """One connection's authentication state."""

    role: str | None = None
    hang_up: bool = False  # a failed hello: answer it, then close the connection


def check_op(auth: Authenticator | None, peer: PeerAuth, op: str) -> None:
    """Raise unless ``peer`` may run ``op`` (``hello`` is checked by :meth:`authenticate`)."""
    if auth is None or op in OPEN_OPS:
        return
    if peer.role is None:
        raise AuthenticationFailed(f"authenticate with hello (and a token) before {op!r}")
    if op not in READ_OPS and peer.role != "write":
        raise PermissionDenied(f"{op!r} needs a token with the write role")
