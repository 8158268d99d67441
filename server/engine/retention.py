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

if TYPE_CHECKING:
    from .engine import Engine


def apply_retention(engine: Engine, now_us: int | None = None, grace_s: float | None = None) -> int:
    """Retire expired chunks now; returns how many were retired."""
    cfg = engine.config
    if cfg.retention_us <= 0:
        return 0
    now = time.time_ns() // 1000 if now_us is None else now_us
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
                        t.replace_blocks(blocks, tombs)
                        engine._last.pop(tag_id, None)
        store.free_retired(cfg.retention_grace_s if grace_s is None else grace_s)
    return len(victims)
