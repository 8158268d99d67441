"""TLS for the clients: the context both use, and the blocking client's TLS socket.

:func:`client_context` turns ``tls=`` / ``ca=`` / ``cert=`` / ``key=`` into an
:class:`ssl.SSLContext` that verifies the server's certificate and host name
(against ``ca`` when given, else the system's trust store).

:class:`TlsSocket` exists because the blocking client reads in one thread
while other threads send, and OpenSSL does not allow one ``SSL`` object to be
used from two threads at once (``ssl.SSLSocket`` would do exactly that). Here
the TLS state machine works on memory buffers under a lock, and only the raw
socket is touched outside it: the reader never holds the lock while it waits
for bytes, and a sender never waits for the reader.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from xtsdb.protocol.errors import InvalidInput, XtsdbConnectionError, XtsdbTimeout

TLS_READ = 1 << 16

PathLike = str | Path


def client_context(
    tls: bool | ssl.SSLContext | None,
    scheme_tls: bool,
    ca: PathLike | None = None,
    cert: PathLike | None = None,
    key: PathLike | None = None,
) -> ssl.SSLContext | None:
    """The context for a connection, or ``None`` for plain TCP.

    TLS is on with an ``xtsdbs://`` URL, ``tls=True`` or an ``SSLContext``, or
    when ``ca``/``cert`` is given; ``tls=False`` with any of those is refused
    rather than silently sending in clear text.
    """
    wanted = scheme_tls or ca is not None or cert is not None
    if tls is False:
        if wanted:
            raise InvalidInput("tls=False conflicts with xtsdbs:// or ca=/cert=")
        return None
    if isinstance(tls, ssl.SSLContext):
        if ca is not None or cert is not None or key is not None:
            raise InvalidInput("pass ca=/cert=/key= or an SSLContext as tls=, not both")
        return tls
    if not (tls or wanted):
        if key is not None:
            raise InvalidInput("key= needs cert=")
        return None
    if key is not None and cert is None:
        raise InvalidInput("key= needs cert=")
    try:
        ctx = ssl.create_default_context(cafile=None if ca is None else str(ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None:
            ctx.load_cert_chain(str(cert), None if key is None else str(key))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"cannot load TLS files (ca={ca}, cert={cert}): {exc}") from exc
    return ctx


class TlsSocket:
    """A TLS connection over a connected blocking socket: ``sendall``/``recv`` like a socket.

    One thread may ``recv`` while others ``sendall`` (callers serialise their
    sends, as they would on a plain socket).
    """

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, server_hostname: str) -> None:
        self._sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = ctx.wrap_bio(self._in, self._out, server_hostname=server_hostname)
        self._tls_lock = threading.Lock()  # the SSLObject and both buffers
        self._send_lock = threading.Lock()  # TLS records leave in the order they were made

    @classmethod
    def connect(cls, sock: socket.socket, ctx: ssl.SSLContext, host: str, url: str) -> TlsSocket:
        """Wrap ``sock`` and complete the handshake (bounded by the socket's timeout).

        Closes ``sock`` and raises :class:`XtsdbConnectionError` (or :class:`XtsdbTimeout`)
        if the handshake fails; ``url`` (redacted) is for the message.
        """
        try:
            return cls(sock, ctx, host)._handshake()
        except TimeoutError:
            sock.close()
            raise XtsdbTimeout(f"TLS handshake with {url} timed out") from None
        except OSError as exc:  # ssl.SSLError included: a bad certificate, a plain-TCP server
            sock.close()
            raise XtsdbConnectionError(f"TLS handshake with {url} failed: {exc}") from exc

    def _handshake(self) -> TlsSocket:
        while True:
            try:
                with self._tls_lock:
                    self._tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            with self._send_lock:
                self._flush()
            if done:
                return self
            data = self._sock.recv(TLS_READ)
            if not data:
                raise ConnectionResetError("the server closed the connection in the TLS handshake")
            with self._tls_lock:
                self._in.write(data)

    def _flush(self) -> None:
        # Caller holds _send_lock.
        with self._tls_lock:
            data = self._out.read()
        if data:
            self._sock.sendall(data)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        with self._send_lock:
            with self._tls_lock:
                self._tls.write(data)
                out = self._out.read()
            self._sock.sendall(out)

    def recv(self, bufsize: int) -> bytes:
        """Decrypted bytes; ``b""`` at the end of the stream."""
        while True:
            with self._tls_lock:
                try:
                    data: bytes | None = self._tls.read(bufsize)
                except ssl.SSLWantReadError:
                    data = None
                except ssl.SSLZeroReturnError:  # the peer's close_notify
                    return b""
                reply = self._out.pending > 0  # e.g. an answer to a TLS 1.3 key update
            if reply and self._send_lock.acquire(blocking=False):
                # If a sender holds the lock, it sends these bytes with its own.
                try:
                    self._flush()
                finally:
                    self._send_lock.release()
            if data is not None:
                return data
            raw = self._sock.recv(TLS_READ)
            if not raw:
                return b""  # EOF without close_notify: a cut frame is caught by the framing
            with self._tls_lock:
                self._in.write(raw)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()
