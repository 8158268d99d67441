"""Server settings: one dataclass, loaded from defaults, a TOML file, ``XTSDB_*`` and flags.

Precedence, highest first: command-line flag > environment variable >
TOML file > built-in default. Every field ``name`` has a flag ``--name``
(underscores become dashes), an environment variable ``XTSDB_NAME`` and a
TOML key ``name`` at the top level of the file. The file comes from
``--config PATH`` or ``XTSDB_CONFIG``. With nothing given at all the server
listens on 127.0.0.1:7878 and keeps its data in ``./xtsdb-data``.

This module declares the settings and their checks; reading them from each
source is :mod:`xtsdb.server.config_sources`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from xtsdb.protocol.frames import DEFAULT_MAX_FRAME
from xtsdb.server.auth import TokenConfigError, load_tokens
from xtsdb.server.config_sources import (
    ENV_PREFIX,
    ConfigError,
    format_size,
    load_values,
    parse_size,
)
from xtsdb.server.engine.config import EngineConfig
from xtsdb.server.logs import LOG_FORMATS
from xtsdb.server.tls import TlsConfigError, server_context

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "ServerConfig",
    "format_size",
    "is_loopback",
    "parse_size",
]

DURABILITY_MODES = ("fsync", "none")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MiB = 1024 * 1024
_ENGINE = EngineConfig()
_NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _meta(
    doc: str,
    *,
    size: bool = False,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """A setting's declaration beyond its type and default.

    ``doc`` feeds ``--help`` and docs/configuration.md; ``size``: a byte count
    that accepts suffixes (64KiB); ``lo``..``hi``: the range ``__post_init__``
    checks; ``choices``: the flag's allowed values.
    """
    meta: dict[str, Any] = {"help": doc, "size": size, "lo": lo, "hi": hi}
    if choices is not None:
        meta["choices"] = choices
    return meta


def _byte_count(default: int, doc: str) -> Any:
    """A field counting bytes: at least 1, and suffixes (64KiB) accepted."""
    return field(default=default, metadata=_meta(doc, size=True, lo=1))


REMOVED_SETTINGS = {
    name: f"{name} was removed: one HTTP port serves everything HTTP now; set http_port "
    "(--http-port, XTSDB_HTTP_PORT) instead"
    for name in ("influx_port", "metrics_port")
}
"""Settings that no longer exist, refused from every source with what replaces them."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start; a field with ``repr=False`` is a secret."""

    host: str = field(default="127.0.0.1", metadata=_meta("address to listen on"))
    port: int = field(default=7878, metadata=_meta("TCP port (0: any free port)", lo=0, hi=65535))
    allow_remote: bool = field(
        default=False,
        metadata=_meta(
            "allow a non-loopback --host even without tokens: then anyone who can reach the "
            "port can read and write. Without this flag a non-loopback --host needs --tokens "
            "or --token-file"
        ),
    )
    tokens: tuple[str, ...] = field(
        default=(),
        repr=False,
        metadata=_meta(
            "access tokens, 'read:SECRET' or 'write:SECRET' (16+ characters); repeat the flag "
            "or separate with commas. With any token set, clients must authenticate. Flags "
            "show up in `ps`: prefer --token-file"
        ),
    )
    token_file: Path | None = field(
        default=None, metadata=_meta("file of tokens, one 'role:SECRET' per line ('#' comments)")
    )
    tls_cert: Path | None = field(
        default=None, metadata=_meta("PEM certificate (chain): serve TLS on the port")
    )
    tls_key: Path | None = field(
        default=None, metadata=_meta("PEM private key of --tls-cert, if not in that file")
    )
    tls_client_ca: Path | None = field(
        default=None, metadata=_meta("PEM CA bundle: require client certificates signed by it")
    )
    data_dir: Path = field(
        default=Path("xtsdb-data"),
        metadata=_meta(
            "data directory, created if missing; a relative path is relative to the current "
            "working directory"
        ),
    )
    durability: str = field(
        default="fsync",
        metadata=_meta(
            "fsync: a write is acknowledged only after its WAL batch is fsynced (survives "
            "kill -9 and power loss). none: acknowledged once the WAL write reached the OS, "
            "not fsynced: survives a crash of the server process but acknowledged writes may "
            "be LOST on power loss or a kernel crash",
            choices=DURABILITY_MODES,
        ),
    )
    max_frame: int = _byte_count(DEFAULT_MAX_FRAME, "largest request frame accepted (bytes)")
    max_connections: int = field(default=1024, metadata=_meta("open connections allowed", lo=1))
    max_pending_bytes: int = _byte_count(
        64 * _MiB,
        "per connection: bytes of unanswered requests before the server stops reading that socket",
    )
    max_queue_bytes: int = _byte_count(
        256 * _MiB,
        "bytes of writes waiting for their commit before the server stops reading every socket",
    )
    max_partial_bytes: int = _byte_count(
        256 * _MiB,
        "all connections together (both ports): bytes of requests still being received, "
        "each counted at its announced size from its first bytes; a request that does not "
        "fit is refused (overloaded, or HTTP 503). At least max_frame",
    )
    idle_timeout: float = field(
        default=300.0,
        metadata=_meta("seconds before an idle connection is closed (0: never)", lo=0),
    )
    frame_timeout: float = field(
        default=30.0,
        metadata=_meta(
            "seconds a started frame (or a TLS handshake, or with tokens the authentication) "
            "may take before the connection is closed (0: no limit)",
            lo=0,
        ),
    )
    shutdown_timeout: float = field(
        default=30.0,
        metadata=_meta("seconds a stop waits for in-flight requests before dropping them", lo=0),
    )
    query_threads: int = field(
        default=8, metadata=_meta("threads running queries, last, flush and stats", lo=1)
    )
    log_level: str = field(default="INFO", metadata=_meta("one of " + ", ".join(LOG_LEVELS)))
    log_format: str = field(
        default="auto",
        metadata=_meta(
            "json (one object per line), text, or auto: text on a terminal, json otherwise"
        ),
    )
    slow_query_ms: float = field(
        default=1000.0,
        metadata=_meta("log a WARNING for every request slower than this (0: never)", lo=0),
    )
    # Off by default so two servers on one host (tests, benchmarks, a second
    # instance) never collide on a fixed port; the Docker image turns it on (8086,
    # InfluxDB's port, so InfluxDB clients and Telegraf find it where they expect it).
    http_port: int = field(
        default=-1,
        metadata=_meta(
            "HTTP port on --host for everything HTTP: the InfluxDB API (/write, /query, "
            "/ping), Prometheus remote write and read (/api/v1/write, /api/v1/read), "
            "/metrics, /healthz and /readyz, e.g. 8086; 0: any free port, -1: off",
            lo=-1,
            hi=65535,
        ),
    )
    backup_dir: Path | None = field(
        default=None,
        metadata=_meta(
            "the backup op writes only under this directory (a relative destination is taken "
            "relative to it); unset: the backup op is refused"
        ),
    )
    ready_file: Path | None = field(
        default=None, metadata=_meta("once listening, atomically write 'HOST PORT' to this file")
    )
    auto_create_tags: bool = field(
        default=False,
        metadata=_meta(
            "a write to a tag name the catalog does not know creates that tag (default "
            "metadata) instead of failing with not_found"
        ),
    )
    # -- engine knobs (see xtsdb.server.engine.config.EngineConfig) --
    block_points: int = field(
        default=_ENGINE.block_points, metadata=_meta("points per tag before a block is sealed")
    )
    chunk_size: int = field(
        default=_ENGINE.chunk_size,
        metadata=_meta("chunk size in bytes; fixed when the data directory is created", size=True),
    )
    meta_extents: int = field(
        default=_ENGINE.meta_extents,
        metadata=_meta("16 KiB extents of directory per chunk; fixed at creation"),
    )
    read_workers: int = field(
        default=_ENGINE.read_workers,
        metadata=_meta(
            "deprecated (see workers): 0 decodes every query inline; any other value lets "
            "large queries use the worker processes",
            lo=0,
        ),
    )
    wal_segment_bytes: int = _byte_count(
        _ENGINE.wal_segment_bytes, "WAL segment size before rotation"
    )
    wal_checkpoint_bytes: int = _byte_count(
        _ENGINE.wal_checkpoint_bytes,
        "WAL size that forces every buffered point into blocks + checkpoint",
    )
    max_memory_points: int = field(
        default=_ENGINE.max_memory_points,
        metadata=_meta(
            "points held in memory before they are sealed into blocks; writers wait beyond it. "
            "About 21 bytes each: the largest term of the server's memory (docs/operations.md, "
            "Memory)",
            lo=1,
        ),
    )
    retention_us: int = field(
        default=_ENGINE.retention_us,
        metadata=_meta(
            "keep data this many microseconds (0: forever); whole chunks are retired once "
            "their newest point is older (docs/historian.md)",
            lo=0,
        ),
    )

    # -- cluster mode (docs/cluster.md); without `cluster` none of these matter --
    cluster: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "cluster mode: nats:// URLs of the NATS JetStream servers, comma-separated; "
            "unset: a single node, NATS is never used"
        )
        | {"metavar": "URLS"},
    )
    node_id: str = field(
        default="", metadata=_meta("this node's name in the cluster (letters, digits, - and _)")
    )
    replication: int = field(
        default=2, metadata=_meta("xtsdb nodes materialising each shard", lo=1, hi=16)
    )
    shards: int = field(
        default=64,
        metadata=_meta("shards of the write log; fixed when the cluster is created", lo=1, hi=4096),
    )
    nats_creds: Path | None = field(
        default=None, metadata=_meta("NATS credentials file (.creds) for the cluster connection")
    )
    nats_tls_ca: Path | None = field(
        default=None, metadata=_meta("PEM CA bundle: connect to NATS over TLS verified by it")
    )
    stream_max_age: float = field(
        default=86400.0,
        metadata=_meta(
            "seconds the write log keeps a frame; a node down longer must be rebuilt", lo=60
        ),
    )
    heartbeat: float = field(
        default=3.0,
        metadata=_meta(
            "seconds between membership heartbeats; a node silent for 3 of them and a "
            "second more is dead",
            lo=0.2,
            hi=60,
        ),
    )
    peer_token: str = field(
        default="",
        repr=False,
        metadata=_meta(
            "cluster mode with tokens: a token the other nodes accept (read role), used for "
            "the reads this node forwards to them"
        ),
    )

    # -- worker processes (docs/configuration.md, Workers) --
    workers: int = field(
        default=_ENGINE.workers,
        metadata=_meta(
            "processes that encode blocks when buffers are sealed and decode large queries; "
            "-1: one per core this process may use; 0: all of it inline in the server",
            lo=-1,
        ),
    )
    arena_max_bytes: int = _byte_count(
        _ENGINE.arena_max_bytes,
        "cap of each of a worker's two shared-memory arenas; bigger jobs run inline",
    )
    seal_pool_min_points: int = field(
        default=_ENGINE.seal_pool_min_points,
        metadata=_meta(
            "seal rounds of fewer points encode inline (the pool's round trip costs more); "
            "measured by python -m bench.engine --workers",
            lo=0,
        ),
    )

    # -- compaction (docs/storage-format.md, Compaction) --
    no_compaction: bool = field(
        default=not _ENGINE.compaction,
        metadata=_meta(
            "do not merge overlapping or small blocks, nor apply deletes, in the background"
        ),
    )
    compaction_rate: int = field(
        default=_ENGINE.compaction_rate,
        metadata=_meta("points compaction rewrites per second at most (0: no pause)", lo=0),
    )

    def __post_init__(self) -> None:
        if self.durability not in DURABILITY_MODES:
            raise ConfigError(
                f"durability must be one of {DURABILITY_MODES}, not {self.durability!r}"
            )
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {LOG_LEVELS}, not {self.log_level!r}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {LOG_FORMATS}, not {self.log_format!r}")
        for f in fields(self):
            _check_range(f.name, getattr(self, f.name), f.metadata.get("lo"), f.metadata.get("hi"))
        if self.max_partial_bytes < self.max_frame:
            raise ConfigError(
                f"max_partial_bytes ({self.max_partial_bytes}) must be at least max_frame "
                f"({self.max_frame}): a request of max_frame bytes could never be received"
            )
        try:
            has_tokens = bool(load_tokens(self.tokens, self.token_file))
            server_context(self.tls_cert, self.tls_key, self.tls_client_ca)
        except (TokenConfigError, TlsConfigError) as exc:
            raise ConfigError(str(exc)) from None
        if not self.allow_remote and not has_tokens and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to listen on non-loopback host {self.host!r} without "
                "authentication: anyone who can reach the port could read and write. "
                "Configure tokens (--tokens / --token-file, XTSDB_TOKENS), or pass "
                "--allow-remote (XTSDB_ALLOW_REMOTE=1) to accept anyone"
            )
        if self.cluster and not _NODE_ID.fullmatch(self.node_id):
            raise ConfigError(
                "cluster mode needs --node-id (XTSDB_NODE_ID): 1-64 letters, digits, - or _"
            )
        bad = [u for u in self.cluster if not u.startswith(("nats://", "tls://"))]
        if bad:
            raise ConfigError(f"cluster URLs must start with nats:// or tls://, not {bad[0]!r}")
        try:
            self.engine_config()
        except ValueError as exc:
            raise ConfigError(f"engine settings: {exc}") from None

    @property
    def sync(self) -> bool:
        """Whether a write's acknowledgement waits for its fsync."""
        return self.durability == "fsync"

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            chunk_size=self.chunk_size,
            meta_extents=self.meta_extents,
            block_points=self.block_points,
            read_workers=self.read_workers,
            workers=self.workers,
            arena_max_bytes=self.arena_max_bytes,
            seal_pool_min_points=self.seal_pool_min_points,
            fsync=self.sync,
            wal_segment_bytes=self.wal_segment_bytes,
            wal_checkpoint_bytes=self.wal_checkpoint_bytes,
            retention_us=self.retention_us,
            max_memory_points=self.max_memory_points,
            compaction=not self.no_compaction,
            compaction_rate=self.compaction_rate,
        )

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> ServerConfig:
        """Defaults < TOML file < ``XTSDB_*`` environment < flags in ``argv``.

        ``environ`` defaults to an empty mapping, not ``os.environ``, so a
        caller (``main``) decides explicitly which environment applies.
        """
        environ = environ if environ is not None else {}
        values = load_values(cls, argv or (), environ, removed=REMOVED_SETTINGS)
        try:
            return cls(**values)
        except TypeError as exc:  # pragma: no cover - every field has a default
            raise ConfigError(str(exc)) from None


def _check_range(name: str, value: float, lo: float | None, hi: float | None) -> None:
    if hi is not None and lo is not None and not lo <= value <= hi:
        raise ConfigError(f"{name} must be in {lo}..{hi}, not {value}")
    if lo is not None and value < lo:
        raise ConfigError(f"{name} must be >= {lo}, not {value}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything, so it needs --allow-remote
