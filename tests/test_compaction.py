"""Compaction: a rewrite-heavy history settles to few blocks, and every answer stays the same.

Real engine, real files: the same timestamps written many times, late data
inside old ranges, deletes, then compaction; raw, aggregate, last and plot
answers are compared bit for bit before and after, after a reopen, and after
an index rebuilt from a scan of the chunks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from xtsdb.server.engine import Engine, EngineConfig
from xtsdb.server.engine.compaction import needs_compaction

BP = 200
CFG = EngineConfig(
    chunk_size=256 * 1024,
    meta_extents=2,
    chunks_per_container=4,
    block_points=BP,
    workers=0,
    compaction=False,  # passes are run by hand: the test decides when
)
TAGS = (1, 2, 3)
SPAN = (-(1 << 50), 1 << 50)


def _history(eng: Engine, rounds: int = 10, seed: int = 7) -> None:
    """Rewrites of the same 1,000 timestamps, late points, deletes; sealed after each step."""
    rng = np.random.default_rng(seed)
    ts = np.arange(1000, dtype=np.int64) * 1_000_000
    for r in range(rounds):
        for tag in TAGS:
            pick = np.sort(rng.choice(ts, size=600, replace=False))
            vals = rng.normal(size=600) * 10 + r
            if tag == 2:
                vals = np.round(vals, 2)
            q = np.where(rng.random(600) < 0.05, 0, 192).astype(np.uint8)
            eng.write(tag, pick, vals, q)
            late = np.sort(rng.choice(ts + 500_000, size=40, replace=False))
            eng.write(tag, late, rng.normal(size=40))
        eng.flush()
        if r % 3 == 1:
            lo = int(rng.integers(0, 900)) * 1_000_000
            eng.delete(1 + r % 3, lo, lo + 50_000_000)
            eng.flush()
    eng.write(3, np.array([ts[5], ts[5]]), np.array([np.nan, -0.0]))  # same ts twice in a batch
    eng.write(4, ts[:10], np.ones(10))
    eng.flush()
    eng.delete_tag(4)  # a tag deleted whole: only its tombstone is left


EXACT = ("count", "min", "max")


class Near:
    """Float arrays equal up to 1e-12 relative (NaN where NaN)."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Near) and bool(
            np.allclose(self.a, other.a, rtol=1e-12, atol=0, equal_nan=True)
        )

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"Near({self.a!r})"


def _answers(eng: Engine) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in (*TAGS, 4):
        p = eng.query(tag, *SPAN)
        out[f"raw{tag}"] = (p.timestamps.tobytes(), p.values.tobytes(), p.qualities.tobytes())
        p = eng.query(tag, 100_000_000, 700_000_000, 50, descending=True, good_only=True)
        out[f"part{tag}"] = (p.timestamps.tobytes(), p.values.tobytes(), p.qualities.tobytes())
        for step in (10_000_000, 3_600_000_000):
            b = eng.aggregate(tag, 0, 1_001_000_000, step, ["count", "min", "max", "sum", "avg"])
            # sum and avg of summarised cells are the decoded answer up to rounding
            # (docs/historian.md): compared apart, to 1e-12 relative.
            cells = [(k, v.tobytes()) for k, v in sorted(b.values.items()) if k in EXACT]
            out[f"agg{tag}/{step}"] = (b.start.tobytes(), cells)
            out[f"sum{tag}/{step}"] = Near(b.values["sum"])
        p = eng.plot(tag, 0, 1_001_000_000, 37)
        out[f"plot{tag}"] = (p.timestamps.tobytes(), p.values.tobytes(), p.qualities.tobytes())
    last = eng.last(np.array([*TAGS, 4]))
    out["last"] = (last.tag_ids.tobytes(), last.timestamps.tobytes(), last.values.tobytes())
    return out


def _blocks(eng: Engine, tag: int) -> int:
    return len(eng._tags[tag].blocks) if tag in eng._tags else 0


