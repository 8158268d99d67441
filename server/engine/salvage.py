"""Start-up reconciliation of damaged chunks: restore from the index, count what is lost.

:class:`~.store.BlockStore` ``load`` reads every chunk header; a chunk whose header,
states or directory are damaged comes here. The index is a cache, but a row
whose body still matches the CRC the row names (read from disk here) is good
evidence of where a block is and what it holds. In a sealed chunk the seal
record's directory check is a stronger witness: when the restored directory
matches it, the entries are written back and the chunk is whole again.
Tombstones have no body to verify; their rows are taken on the index's word
(the chunk is reported either way). Whatever no witness gives is reported with
numbers in ``store.repairs``, never dropped in silence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .container import BlockEntry, ChunkScan, ContainerFile, Geometry, crc32, entries_check

if TYPE_CHECKING:
    from .store import BlockStore

_ENTRY_NOTE = re.compile(r"directory entry \d+ (damaged|torn or damaged); ")


@dataclass
class Salvaged:
    restored: list[BlockEntry]
    lost: list[int]  # directory positions neither the disk nor the index could give
    written_back: bool  # restored entries proved by the seal check and rewritten on disk


def restore(
    cf: ContainerFile, scan: ChunkScan, rows: list[BlockEntry], positions: list[int] | None
) -> Salvaged:
    """Fill ``positions`` (every missing one if None) of ``scan.entries`` from index rows."""
    g = cf.geometry
    have = {e.index: e for e in scan.entries or []}
    by_index = {r.index: r for r in rows if r.chunk_id == scan.chunk_id}
    if positions is None:
        top = max([*have, *by_index, *scan.damaged_at, -1])
        positions = [i for i in range(top + 1) if i not in have]
    restored: list[BlockEntry] = []
    for i in positions:
        r = by_index.get(i)
        if r is None or (scan.generation and r.generation != scan.generation):
            continue
        if r.body_len < 0 or r.body_off < g.meta_bytes or r.body_off + r.body_len > g.chunk_size:
            continue
        before = [e.seq for j, e in have.items() if j < i]
        after = [e.seq for j, e in have.items() if j > i]
        if (before and r.seq <= max(before)) or (after and r.seq >= min(after)):
            continue  # a row out of the directory's seal order is not this entry
        if r.body_len and crc32(cf.read_body_unchecked(scan.slot, r)) != r.body_crc:
            continue
        restored.append(r)
        have[i] = r
    entries = sorted(have.values(), key=lambda e: e.index)
    written = False
    if scan.sealed and restored and len(entries) == scan.seal_n_blocks:
        written = entries_check(entries) == scan.seal_dir_crc
        if written:
            for e in restored:
                cf.write_entry(scan.slot, e)
            cf.sync()
    elif not scan.sealed and not scan.damaged and restored:
        # An unsealed chunk is sealed by recovery over its directory: put the
        # verified entries back first, so the seal covers them.
        for e in restored:
            cf.write_entry(scan.slot, e)
        cf.sync()
        written = True
    scan.entries = entries
    lost = [i for i in positions if i not in have]
    return Salvaged(restored, lost, written)


def unaccounted_bytes(cf: ContainerFile, scan: ChunkScan) -> int:
    """Bytes of the data region holding something no known entry accounts for.

    Bodies are packed back to back, so the gaps between known bodies (and the
    stretch after the last one, up to the last non-zero byte) are lost blocks.
    """
    g = cf.geometry
    data = cf.read_meta(scan.slot, g.chunk_size)[g.meta_bytes :]
    end = g.meta_bytes + len(data.rstrip(b"\0"))
    covered = 0
    for e in scan.entries or []:
        lo, hi = max(e.body_off, g.meta_bytes), min(e.body_off + e.body_len, end)
        covered += max(0, hi - lo)
    return max(0, end - g.meta_bytes - covered)


# -- start-up reconciliation of one chunk (called by BlockStore.load) ---------------


def fix_states(store: BlockStore, cf: ContainerFile, head: ChunkScan) -> None:
    """Rewrite state words found damaged with what the witnesses decided, and say so."""
    for flag, value in head.state_fixes:
        cf.write_state(head.slot, flag, value)
    for note in head.state_notes:
        store.repairs.append(f"chunk {head.chunk_id}: {note}; rewritten")
    if head.state_fixes:
        cf.sync()


def rescan(store: BlockStore, cf: ContainerFile, slot: int) -> ChunkScan:
    """Read a chunk's directory from disk, restore damaged entries, report, re-mirror."""
    scan = cf.scan_chunk(slot, store.instance_id)
    other = _ENTRY_NOTE.sub("", scan.anomaly)
    if scan.damaged_at:
        got = restore(cf, scan, store.index_rows(scan.chunk_id), list(scan.damaged_at))
        how = "rewritten on disk" if got.written_back else "body CRC verified"
        bad = f"chunk {scan.chunk_id}: directory entry %d " + (
            "damaged" if scan.sealed else "torn or damaged"
        )
        for e in got.restored:
            store.repairs.append(
                bad % e.index + f"; restored from the index ({how}; tag {e.tag_id}, "
                f"{e.count} points)"
            )
        fate = "its block is lost"
        if not scan.sealed:
            fate = f"if it was written after the checkpoint the WAL replays it, else {fate}"
        for i in got.lost:
            store.repairs.append(bad % i + f" and not in the index; {fate}")
        other = other.replace("directory check mismatch; ", "")  # explained above
        if got.restored and not got.written_back:
            store.salvaged[scan.chunk_id] = scan
        if not scan.sealed:
            scan.data_end = data_end(scan.entries or [], store.geometry)
    if other.strip("; "):
        store.repairs.append(f"chunk {scan.chunk_id}: {other.strip('; ')}")
    if scan.sealed:
        store.index.replace_chunk(scan)
    return scan


