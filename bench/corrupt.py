"""Corruption campaign: damage one thing in a cleanly stopped data directory, start, query all.

    .venv/bin/python -m bench.corrupt                  # 50 trials per row
    .venv/bin/python -m bench.corrupt --trials 10 --rows "state flip,dir active flip"
    .venv/bin/python -m bench.corrupt --block-points 40   # directories longer than a page

A reference directory is written once through the engine (several tags named in
the tag catalog, sealed chunks and an active one, deletes whose tombstones sit in
both) and stopped cleanly; a model of what it must hold is kept in numpy arrays.
Each trial copies it, flips one byte (XOR with a random non-zero mask), zeroes
one 4 KiB page or changes one index row in one kind of place, runs
``xtsdb-server check`` on it, opens the engine, resolves every tag by name,
asks ``last()``, queries all of it and its 1-second aggregates (mostly answered
from block summaries); then runs ``check --repair`` and opens it
again. Outcomes:

- ``no effect``: the same answers, nothing reported (the byte did not matter);
- ``repaired``: the same answers, and the open reported what it repaired;
- ``detected``: a query raised ``CorruptionError`` (or ``last()`` named the tag
  in its errors), or answers differ but the open reported damage
  (``engine.repairs`` or a log line at WARNING or above);
- ``refused``: the open failed with an xtsdb error (a clear message);
- ``crash``: an exception outside the xtsdb tree (a traceback, not a message);
- ``silent wrong`` / ``silent missing``: answers differ (wrong or extra points /
  only missing ones) and nothing was reported.

Two more columns judge the offline tools: ``check missed`` (the open repaired,
detected or refused, but ``check`` said OK) and ``repair lost`` (``check
--repair`` failed, or the next open answered with fewer points than before it).
Crash, the silent outcomes and these two must be zero.

Deterministic for a given ``--seed``. Exit status 1 if any of them is not zero.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corrupt_targets import ROWS, damage, regions
from xtsdb.protocol.errors import CorruptionError, XtsdbError
from xtsdb.server.check import check, repair
from xtsdb.server.engine import Engine, EngineConfig
from xtsdb.server.engine.config import EXTENT

CONFIG = EngineConfig(
    chunk_size=4 * EXTENT,
    chunks_per_container=4,
    meta_extents=1,
    block_points=200,
    read_workers=0,
)
TAGS = [f"plant.unit{k}.pv" for k in range(4)]
POINTS = 4000
OUTCOMES = [
    "no effect",
    "repaired",
    "detected",
    "refused",
    "crash",
    "silent wrong",
    "silent missing",
]
BAD = ("crash", "silent wrong", "silent missing")
# Trials the open repaired, detected or refused while `xtsdb-server check`, run on the
# damaged directory first, said OK: the offline check must see what a start sees.
CHECK_MISSED = "check missed"
# Trials where `check --repair` (recovery, then an index rebuild) lost points that the
# start before it had answered with.
REPAIR_LOST = "repair lost"
EXTRA = (CHECK_MISSED, REPAIR_LOST)


def _values(tag: int, ts: np.ndarray, gen: int) -> np.ndarray:
    # Noisy values (about 8 bytes a point) so that the data fills several chunks.
    noise = np.random.default_rng(tag * 10 + gen).random(POINTS)
    return np.asarray(noise[ts // 1000] * 1000 + tag * 1000)


@dataclass
class Reference:
    """The pristine directory and what each tag (by name) must return."""

    path: Path
    expect: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def build(path: Path) -> Reference:
    """Write the reference directory: ~4 sealed chunks and an active one, with deletes."""
    ref = Reference(path)
    model: dict[str, dict[int, float]] = {}
    with Engine.open(path, CONFIG) as eng:
        ids = {name: eng.create_tag(name).id for name in TAGS}
        ts = np.arange(POINTS, dtype=np.int64) * 1000
        half = POINTS // 2

        def write(name: str, sl: slice, gen: int) -> None:
            k = TAGS.index(name)
            vals = _values(k, ts[sl], gen)
            eng.write(ids[name], ts[sl], vals)
            model.setdefault(name, {}).update(zip(ts[sl].tolist(), vals.tolist(), strict=True))

        def delete(name: str, start: int, end: int) -> None:
            eng.delete(ids[name], start, end)
            m = model[name]
            for t in [t for t in m if start <= t < end]:
                del m[t]

        for name in TAGS:
            write(name, slice(0, half), 0)
        eng.flush()
        delete(TAGS[1], 300_000, 700_000)  # a tombstone in an early (later sealed) chunk
        for name in TAGS:
            write(name, slice(half, POINTS), 0)
        eng.flush()
        delete(TAGS[2], 3_500_000, 3_600_000)  # tombstones in the active chunk
        delete(TAGS[0], 100_000, 200_000)
        write(TAGS[0], slice(150, 170), 1)  # later writes inside a deleted range stay
        eng.flush()
        # A compacted tag: merged blocks and a retire record among the entries.
        write(TAGS[2], slice(1000, 1400), 2)
        eng.flush()
        eng.compact()
    for name, m in model.items():
        keys = np.array(sorted(m), dtype=np.int64)
        ref.expect[name] = (keys, np.array([m[k] for k in keys.tolist()]))
    return ref


# -- one trial ---------------------------------------------------------------------------------


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


Answers = dict[str, tuple[np.ndarray, np.ndarray]]
SEC = 1_000_000
AGGS = ("count", "min", "max", "sum", "first", "last")


def _aggregates_differ(eng: Engine, tag: int, ts: np.ndarray, vals: np.ndarray) -> str:
    """The first 1-second aggregate that disagrees with the model ('' if none).

    One-second buckets cover whole blocks of the reference directory, so most
    are answered from block summaries: damage to one must never reach here.
    """
    end = POINTS * 1000
    got = eng.aggregate(tag, 0, end, SEC, AGGS).values
    nb = -(-end // SEC)
    k = ts // SEC
    count = np.bincount(k, minlength=nb)
    ne = np.flatnonzero(count)
    at = np.searchsorted(k, ne)
    last = np.searchsorted(k, ne, "right") - 1
    want = {name: np.full(nb, np.nan) for name in AGGS}
    want["count"] = count
    want["min"][ne] = np.minimum.reduceat(vals, at)
    want["max"][ne] = np.maximum.reduceat(vals, at)
    want["sum"][ne] = np.add.reduceat(vals, at)
    want["first"][ne], want["last"][ne] = vals[at], vals[last]
    for name in AGGS:
        if name == "sum":
            if not np.allclose(got[name], want[name], rtol=1e-9, equal_nan=True):
                return name
        elif not np.array_equal(got[name], want[name], equal_nan=True):
            return name
    return ""


def answers(data: Path, names: list[str]) -> Answers:
    """What a start answers for each tag (tags that raise CorruptionError left out)."""
    out: Answers = {}
    with Engine.open(data, CONFIG) as eng:
        for name in names:
            with contextlib.suppress(CorruptionError):
                p = eng.query(eng.catalog.resolve(name), -(1 << 60), 1 << 60)
                out[name] = (p.timestamps, p.values)
    return out


def repair_loses(data: Path, before: Answers) -> str:
    """What ``xtsdb-server check --repair`` lost of the answers a start gave ('' if nothing)."""
    try:
        repair(data)
        after = answers(data, list(before))
    except Exception as exc:
        return f"repair or the start after it failed: {type(exc).__name__}: {exc}"
    lost = []
    for name, (ts, vals) in before.items():
        a_ts, a_vals = after.get(name, (np.empty(0, np.int64), np.empty(0)))
        keep = np.isin(ts, a_ts)
        same = np.array_equal(a_vals[np.isin(a_ts, ts)], vals[keep])
        if not keep.all() or not same:
            lost.append(f"{name}: {int((~keep).sum())} points gone after --repair")
    return "; ".join(lost)


def classify(ref: Reference, data: Path, seen: Answers | None = None) -> tuple[str, str]:
    """Open the damaged copy, query every tag by name; (outcome, detail).

    ``seen`` receives what each tag answered (for the --repair comparison).
    """
    cap = _Capture()
    logger = logging.getLogger("xtsdb")
    logger.addHandler(cap)
    try:
        try:
            eng = Engine.open(data, CONFIG)
        except XtsdbError as exc:
            return "refused", str(exc)
        except Exception as exc:  # what the campaign exists to find
            return "crash", f"open: {type(exc).__name__}: {exc}"
        reported = bool(eng.repairs)
        corrupt, differs, wrong = False, [], False
        try:
            for name, (ts, vals) in ref.expect.items():
                try:
                    tag = eng.catalog.resolve(name)
                    newest = eng.last([tag])
                    if tag in newest.errors:
                        corrupt = True
                    elif len(newest) != 1 or (
                        (int(newest.timestamps[0]), float(newest.values[0]))
                        != (int(ts[-1]), float(vals[-1]))
                    ):
                        differs.append(f"{name}: last() is not the newest point written")
                        wrong = True
                    p = eng.query(tag, -(1 << 60), 1 << 60)
                except CorruptionError:
                    corrupt = True
                    continue
                except XtsdbError as exc:
                    differs.append(f"{name}: {exc}")
                    wrong = True
                    continue
                if seen is not None:
                    seen[name] = (p.timestamps, p.values)
                try:
                    bad_agg = _aggregates_differ(eng, tag, ts, vals)
                except CorruptionError:
                    corrupt = True
                    continue
                if bad_agg:
                    differs.append(f"{name}: aggregate {bad_agg} differs")
                    wrong = True
                if np.array_equal(p.timestamps, ts) and np.array_equal(p.values, vals):
                    continue
                got = dict(zip(p.timestamps.tolist(), p.values.tolist(), strict=True))
                want = dict(zip(ts.tolist(), vals.tolist(), strict=True))
                extra = got.keys() - want.keys()
                bad = [t for t in got.keys() & want.keys() if got[t] != want[t]]
                wrong = wrong or bool(extra or bad)
                differs.append(
                    f"{name}: {len(want.keys() - got.keys())} missing, "
                    f"{len(extra)} extra, {len(bad)} wrong"
                )
        except Exception as exc:
            eng.close()
            return "crash", f"query: {type(exc).__name__}: {exc}"
        eng.close()
    finally:
        logger.removeHandler(cap)
    reported = reported or bool(cap.lines)
    detail = "; ".join(differs + eng.repairs[:3] + cap.lines[:2])
    if corrupt or (differs and reported):
        return "detected", detail
    if differs:
        return ("silent wrong" if wrong else "silent missing"), detail
    return ("repaired" if reported else "no effect"), detail


def run(
    trials: int,
    seed: int,
    rows: list[str] | None = None,
    workdir: Path | None = None,
    on_trial: Callable[[str, str, str, str], None] | None = None,
) -> dict[str, dict[str, int]]:
    """The campaign: ``{row: {outcome: count}}``."""
    base = Path(tempfile.mkdtemp(prefix="xtsdb-corrupt-", dir=workdir))
    try:
        ref = build(base / "ref")
        where = regions(ref.path, CONFIG)
        table: dict[str, dict[str, int]] = {}
        for row, kind, how in ROWS:
            if (rows and row not in rows) or kind not in where:
                continue  # e.g. no WAL segment is left after a clean stop
            rng = random.Random(f"{seed}:{row}")
            counts = table.setdefault(row, dict.fromkeys([*OUTCOMES, *EXTRA], 0))
            for _ in range(trials):
                copy = base / "trial"
                shutil.copytree(ref.path, copy)
                target = rng.choice(where[kind])
                what = damage(target, how, rng, ref.path, copy)
                try:
                    offline = "DAMAGED" if check(copy).damaged else "OK"
                except Exception as exc:  # check must report, never raise
                    offline = f"check raised {type(exc).__name__}: {exc}"
                seen: Answers = {}
                outcome, detail = classify(ref, copy, seen)
                counts[outcome] += 1
                if outcome not in ("refused", "crash"):
                    lost = repair_loses(copy, seen)
                    if lost:
                        counts[REPAIR_LOST] += 1
                        detail = f"{lost}; {detail}"
                        outcome += " (repair lost data)"
                if outcome in ("repaired", "detected", "refused") and offline != "DAMAGED":
                    counts[CHECK_MISSED] += 1
                    detail = f"xtsdb-server check said {offline}; {detail}"
                    outcome += " (check missed it)"
                if on_trial is not None:
                    on_trial(row, what, outcome, detail)
                shutil.rmtree(copy)
        return table
    finally:
        shutil.rmtree(base, ignore_errors=True)


def format_table(table: dict[str, dict[str, int]]) -> str:
    width = max(len(r) for r in table) + 2
    cols = [*OUTCOMES, *EXTRA]
    head = "".ljust(width) + "".join(o.rjust(15) for o in cols)
    lines = [head, "-" * len(head)]
    for row, counts in table.items():
        lines.append(row.ljust(width) + "".join(str(counts[o]).rjust(15) for o in cols))
    total = {o: sum(c[o] for c in table.values()) for o in cols}
    lines.append("-" * len(head))
    lines.append("total".ljust(width) + "".join(str(total[o]).rjust(15) for o in cols))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global CONFIG  # --block-points changes the layout every trial uses
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=50, help="trials per row (default 50)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rows", default="", help="comma-separated row names (default: all)")
    p.add_argument("--verbose", action="store_true", help="print every bad trial")
    p.add_argument(
        "--block-points",
        type=int,
        default=CONFIG.block_points,
        help="points per block: 40 makes directories longer than a 4 KiB page",
    )
    args = p.parse_args(argv)
    CONFIG = dataclasses.replace(CONFIG, block_points=args.block_points)
    logging.getLogger("xtsdb").setLevel(logging.WARNING)
    logging.getLogger("xtsdb").propagate = False  # the campaign counts warnings, not prints
    logging.getLogger("xtsdb").addHandler(logging.NullHandler())

    def show(row: str, what: str, outcome: str, detail: str) -> None:
        if args.verbose and (outcome in BAD or "(" in outcome):
            print(f"{row}: {what}: {outcome}: {detail}", flush=True)

    shm = Path("/dev/shm")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] or None
    table = run(args.trials, args.seed, rows, shm if shm.is_dir() else None, show)
    print(
        f"corruption campaign: {args.trials} trials per row, seed {args.seed}, "
        f"{args.block_points} points per block"
    )
    print(format_table(table))
    bad = sum(c[o] for c in table.values() for o in (*BAD, *EXTRA))
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