def test_rewrites_settle_and_every_answer_is_unchanged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Engine.open(data, CFG) as eng:
        _history(eng)
        before = _answers(eng)
        read_before = eng.query(1, *SPAN).stats.blocks_read
        assert read_before > 20  # the history really left many overlapping blocks
        assert eng.compact() >= 3
        for tag in TAGS:
            n = len(eng.query(tag, *SPAN))
            assert _blocks(eng, tag) <= math.ceil(n / BP) + 1, tag
            t = eng._tags[tag]
            assert not needs_compaction(t.blocks, t.tombstones, BP)
        assert eng.query(1, *SPAN).stats.blocks_read <= math.ceil(1040 / BP) + 1
        assert _blocks(eng, 4) == 0 and not eng._tags[4].tombstones
        assert _answers(eng) == before
        stats = eng.stats()
        assert stats["blocks_compacted"] > stats["blocks_merged"] > 0
        assert eng.compact() == 0  # settled: nothing left to do
    with Engine.open(data, CFG) as eng:
        assert _answers(eng) == before
        assert all(_blocks(eng, tag) <= 7 for tag in TAGS)
        eng.rebuild_index()
    (data / "index.sqlite3").unlink()
    with Engine.open(data, CFG) as eng:  # index lost: a scan reaches the same answer
        assert _answers(eng) == before
        assert all(_blocks(eng, tag) <= 7 for tag in TAGS)
        assert not [r for r in eng.repairs if "damage" in r or "lost" in r], eng.repairs


def test_writes_after_compaction_still_win(tmp_path: Path) -> None:
    """Merged blocks are older than anything written after them, deletes included."""
    with Engine.open(tmp_path / "d", CFG) as eng:
        ts = np.arange(500, dtype=np.int64)
        for r in range(4):
            eng.write(1, ts, np.full(500, float(r)))
            eng.flush()
        eng.compact()
        eng.write(1, ts[:100], np.full(100, 9.0))
        eng.flush()
        eng.delete(1, 400, 450)
        eng.flush()
        p = eng.query(1, *SPAN)
        want = np.concatenate([np.full(100, 9.0), np.full(300, 3.0), np.full(50, 3.0)])
        assert p.timestamps.tolist() == [*range(400), *range(450, 500)]
        assert p.values.tolist() == want.tolist()
        eng.compact()
        q = eng.query(1, *SPAN)
        assert q.values.tobytes() == p.values.tobytes() and len(eng._tags[1].blocks) <= 4


def test_first_policy_keeps_the_first_write(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "d", CFG) as eng:
        eng.create_tag("keep", duplicates="first")
        tag = eng.catalog.get("keep").id
        ts = np.arange(300, dtype=np.int64)
        for r in range(3):
            eng.write(tag, ts, np.full(300, float(r)))
            eng.flush()
        before = eng.query(tag, *SPAN).values.tobytes()
        eng.compact()
        assert eng.query(tag, *SPAN).values.tobytes() == before
        assert len(eng._tags[tag].blocks) == 2


def test_a_block_sealed_during_a_round_abandons_it(tmp_path: Path) -> None:
    """A newer write overlapping the merged range must not lose to the merged points."""
    with Engine.open(tmp_path / "d", CFG) as eng:
        ts = np.arange(400, dtype=np.int64)
        for r in range(3):
            eng.write(1, ts, np.full(400, float(r)))
            eng.flush()
        comp = eng._compactor
        work = comp._snapshot(1)
        assert work is not None
        eng.write(1, ts[:10], np.full(10, 7.0))
        eng.flush()
        assert comp.compact_tag(1) is not None  # a fresh round sees the new block
        assert eng.query(1, 0, 10).values.tolist() == [7.0] * 10
        # and a round whose snapshot predates a conflicting seal is abandoned
        work = comp._snapshot(1)
        assert work is not None
        eng.write(1, ts[:10], np.full(10, 8.0))
        eng.flush()
        p = eng.query(1, *SPAN)
        bodies = comp._merge(work)
        assert bodies is not None and not comp._publish(work, bodies)
        assert eng.query(1, *SPAN).values.tobytes() == p.values.tobytes()
