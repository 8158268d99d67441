"""The ``xtsdb import`` and ``xtsdb export`` commands (the work is in :mod:`.importexport`).

Examples::

    xtsdb import boiler.csv                        # long or wide, from the header
    xtsdb import --resume --create-tags big.csv    # after an interruption: skip what is stored
    xtsdb export --tags 'FIC*' --start 2024-05-01T00:00:00Z --end 2024-06-01T00:00:00Z may.csv
    xtsdb export --tags 17,18 --layout wide --format parquet out.parquet
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from xtsdb.protocol.errors import InvalidInput

from ._convert import parse_time
from .importexport import CHUNK_ROWS, Importer, export, resolve_tags
from .sync import Client


def add_commands(sub: Any) -> None:
    """Add ``import`` and ``export`` to the ``xtsdb`` subcommands."""
    p = sub.add_parser("import", help="import a CSV or Parquet file, long or wide layout")
    p.add_argument("file", help="a .csv file ('-': stdin) or a .parquet file")
    p.add_argument(
        "--layout",
        choices=("long", "wide"),
        default=None,
        help="tag,timestamp,value[,quality] rows (long) or timestamp,TAG1,TAG2,... "
        "(wide); default: from the header",
    )
    p.add_argument("--chunk", type=int, default=CHUNK_ROWS, help="rows per chunk sent")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip rows not newer than the newest point stored for their tag "
        "(restart an interrupted import; see docs/ingest.md)",
    )
    p.add_argument(
        "--create-tags",
        action="store_true",
        help="create tag names the catalog does not know (default: stop)",
    )
    p.set_defaults(run=cmd_import)

    p = sub.add_parser("export", help="export points to CSV or Parquet, streaming")
    p.add_argument("out", help="output file ('-': stdout, CSV only)")
    p.add_argument(
        "--tags", required=True, help="comma-separated tag names, ids or glob patterns ('FIC*')"
    )
    p.add_argument(
        "--start",
        help="first time included: integer us or ISO 8601 with zone (default: the earliest point)",
    )
    p.add_argument("--end", help="first time excluded (default: after the newest point)")
    p.add_argument("--layout", choices=("long", "wide"), default="long")
    p.add_argument(
        "--format",
        choices=("csv", "parquet"),
        default=None,
        help="default: from the file name (.parquet), else csv",
    )
    p.set_defaults(run=cmd_export)


def cmd_import(client: Client, args: argparse.Namespace) -> int:
    importer = Importer(
        client,
        layout=args.layout,
        chunk_rows=args.chunk,
        resume=args.resume,
        create_tags=args.create_tags,
    )
    try:
        r = importer.run(args.file)
    except ImportError as exc:
        raise InvalidInput(str(exc)) from None
    skipped = f", {r.skipped:,} points skipped as already stored (--resume)" if r.skipped else ""
    print(
        f"imported {r.rows:,} rows ({r.points:,} points, {len(r.tags)} tags{skipped}) "
        f"from {args.file} in {r.seconds:.2f} s ({r.rows / max(r.seconds, 1e-9):,.0f} rows/s)",
        file=sys.stderr if args.file == "-" else sys.stdout,
    )
    return 0


def cmd_export(client: Client, args: argparse.Namespace) -> int:
    fmt = args.format or ("parquet" if args.out.endswith(".parquet") else "csv")
    start = None if args.start is None else parse_time(args.start)
    end = None if args.end is None else parse_time(args.end)
    try:
        r = export(
            client,
            resolve_tags(client, args.tags),
            start,
            end,
            args.out,
            layout=args.layout,
            fmt=fmt,
        )
    except ImportError as exc:
        raise InvalidInput(str(exc)) from None
    print(
        f"exported {r.points:,} points of {r.tags} tags ({r.rows:,} rows) to {args.out} "
        f"in {r.seconds:.2f} s",
        file=sys.stderr,
    )
    return 0
