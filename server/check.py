"""``xtsdb-server check``: verify a data directory offline; ``--repair`` rebuilds its index.

What is verified, and what counts as damage or a note: see
``xtsdb.server.engine.verify``.

Exit status: 0 no damage, 1 damage found (with ``--repair``: damage left
after the repair), 2 the check could not run (not a data directory, or a
server has it open: stop the server first -- the check takes the lock).

``--repair`` opens the directory with the storage engine (the recovery a
server start runs: WAL replay, rescans, state words rewritten, directory
entries restored from the index), rebuilds the index from a scan of every
chunk (keeping rows that restored entries), closes it, and checks again.
Damaged block bodies cannot be repaired; their points are reported, never
guessed. A chunk with a damaged header stays damage: its blocks are served,
read-only, from what was salvaged.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from xtsdb.protocol.errors import XtsdbError
from xtsdb.server.engine import (
    CheckError,
    Engine,
    EngineConfig,
    Progress,
    Report,
    check_data_dir,
)


def check(path: Path, *, progress: bool = False) -> Report:
    """Verify the data directory at ``path``; :class:`CheckError` if it cannot be checked."""

    def bar(total: int) -> Progress:
        return tqdm(total=total, unit="chunk", desc="checking", leave=False)

    return check_data_dir(path, progress=bar if progress else None)


def repair(path: Path) -> None:
    """Recover the directory as a server start would, then rebuild the index from a scan."""
    engine = Engine.open(path, EngineConfig(read_workers=1))
    try:
        engine.rebuild_index()
    finally:
        engine.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xtsdb-server check",
        description="Verify a data directory offline (stop the server first). Exit status: "
        "0 no damage, 1 damage, 2 could not check.",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("XTSDB_DATA_DIR"),
        help="the data directory (default: $XTSDB_DATA_DIR)",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="if damaged: run recovery and rebuild the index from a scan, then check again",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if args.data_dir is None:
        print("xtsdb-server check: error: --data-dir is required", file=sys.stderr)
        return 2
    path = Path(args.data_dir).absolute()
    progress = sys.stderr.isatty()
    try:
        report = check(path, progress=progress)
        print("\n".join(report.lines()), flush=True)
        if report.damaged and args.repair:
            print("repairing: recovery, then an index rebuild from a scan of every chunk")
            try:
                repair(path)
            except XtsdbError as exc:
                print(f"repair failed: {exc}")
                return 1
            report = check(path, progress=progress)
            print("\n".join(report.lines()))
    except CheckError as exc:
        print(f"xtsdb-server check: error: {exc}", file=sys.stderr)
        return 2
    return 1 if report.damaged else 0
