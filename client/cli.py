"""``xtsdb``: talk to a server from the shell.

    xtsdb ping                                   # exit 0 if the server answers (HEALTHCHECK)
    xtsdb write-csv data.csv --tag 17            # timestamp_us,value[,quality] per line
    xtsdb query --tag 17 --start 2024-05-01T00:00:00Z --end 2024-05-02T00:00:00Z
    xtsdb last 17 18 19
    xtsdb stats
    xtsdb backup nightly-2024-05-01              # a copy on the server, under its backup_dir
    xtsdb tag list | aggregate | delete ...      # the historian: see cli_historian.py
    xtsdb import data.csv | export --tags 'FIC*' out.csv   # files: see cli_ingest.py
    xtsdb cluster status                         # cluster mode: see cli_cluster.py

``--url`` (or ``XTSDB_URL``) picks the server (or several, to fail over),
``--token`` (or ``XTSDB_TOKEN``) authenticates, ``--ca``/``--cert``/``--key`` set up
TLS (as does an ``xtsdbs://`` URL). Errors are one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from xtsdb.protocol.errors import InvalidInput, XtsdbError

from . import cli_cluster, cli_historian, cli_ingest
from ._convert import format_us, parse_time
from ._core import DEFAULT_URL
from .csv_chunks import float_column, read_value, value_cells
from .results import Float64Array, Int64Array, UInt8Array
from .sync import Client

CSV_CHUNK_LINES = 200_000
PRINT_CHUNK = 50_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xtsdb", description="xtsdb command line client")
    parser.add_argument(
        "--url",
        default=os.environ.get("XTSDB_URL", DEFAULT_URL),
        # Not %(default)s: $XTSDB_URL may hold a token, and --help must not print it.
        help="server URL, xtsdb[s]://[:TOKEN@]host:port[,host2:port2...] (several: fail over)"
        f" (default: $XTSDB_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("XTSDB_TOKEN"),
        help="access token (default: $XTSDB_TOKEN); prefer the variable, flags show in `ps`",
    )
    parser.add_argument("--ca", help="CA file to verify the server's certificate (turns on TLS)")
    parser.add_argument("--cert", help="client certificate, PEM (turns on TLS)")
    parser.add_argument("--key", help="private key of --cert, if not in that file")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ping", help="check the server answers; print the round trip")
    p.set_defaults(run=cmd_ping)

    p = sub.add_parser("write-csv", help="write a CSV file of timestamp_us,value[,quality]")
    p.add_argument("file", help="CSV file ('-' for stdin); a header line is skipped")
    p.add_argument("--tag", type=int, required=True, help="tag id to write to")
    p.add_argument("--chunk", type=int, default=CSV_CHUNK_LINES, help="lines per chunk sent")
    p.set_defaults(run=cmd_write_csv)

    p = sub.add_parser("query", help="print the points of a tag in [start, end)")
    p.add_argument("--tag", type=cli_historian.tag_arg, required=True, help="tag id or name")
    p.add_argument("--start", required=True, help="integer microseconds or ISO 8601 with zone")
    p.add_argument("--end", required=True, help="exclusive; same forms as --start")
    p.add_argument("--limit", type=int, default=None, help="at most this many points")
    p.add_argument("--desc", action="store_true", help="newest first (--limit: the newest)")
    p.add_argument("--good-only", action="store_true", help="only points of Good quality")
    p.add_argument("--format", choices=("csv", "table"), default="table")
    p.set_defaults(run=cmd_query)

    p = sub.add_parser("last", help="print the latest point of each tag")
    p.add_argument("tags", type=cli_historian.tag_arg, nargs="+", metavar="TAG")
    p.set_defaults(run=cmd_last)

    p = sub.add_parser("stats", help="print the server's counters")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(run=cmd_stats)

    p = sub.add_parser("backup", help="have the server copy its data directory, online")
    p.add_argument(
        "dest",
        help="destination directory on the SERVER's filesystem, inside its backup_dir "
        "(a relative path is relative to it); must not exist yet",
    )
    p.add_argument(
        "--wait", type=float, default=86400.0, help="seconds to wait for the copy (default: a day)"
    )
    p.set_defaults(run=cmd_backup)
    cli_historian.add_commands(sub)
    cli_ingest.add_commands(sub)
    cli_cluster.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors and --help: a status, not an exit, for callers
        return exc.code if isinstance(exc.code, int) else 2
    try:
        tls = {"ca": args.ca, "cert": args.cert, "key": args.key}
        with Client(args.url, timeout=args.timeout, token=args.token, **tls) as client:
            status: int = args.run(client, args)
            return status
    except BrokenPipeError:  # `xtsdb query ... | head`: the reader left, not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (XtsdbError, OSError) as exc:
        print(f"xtsdb: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# -- commands -----------------------------------------------------------------------


def cmd_ping(client: Client, args: argparse.Namespace) -> int:
    rtt = client.ping()
    print(f"pong from {client.url} ({client.server}) in {rtt * 1e3:.3f} ms")
    return 0


def cmd_write_csv(client: Client, args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    total = 0
    with _open_text(args.file) as f:
        for ts, values, q in read_csv_chunks(f, args.file, args.chunk):
            total += client.write(args.tag, ts, values, q)
    dt = time.perf_counter() - t0
    print(f"wrote {total} points to tag {args.tag} in {dt:.2f} s ({total / max(dt, 1e-9):,.0f}/s)")
    return 0


def cmd_query(client: Client, args: argparse.Namespace) -> int:
    start, end = parse_time(args.start), parse_time(args.end)
    result = client.query(
        args.tag, start, end, args.limit, descending=args.desc, good_only=args.good_only
    )
    ts, values, q = result.timestamps, result.values, result.qualities
    out = sys.stdout
    if args.format == "csv":
        out.write("timestamp_us,value,quality\n")
        for lo in range(0, len(result), PRINT_CHUNK):  # bounded strings for big results
            hi = lo + PRINT_CHUNK
            # repr() is the shortest text that reads back as the same float; a NaN
            # with a payload is written nan(0x...), which write-csv reads back.
            cells = value_cells(values[lo:hi])
            rows = zip(ts[lo:hi].tolist(), cells, q[lo:hi].tolist(), strict=True)
            out.write("".join(f"{t},{v},{qq}\n" for t, v, qq in rows))
    else:
        out.write(f"{'time (UTC)':<27} {'value':>24} {'quality':>7}\n")
        for lo in range(0, len(result), PRINT_CHUNK):
            hi = lo + PRINT_CHUNK
            rows = zip(ts[lo:hi].tolist(), values[lo:hi].tolist(), q[lo:hi].tolist(), strict=True)
            out.write("".join(f"{format_us(t):<27} {v!r:>24} {qq:>7}\n" for t, v, qq in rows))
        out.write(f"({len(result)} points)\n")
    return 0


def cmd_last(client: Client, args: argparse.Namespace) -> int:
    # Names become ids first: the answer is keyed by id.
    ids = [t if isinstance(t, int) else client.tag(t).id for t in args.tags]
    result = client.last(np.asarray(ids, dtype=np.int64))
    found, errors = result.to_dict(), result.errors
    print(f"{'tag':>10} {'time (UTC)':<27} {'value':>24} {'quality':>7}")
    for tag, tag_id in zip(args.tags, ids, strict=True):
        if tag_id in found:
            ts, value, q = found[tag_id]
            print(f"{tag:>10} {format_us(ts):<27} {value!r:>24} {q:>7}")
        elif tag_id in errors:
            print(f"{tag:>10} {'(error)':<27} {errors[tag_id]}")
        else:
            print(f"{tag:>10} {'(no data)':<27}")
    return 1 if errors else 0  # a damaged tag is a failure a script must see


def cmd_stats(client: Client, args: argparse.Namespace) -> int:
    stats = client.stats()
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
    else:
        _print_tree(stats, 0)
    return 0


def cmd_backup(client: Client, args: argparse.Namespace) -> int:
    with _elapsed("backup"):
        r = client.backup(args.dest, timeout=args.wait)
    print(
        f"backup written to {r.get('path')}: {r.get('bytes', 0):,} bytes in {r.get('seconds')} s "
        f"(checkpoint LSN {r.get('checkpoint_lsn')}, WAL up to LSN {r.get('wal_last_lsn')}); "
        "restore by starting a server on it"
    )
    return 0


@contextlib.contextmanager
def _elapsed(desc: str) -> Iterator[None]:
    """A line counting the seconds while one long request runs; only on a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    done = threading.Event()
    with tqdm(desc=desc, bar_format="{desc}: {elapsed} elapsed", file=sys.stderr) as bar:

        def tick() -> None:  # the request blocks this thread, so another one redraws
            while not done.wait(0.5):
                bar.refresh()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()


