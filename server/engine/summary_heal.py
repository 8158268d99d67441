"""Summaries computed by decoding: at open (missing or damaged rows) and when a query lacks one.

A summary is a cache of its block, so a missing or damaged one is never an
answer: it is recomputed from the block body (whose CRC the read checks),
held in memory and written to the index with its next transaction. Damage is
reported (it is bit rot in the index file); a missing summary is not (an index
written before summaries existed, a chunk rescanned from disk, a block written
by a path that does not summarise).
"""

from __future__ import annotations

import logging

from xtsdb.protocol.errors import CorruptionError

from .container import BlockEntry
from .index import MetaIndex
from .reader import BlockReader
from .store import BlockStore
from .summary import Summary, SummaryDamaged, SummaryOutdated, summarise, unpack

log = logging.getLogger("xtsdb.engine")
BATCH_POINTS = 4_000_000  # points decoded at once while computing summaries at open


def decode_summaries(
    reader: BlockReader, store: BlockStore, entries: list[BlockEntry]
) -> list[Summary | None]:
    """The summary of each block, from its decoded body; None for a body that fails its CRC."""
    if not entries:
        return []
    try:
        cols = reader.read([store.ref(e) for e in entries], parallel=False)
    except CorruptionError:
        if len(entries) == 1:
            return [None]
        return [s for e in entries for s in decode_summaries(reader, store, [e])]
    out: list[Summary | None] = []
    at = 0
    for e in entries:  # a step per block, not per point
        sl = slice(at, at + e.count)
        out.append(summarise(cols[0][sl], cols[1][sl], cols[2][sl], e.seq, e.body_crc))
        at += e.count
    return out


def load_at_open(
    index: MetaIndex,
    store: BlockStore,
    reader: BlockReader,
    blocks: list[BlockEntry],
    repairs: list[str],
) -> None:
    """Fill ``index.summaries`` for every live block: from its row, else by decoding.

    Raises what SQLite raises on an unreadable table (the caller rebuilds the index).
    """
    table = index.summaries
    stored: dict[tuple[int, int], Summary] = {}
    s: Summary | None
    damaged: list[tuple[int, int]] = []
    for row in index.summary_rows():
        try:
            chunk_id, idx, s = unpack(row)
        except SummaryOutdated as old:  # an older cell layout: recomputed like a missing one
            damaged.append(old.key)
            continue
        except SummaryDamaged as exc:
            # Reported whatever it names: a damaged key may have named a live block.
            repairs.append(f"index: {exc}; recomputed from the blocks (never served)")
            if len(row) > 1 and type(row[0]) is int and type(row[1]) is int:
                damaged.append((row[0], row[1]))
            continue
        stored[(chunk_id, idx)] = s
    need: list[BlockEntry] = []
    live: set[tuple[int, int]] = set()
    for e in blocks:
        if e.is_tombstone:
            continue
        key = (e.chunk_id, e.index)
        live.add(key)
        s = stored.get(key)
        if s is not None and s.matches(e):
            table.put(e, s, write=False)
        else:
            need.append(e)
    stale = [k for k in (*stored, *damaged) if k not in live]
    if stale:
        index.delete_summaries(stale)
    at = 0
    while at < len(need):  # bounded memory: an upgrade may decode a whole database
        group: list[BlockEntry] = []
        points = 0
        while at < len(need) and (not group or points + need[at].count <= BATCH_POINTS):
            group.append(need[at])
            points += need[at].count
            at += 1
        for e, got in zip(group, decode_summaries(reader, store, group), strict=True):
            if got is not None:  # a damaged body: no summary, its queries decode (and fail)
                table.put(e, got)
    if need:
        log.info("computed %d block summaries by decoding their blocks", len(need))
    index.write_summaries()
