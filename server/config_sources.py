"""Where server settings come from: a TOML file, ``XTSDB_*`` variables and flags.

:mod:`xtsdb.server.config` declares the settings (a frozen dataclass whose
fields carry their help text and checks); this module turns each source's
text into field values, driven by those declarations alone, so a new setting
needs no code here. A field's *kind* (bool, list, size, int, float, path,
str) comes from its annotation, and ``metadata["size"]`` marks a byte count
that accepts ``64KiB``-style suffixes.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "XTSDB_"


class ConfigError(ValueError):
    """A setting is missing, malformed or not allowed; the message names it and its source."""


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


def load_values(
    cls: type[Any],
    argv: Sequence[str],
    environ: Mapping[str, str],
    removed: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The fields of dataclass ``cls`` that are set: TOML file < environment < flags.

    ``removed``: settings that no longer exist -> the message that says what
    replaces them; set from any source, they are refused with that message
    (rather than argparse's or TOML's generic "unknown" error).
    """
    _refuse_removed(argv, environ, removed or {})
    args = vars(build_parser(cls).parse_args(list(argv)))
    values: dict[str, Any] = {}
    config_path = args.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        values.update(_from_toml(cls, Path(config_path), removed or {}))
    for f in fields(cls):
        env_name = ENV_PREFIX + f.name.upper()
        if env_name in environ:
            values[f.name] = _convert(f, environ[env_name], env_name)
    for name, raw in args.items():
        # argparse already converted it; repeated list flags arrive as a list
        values[name] = _split_list(raw) if isinstance(raw, list) else raw
    return values


def _refuse_removed(
    argv: Sequence[str], environ: Mapping[str, str], removed: Mapping[str, str]
) -> None:
    for name, why in removed.items():
        flag = "--" + name.replace("_", "-")
        if any(a == flag or a.startswith(flag + "=") for a in argv):
            raise ConfigError(f"flag {flag}: {why}")
        if ENV_PREFIX + name.upper() in environ:
            raise ConfigError(f"environment variable {ENV_PREFIX}{name.upper()}: {why}")


def _kind(f: Field[Any]) -> str:
    # Annotations are strings under `from __future__ import annotations`.
    t = str(f.type)
    if t == "bool":
        return "bool"
    if t.startswith("tuple"):
        return "list"
    if t == "int":
        return "size" if f.metadata.get("size") else "int"
    if t == "float":
        return "float"
    if "Path" in t:
        return "path"
    return "str"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _convert(f: Field[Any], raw: Any, source: str) -> Any:
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


def _from_toml(cls: type[Any], path: Path, removed: Mapping[str, str]) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for name in sorted(set(doc) & set(removed)):
        raise ConfigError(f"config file {path}: key {name}: {removed[name]}")
    known = {f.name: f for f in fields(cls)}
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


def _shown_default(f: Field[Any]) -> str | None:
    """The default as ``--help`` shows it; None for a flag or an unset value."""
    default = f.default
    if _kind(f) == "bool" or default in (None, ()):
        return None
    if _kind(f) == "size" and isinstance(default, int):
        return format_size(default)
    if isinstance(default, Path) and not default.is_absolute():
        return f"./{default}"
    return str(default)


def build_parser(cls: type[Any]) -> argparse.ArgumentParser:
    """A flag ``--name`` for every field of ``cls``, its help from ``metadata["help"]``."""
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
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = _shown_default(f)
        env = f"env {ENV_PREFIX}{f.name.upper()}"
        help_text = f"{f.metadata.get('help', '')} ({env}"
        help_text += ")" if default is None else f"; default {default})"
        kind = _kind(f)
        if kind == "bool":
            p.add_argument(flag, action="store_true", help=help_text)
        elif kind == "list":
            # --token reads better when repeated; both spellings append to one list.
            spellings = (flag, flag[:-1]) if flag.endswith("s") else (flag,)
            metavar = f.metadata.get("metavar", "ROLE:SECRET")
            p.add_argument(
                *spellings, dest=f.name, action="append", metavar=metavar, help=help_text
            )
        else:
            choices = f.metadata.get("choices")
            metavar = None if choices else _METAVARS.get(kind, f.name.upper())
            p.add_argument(
                flag, type=_CONVERTERS[kind], choices=choices, metavar=metavar, help=help_text
            )
    return p
