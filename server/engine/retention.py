"""Retention: retiring whole chunks whose data is older than the retention window.

Space is reclaimed chunk by chunk, as the storage design prescribes: a chunk
whose newest data point is older than the cutoff is marked DEPRECATED on disk,
its index rows are dropped, and after a grace period (so no query still reading
it is cut short) it is marked FREE and its slot is reused by the next chunk.
A chunk mixing old and new data stays until its newest point expires, so data
slightly older than the window can still be returned for a while.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .catalog import Catalog
from .compaction_rules import is_retire
from .container import BlockEntry
from .membuffer import time_span
from .points import TS_LIMIT
from .state import EngineState
from .store import BlockStore


@dataclass(frozen=True)
class Retention:
    """What retention touches: the in-memory view, the store, the catalog's settings.

    ``seal_lock`` keeps sealing out while chunks retire; ``delete`` is the
    engine's logged delete (a tag's own retention is an ordinary delete).
    """

    state: EngineState
    store: BlockStore
    catalog: Catalog
    seal_lock: threading.Lock
    delete: Callable[[int, int, int], int]
    retention_us: int
    grace_s: float

    def apply(self, now_us: int | None = None, grace_s: float | None = None) -> int:
        """Trim tags with their own retention, retire expired chunks; returns chunks retired."""
        now = time.time_ns() // 1000 if now_us is None else now_us
        self._per_tag(now)
        if self.retention_us <= 0:
            return 0
        return self._retire(now - self.retention_us, self.grace_s if grace_s is None else grace_s)

    def _retire(self, cutoff: int, grace_s: float) -> int:
        state, store = self.state, self.store
        with self.seal_lock:
            with state.lock:
                by_tag = {tag: list(t.blocks) for tag, t in state.tags.items()}

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
                with state.lock:
                    for tag_id, t in state.tags.items():
                        blocks = [b for b in t.blocks if b.chunk_id not in victims]
                        tombs = [x for x in t.tombstones if x.chunk_id not in victims]
                        tombs += [x for x in carried if x.tag_id == tag_id and not is_retire(x)]
                        if len(blocks) != len(t.blocks) or tombs != t.tombstones:
                            state.totals.add((b for b in t.blocks if b.chunk_id in victims), -1)
                            t.replace_blocks(blocks, tombs)
                            state.last.forget(tag_id)
            store.free_retired(grace_s)
        return len(victims)

    def _per_tag(self, now: int) -> None:
        """Tags with their own retention lose old points through an ordinary delete.

        A tombstone costs a directory entry, so a tag is trimmed only once a tenth
        of its window has expired since the last trim: points up to 10 % older than
        the window may still be returned. The space comes back when the chunks
        holding them retire.
        """
        for info in self.catalog.all():
            if info.retention_us <= 0:
                continue
            cutoff = now - info.retention_us
            with self.state.lock:
                t = self.state.tags.get(info.id)
                if t is None:
                    continue
                trims = [x.last_ts + 1 for x in t.tombstones if x.first_ts <= -TS_LIMIT + 1]
                trimmed = max(trims, default=-TS_LIMIT)
                oldest = min((b.first_ts for b in t.blocks), default=TS_LIMIT)
                span = time_span((*t.sealing, t.active))
                if span is not None:
                    oldest = min(oldest, span[0])
            if oldest < cutoff and cutoff - trimmed >= info.retention_us // 10:
                self.delete(info.id, -TS_LIMIT, cutoff)
