"""Which directory entries compaction has superseded: the rule readers and recovery apply.

Compaction of a tag writes its merged blocks, fsyncs them, then appends one
**retire record**: a body-less directory entry saying "every entry of this tag
with ``seq < mask_seq`` is superseded". Until that record is on disk the merged
blocks are *pending*: each carries the same ``mask_seq`` as the record that
will validate it, and a merged block whose record is absent is ignored. So a
crash at any point leaves the old set or the new set, never both counted:

* before the retire record is durable: the merged blocks are orphans (no
  record names their ``mask_seq``) and are ignored; the old entries stand;
* after: every old entry has ``seq < mask_seq`` and is ignored; the merged
  blocks (``seq >= mask_seq``, their record present) stand.

The record is flagged TOMBSTONE as well, over an empty time range
(``first_ts = 1 > last_ts = 0``): an xtsdb that predates compaction reads it
as a delete of nothing, and still answers every query the same (the merged
blocks are newer and hold the resolved points).

Only the newest retire record of a tag matters: a later compaction's snapshot
held every block the earlier one left, so its ``mask_seq`` is higher and
covers the earlier record too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .container import BlockEntry

BLOCK_RETIRE = 0x04  # a retire record (also flagged BLOCK_TOMBSTONE for older readers)
BLOCK_MERGED = 0x08  # a data block written by compaction; mask_seq names its retire record
RETIRE_FIRST_TS, RETIRE_LAST_TS = 1, 0  # an empty range: a tombstone deleting nothing


def is_retire(e: BlockEntry) -> bool:
    return bool(e.flags & BLOCK_RETIRE)


def is_merged(e: BlockEntry) -> bool:
    return bool(e.flags & BLOCK_MERGED) and not e.flags & BLOCK_RETIRE


@dataclass
class Superseded:
    """The outcome of the rule over a whole directory."""

    live: list[BlockEntry] = field(default_factory=list)  # data blocks and tombstones
    retires: dict[int, BlockEntry] = field(default_factory=dict)  # newest record per tag
    dead: list[BlockEntry] = field(default_factory=list)  # superseded entries (on disk)
    orphans: list[BlockEntry] = field(default_factory=list)  # merged, record never written


def resolve(entries: list[BlockEntry]) -> Superseded:
    """Split ``entries`` (any order) by the retire rule above."""
    out = Superseded()
    for e in entries:
        if is_retire(e):
            have = out.retires.get(e.tag_id)
            if have is None or e.seq > have.seq:
                out.retires[e.tag_id] = e
    for e in entries:
        r = out.retires.get(e.tag_id)
        if is_retire(e):
            if r is not e:
                out.dead.append(e)
        elif r is not None and e.seq < r.mask_seq:
            out.dead.append(e)
        elif is_merged(e) and (r is None or e.mask_seq != r.mask_seq):
            out.orphans.append(e)
        else:
            out.live.append(e)
    return out
