"""The web console on the HTTP port: its page at ``/``, its files, and its JSON API.

- ``GET /``: the page (``console_static/index.html``); ``GET /console/<file>``:
  its CSS and JS, shipped inside the wheel as package data; and
  ``GET /console/plotly-<version>.min.js``: the chart library, read from the
  installed ``plotly`` package (never copied into the repository, no CDN).
  These need no token: they hold no data. The page's own files are answered
  ``Cache-Control: no-cache`` (a browser revalidates, so an upgrade shows at
  once); plotly's name carries its version, so it is cached for a year.
  Every file goes with a strict Content-Security-Policy: scripts and
  connections to this origin only, no inline script, no framing.
- ``GET /api/console/<route>``: :mod:`xtsdb.server.console_api`, with the
  same credentials as ``/query`` (any valid token, when tokens are configured)
  and behind the same :class:`~xtsdb.server.http_gate.DataGate`.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from xtsdb.server import console_api
from xtsdb.server.http_endpoint import HttpReply, Router
from xtsdb.server.http_gate import DataGate
from xtsdb.server.http_request import HttpRequest

STATIC = Path(__file__).with_name("console_static")


def _plotly_js() -> tuple[Path, str]:
    """Where the installed plotly package keeps plotly.min.js, and its version.

    Found without importing plotly (its Python side is large and not needed)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        raise RuntimeError("the plotly package is not installed (a dependency of xtsdb)")
    return Path(spec.origin).parent / "package_data" / "plotly.min.js", importlib.metadata.version(
        "plotly"
    )


PLOTLY_JS, PLOTLY_VERSION = _plotly_js()
PLOTLY_PATH = f"/console/plotly-{PLOTLY_VERSION}.min.js"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
# Plotly injects <style> elements and draws marker symbols as inline SVG styles,
# hence 'unsafe-inline' for styles only; scripts come from this origin alone.
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
REVALIDATE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass
class StaticFile:
    """One file as served: its bytes (read on first use), and gzipped when that pays."""

    path: Path
    content_type: str
    cache: str
    body: bytes | None = None
    gzipped: bytes | None = None

    def load(self) -> None:
        body = self.path.read_bytes()
        if self.path.name == "index.html":
            body = body.replace(b"{{PLOTLY}}", PLOTLY_PATH.encode())
        self.gzipped = gzip.compress(body, 6) if len(body) > 1024 else None
        self.body = body

    def reply(self, accept_encoding: str) -> HttpReply:
        assert self.body is not None
        headers = {**SECURITY, "Cache-Control": self.cache, "Vary": "Accept-Encoding"}
        body = self.body
        if self.gzipped is not None and "gzip" in accept_encoding:
            body = self.gzipped
            headers["Content-Encoding"] = "gzip"
        return HttpReply(200, body, content_type=self.content_type, headers=headers)


def static_files() -> dict[str, StaticFile]:
    """Route path -> file: the page, its assets, and plotly under a versioned name."""
    files = {"/": StaticFile(STATIC / "index.html", TYPES[".html"], REVALIDATE)}
    for path in sorted(STATIC.iterdir()):
        if path.suffix in TYPES and path.name != "index.html":
            files[f"/console/{path.name}"] = StaticFile(path, TYPES[path.suffix], REVALIDATE)
    files[PLOTLY_PATH] = StaticFile(PLOTLY_JS, TYPES[".js"], IMMUTABLE)
    return files


class ConsoleRoutes:
    """The console's page, files and API on a router, the API behind ``gate``."""

    def __init__(self, gate: DataGate) -> None:
        self.gate = gate
        self.files = static_files()
        self._lock = asyncio.Lock()

    def add_to(self, router: Router) -> None:
        for path in self.files:
            router.add("GET HEAD", path, self._static)
        check = self.gate.check("read")
        for name, route in console_api.ROUTES.items():
            handler = self.gate.route(console_api.guarded(route))
            router.add("GET", f"/api/console/{name}", handler, check_head=check)

    async def _static(self, req: HttpRequest) -> HttpReply:
        file = self.files[req.path.rstrip("/") or "/"]
        if file.body is None:
            async with self._lock:  # plotly is 4.8 MB: read and gzip it once, off the loop
                if file.body is None:
                    await asyncio.get_running_loop().run_in_executor(None, file.load)
        return file.reply(req.headers.get("accept-encoding", ""))