def _print_tree(node: dict[str, Any], depth: int) -> None:
    for key in sorted(node):
        value = node[key]
        if isinstance(value, dict):
            print(f"{'  ' * depth}{key}:")
            _print_tree(value, depth + 1)
        else:
            shown = (
                f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
            )
            print(f"{'  ' * depth}{key}: {shown}")


# -- CSV ----------------------------------------------------------------------------


@contextlib.contextmanager
def _open_text(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdin
    else:
        with open(path, encoding="utf-8", newline="") as f:
            yield f


def read_csv_chunks(
    f: IO[str], name: str, chunk_lines: int = CSV_CHUNK_LINES
) -> Iterator[tuple[Int64Array, Float64Array, UInt8Array | None]]:
    """``(ts, values, qualities or None)`` per chunk of lines, parsed by numpy.

    The first line is skipped if it is a header (its first field is not an
    integer). Every data line has the column count of the first one.
    :class:`InvalidInput` names the file and line of the first bad line.
    """
    line_no = 0
    ncols = 0
    while lines := list(itertools.islice(f, max(chunk_lines, 1))):
        first = line_no + 1
        line_no += len(lines)
        if ncols == 0:
            lines, first, ncols = _skip_header(lines, first, name, header_ok=first == 1)
            if ncols == 0:
                continue  # blank lines or only a header so far
        dtype = [("ts", "<i8"), ("v", "<f8"), ("q", "u1")][:ncols]
        try:
            rows = np.atleast_1d(np.loadtxt(lines, delimiter=",", dtype=dtype, comments="#"))
        except ValueError:
            # Slow path, only on error: name the bad line, or -- if every line is
            # fine, e.g. numpy tripped on an indented comment or a nan(0x...) cell --
            # parse the data lines.
            good = _check_lines(lines, first, ncols, name)
            if good:
                yield _parse_good_lines(good, ncols)
            continue
        q = rows["q"].copy() if ncols == 3 else None
        if rows.shape[0]:
            yield rows["ts"].copy(), rows["v"].copy(), q


def _parse_good_lines(
    good: list[str], ncols: int
) -> tuple[Int64Array, Float64Array, UInt8Array | None]:
    """Lines :func:`_check_lines` passed, as columns (values through ``float_column``)."""
    cols = np.array([[x.strip() for x in line.split(",")] for line in good], dtype=bytes)
    q = cols[:, 2].astype(np.uint8) if ncols == 3 else None
    return cols[:, 0].astype(np.int64), float_column(cols[:, 1]), q


def _skip_header(
    lines: list[str], first: int, name: str, header_ok: bool
) -> tuple[list[str], int, int]:
    """Drop blank lines and a header before the first data line; its column count."""
    for i, line in enumerate(lines):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = text.split(",")
        if header_ok and not fields[0].strip().lstrip("+-").isdigit():
            return _skip_header(lines[i + 1 :], first + i + 1, name, header_ok=False)
        if len(fields) not in (2, 3):
            raise InvalidInput(
                f"{name}: line {first + i}: expected timestamp_us,value[,quality], "
                f"got {len(fields)} columns: {line.rstrip()!r}"
            )
        return lines[i:], first + i, len(fields)
    return [], first + len(lines), 0


def _check_lines(lines: list[str], first: int, ncols: int, name: str) -> list[str]:
    """The data lines of a chunk numpy refused; :class:`InvalidInput` for the first bad one."""
    good = []
    for i, line in enumerate(lines):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = [x.strip() for x in text.split(",")]
        reason = ""
        if len(fields) != ncols:
            reason = f"expected {ncols} columns, got {len(fields)}"
        else:
            try:
                int(fields[0])
                read_value(fields[1])
                if ncols == 3 and not 0 <= int(fields[2]) <= 255:
                    reason = "quality must be an integer 0..255"
            except ValueError:
                reason = "expected integer timestamp_us, number value[, integer quality]"
        if reason:
            raise InvalidInput(f"{name}: line {first + i}: {reason}: {line.rstrip()!r}")
        good.append(text)
    return good


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
