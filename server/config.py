"""Server settings: one dataclass, loaded from defaults, a TOML file, ``XTSDB_*`` and flags.

Precedence, highest first: command-line flag > environment variable >
TOML file > built-in default. Every field ``name`` has a flag ``--name``
(underscores become dashes), an environment variable ``XTSDB_NAME`` and a
TOML key ``name`` at the top level of the file. The file comes from
``--config PATH`` or ``XTSDB_CONFIG``. With nothing given at all the server
listens on 127.0.0.1:7878 and keeps its data in ``./xtsdb-data``.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from xtsdb.protocol.frames import DEFAULT_MAX_FRAME
from xtsdb.server.auth import TokenConfigError, load_tokens
from xtsdb.server.engine.config import EngineConfig
from xtsdb.server.logs import LOG_FORMATS
from xtsdb.server.tls import TlsConfigError, server_context

ENV_PREFIX = "XTSDB_"
DURABILITY_MODES = ("fsync", "none")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MiB = 1024 * 1024
_ENGINE = EngineConfig()


class ConfigError(ValueError):
    """A setting is missing, malformed or not allowed; the message names it and its source."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start; ``metadata["help"]`` feeds ``--help``."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=7878, metadata={"help": "TCP port (0: any free port)"})
    allow_remote: bool = field(
        default=False,
        metadata={
            "help": "allow a non-loopback --host even without tokens: then anyone who can "
            "reach the port can read and write. Without this flag a non-loopback --host "
            "needs --tokens or --token-file"
        },
    )
    tokens: tuple[str, ...] = field(
        default=(),
        repr=False,  # secrets: never in a repr or a log line
        metadata={
            "help": "access tokens, 'read:SECRET' or 'write:SECRET' (16+ characters); "
            "repeat the flag or separate with commas. With any token set, clients must "
            "authenticate. Flags show up in `ps`: prefer --token-file"
        },
    )
    token_file: Path | None = field(
        default=None,
        metadata={"help": "file of tokens, one 'role:SECRET' per line ('#' comments)"},
    )
    tls_cert: Path | None = field(
        default=None, metadata={"help": "PEM certificate (chain): serve TLS on the port"}
    )
    tls_key: Path | None = field(
        default=None, metadata={"help": "PEM private key of --tls-cert, if not in that file"}
    )
    tls_client_ca: Path | None = field(
        default=None,
        metadata={"help": "PEM CA bundle: require client certificates signed by it"},
    )
    data_dir: Path = field(
        default=Path("xtsdb-data"),
        metadata={
            "help": "data directory, created if missing; a relative path is relative to "
            "the current working directory"
        },
    )
    durability: str = field(
        default="fsync",
        metadata={
            "help": "fsync: a write is acknowledged only after its WAL batch is fsynced "
            "(survives kill -9 and power loss). none: acknowledged once the WAL write "
            "reached the OS, not fsynced: survives a crash of the server process but "
            "acknowledged writes may be LOST on power loss or a kernel crash"
        },
    )
    max_frame: int = field(
        default=DEFAULT_MAX_FRAME, metadata={"help": "largest request frame accepted (bytes)"}
    )
    max_connections: int = field(default=1024, metadata={"help": "open connections allowed"})
    max_pending_bytes: int = field(
        default=64 * _MiB,
        metadata={
            "help": "per connection: bytes of unanswered requests before the server "
            "stops reading that socket"
        },
    )
    max_queue_bytes: int = field(
        default=256 * _MiB,
        metadata={
            "help": "bytes of writes waiting for their commit before the server "
            "stops reading every socket"
        },
    )
    max_partial_bytes: int = field(
        default=256 * _MiB,
        metadata={
            "help": "all connections together (both ports): bytes of requests still "
            "being received, each counted at its announced size from its first bytes; "
            "a request that does not fit is refused (overloaded, or HTTP 503). At "
            "least max_frame"
        },
    )
    idle_timeout: float = field(
        default=300.0, metadata={"help": "seconds before an idle connection is closed (0: never)"}
    )
    frame_timeout: float = field(
        default=30.0,
        metadata={
            "help": "seconds a started frame (or a TLS handshake, or with tokens the "
            "authentication) may take before the connection is closed (0: no limit)"
        },
    )
    shutdown_timeout: float = field(
        default=30.0,
        metadata={"help": "seconds a stop waits for in-flight requests before dropping them"},
    )
    query_threads: int = field(
        default=8, metadata={"help": "threads running queries, last, flush and stats"}
    )
    log_level: str = field(default="INFO", metadata={"help": "one of " + ", ".join(LOG_LEVELS)})
    log_format: str = field(
        default="auto",
        metadata={"help": "json (one object per line), text, or auto: text on a terminal, "
                  "json otherwise"},
    )  # fmt: skip
    slow_query_ms: float = field(
        default=1000.0,
        metadata={"help": "log a WARNING for every request slower than this (0: never)"},
    )
    # Off by default so two servers on one host (tests, benchmarks, a second
    # instance) never collide on a fixed port; the Docker image turns it on (9787).
    metrics_port: int = field(
        default=-1,
        metadata={"help": "HTTP port on --host for /metrics (Prometheus), /healthz and "
                  "/readyz, e.g. 9787; 0: any free port, -1: no endpoint"},
    )  # fmt: skip
    # Off by default for the same reason; 8086 is InfluxDB's port (docs/ingest.md).
    influx_port: int = field(
        default=-1,
        metadata={"help": "HTTP port on --host for InfluxDB line protocol writes (/write, "
                  "/ping, /query; Telegraf's outputs.influxdb), e.g. 8086; 0: any free "
                  "port, -1: off. Unknown series become new tags"},
    )  # fmt: skip
    backup_dir: Path | None = field(
        default=None,
        metadata={"help": "the backup op writes only under this directory (a relative "
                  "destination is taken relative to it); unset: the backup op is refused"},
    )  # fmt: skip
    ready_file: Path | None = field(
        default=None,
        metadata={"help": "once listening, atomically write 'HOST PORT' to this file"},
    )
    auto_create_tags: bool = field(
        default=False,
        metadata={"help": "a write to a tag name the catalog does not know creates that "
                  "tag (default metadata) instead of failing with not_found"},
    )  # fmt: skip
    # -- engine knobs (see xtsdb.server.engine.config.EngineConfig) --
    block_points: int = field(
        default=_ENGINE.block_points, metadata={"help": "points per tag before a block is sealed"}
    )
    chunk_size: int = field(
        default=_ENGINE.chunk_size,
        metadata={"help": "chunk size in bytes; fixed when the data directory is created"},
    )
    meta_extents: int = field(
        default=_ENGINE.meta_extents,
        metadata={"help": "16 KiB extents of directory per chunk; fixed at creation"},
    )
    read_workers: int = field(
        default=_ENGINE.read_workers, metadata={"help": "processes decoding large queries"}
    )
    wal_segment_bytes: int = field(
        default=_ENGINE.wal_segment_bytes, metadata={"help": "WAL segment size before rotation"}
    )
    wal_checkpoint_bytes: int = field(
        default=_ENGINE.wal_checkpoint_bytes,
        metadata={"help": "WAL size that forces every buffered point into blocks + checkpoint"},
    )
    max_memory_points: int = field(
        default=_ENGINE.max_memory_points,
        metadata={
            "help": "points held in memory before they are sealed into blocks; writers "
            "wait beyond it. About 21 bytes each: the largest term of the server's "
            "memory (docs/operations.md, Memory)"
        },
    )
    retention_us: int = field(
        default=_ENGINE.retention_us,
        metadata={"help": "keep data this many microseconds (0: forever); whole chunks are "
                  "retired once their newest point is older (docs/historian.md)"},
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.durability not in DURABILITY_MODES:
            raise ConfigError(
                f"durability must be one of {DURABILITY_MODES}, not {self.durability!r}"
            )
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {LOG_LEVELS}, not {self.log_level!r}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {LOG_FORMATS}, not {self.log_format!r}")
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be in -1..65535, not {self.metrics_port}")
        if not -1 <= self.influx_port <= 65535:
            raise ConfigError(f"influx_port must be in -1..65535, not {self.influx_port}")
        if self.retention_us < 0:
            raise ConfigError(f"retention_us must be >= 0, not {self.retention_us}")
        if self.slow_query_ms < 0:
            raise ConfigError(f"slow_query_ms must be >= 0, not {self.slow_query_ms}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, not {self.port}")
        for name in (
            "max_frame",
            "max_connections",
            "max_pending_bytes",
            "max_queue_bytes",
            "max_partial_bytes",
            "query_threads",
            "read_workers",
            "wal_segment_bytes",
            "wal_checkpoint_bytes",
            "max_memory_points",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.max_partial_bytes < self.max_frame:
            raise ConfigError(
                f"max_partial_bytes ({self.max_partial_bytes}) must be at least max_frame "
                f"({self.max_frame}): a request of max_frame bytes could never be received"
            )
        for name in ("idle_timeout", "shutdown_timeout", "frame_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)}")
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
            fsync=self.sync,
            wal_segment_bytes=self.wal_segment_bytes,
            wal_checkpoint_bytes=self.wal_checkpoint_bytes,
            retention_us=self.retention_us,
            max_memory_points=self.max_memory_points,
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
        args = vars(build_parser().parse_args(list(argv) if argv is not None else []))
        values: dict[str, Any] = {}
        config_path = args.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG")
        if config_path:
            values.update(_from_toml(Path(config_path)))
        for f in fields(cls):
            env_name = ENV_PREFIX + f.name.upper()
            if env_name in environ:
                values[f.name] = _convert(f, environ[env_name], env_name)
        for name, raw in args.items():
            # argparse already converted it; repeated list flags arrive as a list
            values[name] = _split_list(raw) if isinstance(raw, list) else raw
        try:
            return cls(**values)
        except TypeError as exc:  # pragma: no cover - every field has a default
            raise ConfigError(str(exc)) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything, so it needs --allow-remote


_SIZE_FIELDS = frozenset(
    {"max_frame", "max_pending_bytes", "max_queue_bytes", "max_partial_bytes", "chunk_size"}
    | {"wal_segment_bytes", "wal_checkpoint_bytes"}
)
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"65536"``, ``"64KiB"``, ``"64MiB"``, ``"1G"``: powers of 1024 either way."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"not a size: {text!r} (examples: 65536, 64KiB, 256MiB)")
    unit = (m.group(2) or "b")[0].lower()
    return int(m.group(1)) << (10 * "bkmgt".index(unit))


def format_size(n: int) -> str:
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def _kind(f: dataclasses.Field[Any]) -> str:
    # Annotations are strings under `from __future__ import annotations`.
    t = str(f.type)
    if t == "bool":
        return "bool"
    if t.startswith("tuple"):
        return "list"
    if t == "int":
        return "size" if f.name in _SIZE_FIELDS else "int"
    if t == "float":
        return "float"
    if "Path" in t:
        return "path"
    return "str"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _convert(f: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    """``raw`` (a string from the environment, or a TOML value) as ``f``'s type."""
    kind = _kind(f)
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text not in _TRUE | _FALSE:
                raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")
            return text in _TRUE
        if isinstance(raw, bool):
            raise ValueError("expected a value, not a boolean")
        if kind == "list":
            return _split_list(raw)
        if kind == "size":
            return raw if isinstance(raw, int) else parse_size(str(raw))
        if kind == "int":
            return raw if isinstance(raw, int) else int(str(raw).strip())
        if kind == "float":
            return float(raw)
        if kind == "path":
            return Path(str(raw)) if str(raw) else None
        if not isinstance(raw, str):
            raise ValueError("expected a string")
        return raw
    except ValueError as exc:
        shown = "(hidden)" if not f.repr else repr(raw)  # repr=False marks secrets
        raise ConfigError(f"{source}: bad value {shown} for {f.name}: {exc}") from None


def _split_list(raw: Any) -> tuple[str, ...]:
    """A TOML array of strings, or comma-separated text (environment, flags)."""
    items = raw if isinstance(raw, list | tuple) else [raw]
    if not all(isinstance(item, str) for item in items):
        raise ValueError("expected strings")  # no values in the message: they may be secrets
    return tuple(part.strip() for item in items for part in item.split(",") if part.strip())


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    known = {f.name: f for f in fields(ServerConfig)}
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise ConfigError(f"config file {path}: unknown keys {unknown}; known: {sorted(known)}")
    return {k: _convert(known[k], v, f"config file {path}") for k, v in doc.items()}


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "size": parse_size,
    "int": int,
    "float": float,
    "path": Path,
    "str": str,
}
_METAVARS = {"size": "BYTES", "float": "SECONDS", "path": "PATH"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xtsdb-server",
        description="xtsdb time-series database server. With no arguments it listens on "
        "127.0.0.1:7878 and keeps its data in ./xtsdb-data (relative to the current "
        "working directory).",
        epilog="Every option NAME can also be set with the environment variable XTSDB_NAME "
        "(e.g. XTSDB_DATA_DIR, XTSDB_ALLOW_REMOTE=1) or as a top-level key in the TOML "
        "file given by --config / XTSDB_CONFIG. Precedence: flag > environment > file > "
        "default. Sizes accept suffixes: 64KiB, 256MiB, 1GiB.",
        # Unset flags must stay absent so the environment and the file can apply.
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", metavar="PATH", help="TOML config file (env XTSDB_CONFIG)")
    defaults = ServerConfig.__dataclass_fields__
    for f in fields(ServerConfig):
        flag = "--" + f.name.replace("_", "-")
        default = defaults[f.name].default
        help_text = f"{f.metadata.get('help', '')} (env {ENV_PREFIX}{f.name.upper()}"
        kind = _kind(f)
        if kind == "size" and isinstance(default, int):
            default = format_size(default)
        elif f.name == "data_dir":
            default = f"./{default}"
        help_text += ")" if default in (None, ()) or kind == "bool" else f"; default {default})"
        if kind == "bool":
            p.add_argument(flag, action="store_true", help=help_text)
            continue
        if kind == "list":
            # --token reads better when repeated; both spellings append to one list.
            p.add_argument(flag, flag[:-1], dest=f.name, action="append", metavar="ROLE:SECRET",
                           help=help_text)  # fmt: skip
            continue
        convert = _CONVERTERS[kind]
        choices = DURABILITY_MODES if f.name == "durability" else None
        metavar = None if choices else _METAVARS.get(kind, f.name.upper())
        p.add_argument(flag, type=convert, choices=choices, metavar=metavar, help=help_text)
    return p
