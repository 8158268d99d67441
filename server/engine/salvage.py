"""Restoring damaged directory entries from the index, and counting what could not be.

The index is a cache, but a row whose body still matches the CRC the row names
(read from disk here) is good evidence of where a block is and what it holds.
In a sealed chunk the seal record's directory check is a stronger witness: when
the restored directory matches it, the entries are written back to disk and the
chunk is whole again. Tombstones have no body to verify; their rows are taken
on the index's word only where a seal check confirms them or no other witness
exists (the chunk is then reported either way).
"""

from __future__ import annotations

from dataclasses import dataclass

from .container import BlockEntry, ChunkScan, ContainerFile, crc32, entries_check


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
