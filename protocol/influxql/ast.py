"""The InfluxQL syntax tree: plain dataclasses, built by :mod:`.parser`, read by the executor."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VarRef:
    """A field or tag name (or ``time``); ``*`` is a wildcard."""

    name: str
    cast: str = ""  # "float" or "integer" (``::float``, ``::integer``); hints are not kept


@dataclass(frozen=True)
class Number:
    value: float  # an int for an integer literal: exact, as nanosecond times need
    is_int: bool = False


@dataclass(frozen=True)
class String:
    value: str


@dataclass(frozen=True)
class Boolean:
    value: bool


@dataclass(frozen=True)
class Duration:
    ns: int


@dataclass(frozen=True)
class Regex:
    pattern: str


@dataclass(frozen=True)
class Now:
    pass


@dataclass(frozen=True)
class Call:
    name: str  # lower case
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Binary:
    op: str  # + - * / %, = != < <= > >= =~ !~, and, or
    lhs: Expr
    rhs: Expr


Expr = VarRef | Number | String | Boolean | Duration | Regex | Now | Call | Binary


@dataclass(frozen=True)
class Field:
    expr: Expr
    alias: str = ""


@dataclass(frozen=True)
class Source:
    """``FROM "m"`` (``db.rp.`` prefixes are accepted and dropped) or ``FROM /re/``."""

    name: str = ""
    regex: str = ""


@dataclass
class Select:
    fields: list[Field]
    sources: list[Source]
    condition: Expr | None = None
    interval_ns: int = 0  # GROUP BY time(interval): 0 when absent
    offset_ns: int = 0
    group_tags: list[str] = field(default_factory=list)
    group_all: bool = False  # GROUP BY *
    fill: str = "null"  # null, none, previous, linear, value
    fill_value: float = 0.0
    descending: bool = False
    limit: int = 0
    offset: int = 0
    slimit: int = 0
    soffset: int = 0


@dataclass
class Show:
    """A SHOW statement: ``what`` is databases, measurements, tag_keys, tag_values,
    field_keys, retention_policies or series."""

    what: str
    sources: list[Source] = field(default_factory=list)
    regex: str = ""  # SHOW MEASUREMENTS WITH MEASUREMENT =~ /re/
    name: str = ""  # SHOW MEASUREMENTS WITH MEASUREMENT = name
    key_op: str = ""  # SHOW TAG VALUES WITH KEY: '=', '!=', 'in', '=~', '!~'
    keys: list[str] = field(default_factory=list)
    key_regex: str = ""
    condition: Expr | None = None
    limit: int = 0
    offset: int = 0


@dataclass
class CreateDatabase:
    name: str


Statement = Select | Show | CreateDatabase
