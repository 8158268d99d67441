"""TLS for the TCP port, with the standard :mod:`ssl` module.

``tls_cert`` (+ ``tls_key`` unless the key is in the same PEM file) turns TLS on;
``tls_client_ca`` additionally requires every client to present a certificate
signed by that CA (``CERT_REQUIRED``). TLS 1.2 is the minimum.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file."""


def server_context(
    cert: Path | None, key: Path | None = None, client_ca: Path | None = None
) -> ssl.SSLContext | None:
    """The server's context, or ``None`` when ``cert`` is not set (plain TCP)."""
    if cert is None:
        if key is not None or client_ca is not None:
            raise TlsConfigError("tls_key and tls_client_ca need tls_cert as well")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load tls_cert {cert} / tls_key {key}: {exc}") from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"cannot load tls_client_ca {client_ca}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
