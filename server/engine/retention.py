"""Retention: retiring whole chunks whose data is older than the retention window.

Space is reclaimed chunk by chunk, as the storage design prescribes: a chunk
whose newest data point is older than the cutoff is marked DEPRECATED on disk,
its index rows are dropped, and after a grace period (so no query still reading
it is cut short) it is marked FREE and its slot is reused by the next chunk.
A chunk mixing old and new data stays until its newest point expires, so data
slightly older than the window can still be returned for a while.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .container import BlockEntry
from .points import TS_LIMIT

if TYPE_CHECKING:
    from .engine import Engine


def apply_retention(engine: Engine, now_us: int | None = None, grace_s: float | None = None) -> int:
    """Trim tags with their own retention, retire expired chunks; returns chunks retired."""
    now = time.time_ns() // 1000 if now_us is None else now_us
    _per_tag_retention(engine, now)
    cfg = engine.config
    if cfg.retention_us <= 0:
        return 0
    cutoff = now - cfg.retention_us
    store = engine._store
    with engine._seal_lock:
        with engine._state:
            by_tag = {tag: list(t.blocks) for tag, t in engine._tags.items()}

        def still_masks(tomb: BlockEntry, victims: set[int]) -> bool:
            # A tombstone is copied forward only while it masks a block that outlives
            # the retired chunks; otherwise it has nothing left to hide.
            return any(
                b.seq < tomb.mask_seq
                and b.first_ts <= tomb.last_ts
                and b.last_ts >= tomb.first_ts
                and b.chunk_id not in victims
                for b in by_tag.get(tomb.tag_id, ())
            )

        victims, carried = store.retire_before(cutoff, still_masks)
        if victims:
            with engine._state:
                for tag_id, t in engine._tags.items():
                    blocks = [b for b in t.blocks if b.chunk_id not in victims]
                    tombs = [x for x in t.tombstones if x.chunk_id not in victims]
                    tombs += [x for x in carried if x.tag_id == tag_id]
                    if len(blocks) != len(t.blocks) or tombs != t.tombstones:
                        engine._totals.add((b for b in t.blocks if b.chunk_id in victims), -1)
                        t.replace_blocks(blocks, tombs)
                        engine._last.pop(tag_id, None)
        store.free_retired(cfg.retention_grace_s if grace_s is None else grace_s)
    return len(victims)


def _per_tag_retention(engine: Engine, now: int) -> None:
    """Tags with their own retention lose old points through an ordinary delete.

    A tombstone costs a directory entry, so a tag is trimmed only once a tenth
    of its window has expired since the last trim: points up to 10 % older than
    the window may still be returned. The space comes back when the chunks
    holding them retire.
    """
    for info in engine.catalog.all():
        if info.retention_us <= 0:
            continue
        cutoff = now - info.retention_us
        with engine._state:
            t = engine._tags.get(info.id)
            if t is None:
                continue
            trimmed = max((x.last_ts + 1 for x in t.tombstones if x.first_ts <= -TS_LIMIT + 1),
                          default=-TS_LIMIT)  # fmt: skip
            oldest = min((b.first_ts for b in t.blocks), default=TS_LIMIT)
            for buf in (*t.sealing, t.active):
                for p in buf.parts:
                    if p[0].shape[0]:
                        oldest = min(oldest, int(p[0].min()))
        if oldest < cutoff and cutoff - trimmed >= info.retention_us // 10:
            engine.delete(info.id, -TS_LIMIT, cutoff)
