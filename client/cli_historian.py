"""The ``xtsdb`` commands of the historian: the tag catalog, aggregates and deletes.

    xtsdb tag create boiler.temp --unit degC --description "boiler outlet"
    xtsdb tag list 'boiler.*'
    xtsdb tag show boiler.temp
    xtsdb tag rename boiler.temp boiler.outlet_temp
    xtsdb tag rm boiler.outlet_temp              # its points too
    xtsdb aggregate boiler.temp --start 2024-05-01T00:00:00Z --end 2024-05-02T00:00:00Z \\
        --interval 1h --agg avg,min,max
    xtsdb delete boiler.temp --start 2024-05-01T00:00:00Z --end 2024-05-01T01:00:00Z

A TAG argument is a tag id when it is all digits, a name otherwise. Times are
integer microseconds or ISO 8601 with a zone; durations are integer
microseconds or a number with a unit (``500ms``, ``30s``, ``5m``, ``1h``, ``1d``,
``1w``). :func:`add_commands` adds these to the ``xtsdb`` parser (``cli.py``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from xtsdb.protocol.analytics import AGGREGATES
from xtsdb.protocol.errors import InvalidInput

from ._convert import format_us, parse_time
from .results import AggregateResult, TagInfo
from .sync import Client

PRINT_CHUNK = 50_000
_S = 1_000_000
_UNITS_US = {"us": 1, "ms": 1_000, "s": _S, "m": 60 * _S, "h": 3600 * _S, "d": 86_400 * _S}
_UNITS_US["w"] = 7 * _UNITS_US["d"]
_DURATION = re.compile(r"^\s*(\d+)\s*(us|ms|s|m|h|d|w)?\s*$")


def parse_duration(text: str) -> int:
    """``"5m"`` -> 300,000,000: integer microseconds, or a whole number with a unit."""
    m = _DURATION.match(text)
    if m is None:
        raise InvalidInput(
            f"duration {text!r} is not integer microseconds or a number with a unit "
            f"({', '.join(_UNITS_US)}), e.g. 5m"
        )
    return int(m.group(1)) * _UNITS_US[m.group(2) or "us"]


def tag_arg(text: str) -> int | str:
    """A TAG argument: all digits is a tag id, anything else a name."""
    return int(text) if text.isdigit() else text


def _duration_arg(text: str) -> int:
    try:
        return parse_duration(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(sub: Any) -> None:
    """Add ``tag``, ``aggregate`` and ``delete`` to the ``xtsdb`` subcommands ``sub``."""
    p = sub.add_parser("tag", help="the tag catalog: create, list, show, update, rename, rm")
    tag_sub = p.add_subparsers(dest="tag_command", required=True, metavar="ACTION")

    t = tag_sub.add_parser("create", help="name a new tag (the server picks its id)")
    t.add_argument("name")
    _meta_options(t)
    t.set_defaults(run=cmd_tag_create)

    t = tag_sub.add_parser("list", help="tags whose name matches a glob pattern")
    t.add_argument("pattern", nargs="?", default="*", help="glob: * ? [...] (default: all)")
    t.add_argument("--limit", type=int, default=None, help="at most this many (default 10,000)")
    t.add_argument("--json", action="store_true", help="as JSON")
    t.set_defaults(run=cmd_tag_list)

    t = tag_sub.add_parser("show", help="one tag's id and metadata")
    t.add_argument("tag", type=tag_arg, metavar="TAG")
    t.add_argument("--json", action="store_true", help="as JSON")
    t.set_defaults(run=cmd_tag_show)

    t = tag_sub.add_parser("update", help="change some of a tag's metadata")
    t.add_argument("tag", type=tag_arg, metavar="TAG")
    _meta_options(t)
    t.set_defaults(run=cmd_tag_update)

    t = tag_sub.add_parser("rename", help="give a tag a new name (id and data stay)")
    t.add_argument("tag", type=tag_arg, metavar="TAG")
    t.add_argument("new_name", metavar="NEW_NAME")
    t.set_defaults(run=cmd_tag_rename)

    t = tag_sub.add_parser("rm", help="delete a tag: its points and its catalog entry")
    t.add_argument("tag", type=tag_arg, metavar="TAG")
    t.set_defaults(run=cmd_tag_rm)

    p = sub.add_parser("aggregate", help="aggregates of a tag per time bucket")
    p.add_argument("tag", type=tag_arg, metavar="TAG")
    p.add_argument("--start", required=True, help="integer microseconds or ISO 8601 with zone")
    p.add_argument("--end", required=True, help="exclusive; same forms as --start")
    p.add_argument("--interval", required=True, type=_duration_arg, help="bucket size, e.g. 5m")
    p.add_argument(
        "--agg", default="avg", help=f"comma-separated, from {','.join(AGGREGATES)} (default avg)"
    )
    p.add_argument("--origin", default="0", help="a bucket start (default: the epoch)")
    p.add_argument("--good-only", action="store_true", help="only points of Good quality")
    p.add_argument("--format", choices=("csv", "table"), default="table")
    p.set_defaults(run=cmd_aggregate)

    p = sub.add_parser("delete", help="delete the points of a tag in [start, end)")
    p.add_argument("tag", type=tag_arg, metavar="TAG")
    p.add_argument("--start", required=True, help="integer microseconds or ISO 8601 with zone")
    p.add_argument("--end", required=True, help="exclusive; same forms as --start")
    p.set_defaults(run=cmd_delete)


def _meta_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unit")
    p.add_argument("--description")
    p.add_argument("--value-type", choices=("float64", "int64", "bool", "enum"))
    p.add_argument(
        "--duplicates",
        choices=("last", "first", "reject"),
        help="which of two writes of one timestamp is kept (reject: refuse the second)",
    )
    p.add_argument(
        "--retention",
        type=_duration_arg,
        help="this tag's own retention, e.g. 30d (0: the database's)",
    )


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    meta = {k: getattr(args, k) for k in ("unit", "description", "value_type", "duplicates")}
    meta["retention_us"] = args.retention
    return {k: v for k, v in meta.items() if v is not None}


def _print_tag(info: TagInfo, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(vars(info), indent=2))
        return
    retention = f"{info.retention_us} us" if info.retention_us else "(database's)"
    print(
        f"id:          {info.id}\nname:        {info.name}\nunit:        {info.unit}\n"
        f"description: {info.description}\nvalue_type:  {info.value_type}\n"
        f"duplicates:  {info.duplicates}\nretention:   {retention}\n"
        f"created:     {format_us(info.created_us)}"
    )


# -- commands -------------------------------------------------------------------------


def cmd_tag_create(client: Client, args: argparse.Namespace) -> int:
    _print_tag(client.create_tag(args.name, **_meta(args)))
    return 0


def cmd_tag_list(client: Client, args: argparse.Namespace) -> int:
    tags = client.tags(args.pattern, limit=args.limit)
    if args.json:
        print(json.dumps([vars(t) for t in tags], indent=2))
        return 0
    print(f"{'id':>10}  {'name':<32} {'unit':<10} {'duplicates':<10} description")
    for t in tags:
        print(f"{t.id:>10}  {t.name:<32} {t.unit:<10} {t.duplicates:<10} {t.description}")
    print(f"({len(tags)} tags)")
    return 0


def cmd_tag_show(client: Client, args: argparse.Namespace) -> int:
    _print_tag(client.tag(args.tag), args.json)
    return 0


def cmd_tag_update(client: Client, args: argparse.Namespace) -> int:
    _print_tag(client.update_tag(args.tag, **_meta(args)))
    return 0


def cmd_tag_rename(client: Client, args: argparse.Namespace) -> int:
    info = client.rename_tag(args.tag, args.new_name)
    print(f"tag {info.id} is now named {info.name!r}")
    return 0


def cmd_tag_rm(client: Client, args: argparse.Namespace) -> int:
    info = client.remove_tag(args.tag)
    print(f"removed tag {info.name!r} (id {info.id}) and its points")
    return 0


def cmd_aggregate(client: Client, args: argparse.Namespace) -> int:
    aggs = [a.strip() for a in args.agg.split(",") if a.strip()]
    result: AggregateResult = client.aggregate(
        args.tag,
        parse_time(args.start),
        parse_time(args.end),
        args.interval,
        aggs,
        origin=parse_time(args.origin),
        good_only=args.good_only,
    )
    _print_buckets(result, aggs, args.format)
    return 0


def _print_buckets(result: AggregateResult, aggs: list[str], fmt: str) -> None:
    out = sys.stdout
    cols = [result.values[a] for a in aggs]
    if fmt == "csv":
        out.write(",".join(["bucket_start_us", *aggs]) + "\n")
    else:
        out.write(f"{'bucket start (UTC)':<27}" + "".join(f" {a:>24}" for a in aggs) + "\n")
    for lo in range(0, len(result), PRINT_CHUNK):  # bounded strings for many buckets
        hi = lo + PRINT_CHUNK
        starts = result.start[lo:hi].tolist()
        rows = zip(starts, *(c[lo:hi].tolist() for c in cols), strict=True)
        if fmt == "csv":  # repr(): the shortest text that reads back as the same float
            out.write("".join(",".join(map(repr, row)) + "\n" for row in rows))
        else:
            out.write("".join(_table_row(row) for row in rows))
    if fmt != "csv":
        out.write(f"({len(result)} buckets)\n")


def _table_row(row: tuple[Any, ...]) -> str:
    return f"{format_us(row[0]):<27}" + "".join(f" {v!r:>24}" for v in row[1:]) + "\n"


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    start, end = parse_time(args.start), parse_time(args.end)
    lsn = client.delete(args.tag, start, end)
    print(
        f"deleted the points of {args.tag!r} in [{format_us(start)}, {format_us(end)}) (LSN {lsn})"
    )
    return 0