def verified_rows(store: BlockStore, trusted: dict[int, int]) -> list[BlockEntry]:
    """Index rows of sealed chunks, each chunk's rows checked against its seal record.

    The rows, packed without their CRCs, must give the directory check the seal
    record holds, so a damaged row (one SQLite's own checks miss, such as a
    changed tag id) is caught here at the cost of no disk read; such a chunk is
    rescanned from disk.
    """
    by_chunk: dict[int, list[BlockEntry]] = {c: [] for c in trusted}
    for e in store.index.blocks_of_chunks(trusted):
        by_chunk.setdefault(e.chunk_id, []).append(e)
    out: list[BlockEntry] = []
    n = store.geometry.n_chunks
    for chunk_id, rows in by_chunk.items():
        rows.sort(key=lambda e: e.index)
        ok = [e.index for e in rows] == list(range(len(rows)))
        if ok and chunk_id in trusted and entries_check(rows) == trusted[chunk_id]:
            out.extend(rows)
            continue
        store.repairs.append(f"chunk {chunk_id}: index rows disagreed with the disk; rescanned")
        scan = rescan(store, store.containers[chunk_id // n], chunk_id % n)
        out.extend(scan.entries or [])
    return out


def salvage_chunk(
    store: BlockStore, cf: ContainerFile, slot: int, row: tuple[int, int, int, int] | None
) -> list[BlockEntry]:
    """Blocks of a chunk whose header is damaged or blank; the slot is never reused.

    Witnesses: directory entries that pass their own CRC, and the index rows of
    the chunk, each re-verified against the body CRC it names. What neither
    gives is reported with numbers, never dropped in silence.
    """
    scan = cf.scan_chunk(slot, store.instance_id)
    got = restore(cf, scan, store.index_rows(scan.chunk_id), None)
    entries = scan.entries or []
    lost_bytes = unaccounted_bytes(cf, scan)
    if not entries and not lost_bytes and row is None and not scan.damaged_at:
        # Nothing in it: a formatting torn by a crash. The slot can be used again.
        store.free_slots.append((cf.container_no, slot, scan.generation + 1))
        return []
    known = f"; the index named {row[2]} blocks" if row is not None and row[1] else ""
    store.repairs.append(
        f"chunk {scan.chunk_id}: header damaged; {len(entries) - len(got.restored)} blocks "
        f"salvaged from its directory (each checked by its own CRC), {len(got.restored)} "
        f"restored from the index (each body CRC verified); {len(got.lost)} directory "
        f"positions lost, {lost_bytes} bytes of block bodies unaccounted for{known}; "
        "the chunk is read-only and its slot is not reused"
    )
    scan.sealed = False  # so every start rescans (and reports) it
    scan.allocated = True
    store.salvaged[scan.chunk_id] = scan
    store._index_call(store.index.replace_chunk, scan)
    return entries


def data_end(entries: list[BlockEntry], g: Geometry) -> int:
    return max((e.body_off + e.body_len for e in entries), default=g.meta_bytes)
