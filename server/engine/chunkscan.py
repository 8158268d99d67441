"""Reading one chunk's meta region: states decided by witnesses, the directory, damage found.

Absence is the most dangerous answer a store can give, so nothing here takes
"no data" from a single byte. A chunk state word that is neither set nor unset
is decided by the witnesses in the same meta region: a valid seal record means
sealed (and allocated), any valid directory entry means allocated, FREE without
DEPRECATED is impossible. In an unsealed chunk a directory entry that fails its
CRC ends the directory only when nothing valid follows it (a torn tail); if
valid entries with a later ``seq`` follow, the entry is damage, reported in
``damaged_at`` and skipped, and the later entries are kept. What can be taken
from the index (a second witness) is up to the block store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xtsdb.protocol.errors import CorruptionError

from .container import (
    CHUNK_HEADER,
    CHUNK_MAGIC,
    DIR_OFFSET,
    ENTRY_SIZE,
    FLAG_ALLOCATED,
    FLAG_DEPRECATED,
    FLAG_FREE,
    FLAG_NAMES,
    FLAG_SEALED,
    FLAGS_OFFSET,
    FORMAT_VERSION,
    SEAL_OFFSET,
    SEAL_RECORD,
    SET_WORDS,
    STATE_WORD,
    U32,
    UNSET_WORD,
    BlockEntry,
    ChunkScan,
    Geometry,
    crc32,
    dir_check,
)

if TYPE_CHECKING:
    from .container import ContainerFile

SET, UNSET, DAMAGED = "set", "unset", "damaged"
_HEAD = CHUNK_HEADER.size + 4


def state_words(meta: bytes) -> list[str]:
    """Each of the four state words: set, unset or damaged."""
    out = []
    for flag in range(4):
        word = meta[FLAGS_OFFSET + flag * STATE_WORD : FLAGS_OFFSET + (flag + 1) * STATE_WORD]
        out.append(SET if word == SET_WORDS[flag] else UNSET if word == UNSET_WORD else DAMAGED)
    return out


def scan_chunk(cf: ContainerFile, slot: int, instance_id: bytes, *, entries: bool) -> ChunkScan:
    g = cf.geometry
    chunk_id = cf.container_no * g.n_chunks + slot
    meta = cf.read_meta(slot, None if entries else DIR_OFFSET)
    scan = ChunkScan(chunk_id, cf.container_no, slot, allocated=False)
    head = meta[: CHUNK_HEADER.size]
    if head[:8] != CHUNK_MAGIC or U32.unpack_from(meta, CHUNK_HEADER.size)[0] != crc32(head):
        # Not blank, so it was allocated once: the header is damaged (or its formatting
        # torn). A blank header is "never allocated" only if the rest agrees.
        scan.damaged = any(meta[:_HEAD])
        if entries:
            _salvage_entries(g, scan, memoryview(meta))
            scan.damaged = scan.damaged or bool(scan.entries) or any(meta[_HEAD:])
            scan.allocated = scan.damaged
        return scan
    _, version, _, generation, stored_id, inst = CHUNK_HEADER.unpack(head)
    if version != FORMAT_VERSION or inst != instance_id or stored_id != chunk_id:
        raise CorruptionError(f"{cf.path.name} slot {slot}: chunk header does not match")
    scan.generation = generation
    states = state_words(meta)
    if (DAMAGED in states or states[FLAG_ALLOCATED] == UNSET) and not entries:
        # The directory is a witness: read it. (A valid header whose ALLOCATED word
        # is unset is a torn formatting, rare; it must hold no data to be free.)
        meta = cf.read_meta(slot)
        entries = True
    rec = meta[SEAL_OFFSET : SEAL_OFFSET + SEAL_RECORD.size + 4]
    seal_ok = U32.unpack_from(rec, SEAL_RECORD.size)[0] == crc32(rec[: SEAL_RECORD.size])
    if seal_ok:
        scan.seal_n_blocks, scan.data_end, _, _, scan.seal_dir_crc = SEAL_RECORD.unpack_from(rec)
        seal_ok = 0 <= scan.seal_n_blocks <= g.dir_capacity
    if entries and (DAMAGED in states or states[FLAG_ALLOCATED] == UNSET):
        probe = ChunkScan(chunk_id, cf.container_no, slot, True, generation=generation)
        _scan_entries(g, probe, memoryview(meta))
        has_data = bool(probe.entries) or bool(probe.damaged_at)
    else:
        has_data = False
    _decide_states(scan, states, seal_ok, has_data)
    if scan.sealed and not seal_ok:
        # The SEALED word is set but the record (in the same sector, written before
        # it) is not valid: damage. Unsealed, the chunk is rescanned and sealed again.
        scan.sealed = False
        scan.anomaly += "seal record torn or damaged; "
    if not scan.sealed:
        scan.seal_n_blocks, scan.seal_dir_crc = -1, 0
    if entries:
        _scan_entries(g, scan, memoryview(meta))
    return scan


def _decide_states(scan: ChunkScan, states: list[str], seal_ok: bool, has_data: bool) -> None:
    """Set the scan's states; a damaged or impossible word is decided on the safe side."""
    a, s, d, f = states
    scan.allocated = a in (SET, DAMAGED) or (a == UNSET and (seal_ok or has_data))
    scan.sealed = s == SET or (s == DAMAGED and seal_ok)
    scan.deprecated = d == SET or (d == DAMAGED and f == SET)
    scan.free = scan.deprecated and f == SET
    decided = (scan.allocated, scan.sealed, scan.deprecated, scan.free)
    for flag, (word, value) in enumerate(zip(states, decided, strict=True)):
        if word == DAMAGED or (word == UNSET and value) or (word == SET and not value):
            why = {
                FLAG_ALLOCATED: "the chunk header is valid" if a == DAMAGED else "it holds data",
                FLAG_SEALED: "a valid seal record" if value else "no valid seal record",
                FLAG_DEPRECATED: "FREE is set" if value else "FREE is not set: data is kept",
                FLAG_FREE: "DEPRECATED is set" if value else "DEPRECATED is not set",
            }[flag]
            scan.state_fixes.append((flag, value))
            scan.state_notes.append(
                f"{FLAG_NAMES[flag]} state {word}; taken as {'set' if value else 'unset'} ({why})"
            )
    if scan.state_notes:
        scan.anomaly += "chunk state damaged; "


def _entry_at(meta: memoryview, chunk_id: int, i: int) -> BlockEntry | None:
    off = DIR_OFFSET + i * ENTRY_SIZE
    return BlockEntry.unpack(meta[off : off + ENTRY_SIZE], chunk_id, i)


def _plausible(g: Geometry, e: BlockEntry | None, generation: int, last_seq: int) -> bool:
    return (
        e is not None
        and e.generation == generation
        and e.seq > last_seq
        and e.body_off >= g.meta_bytes
        and e.body_off + e.body_len <= g.chunk_size
    )


def _used_positions(g: Geometry, meta: memoryview) -> int:
    """Directory positions up to the last one holding a non-zero byte."""
    region = bytes(meta[DIR_OFFSET : DIR_OFFSET + g.dir_capacity * ENTRY_SIZE])
    return -(-len(region.rstrip(b"\0")) // ENTRY_SIZE)


def _salvage_entries(g: Geometry, scan: ChunkScan, meta: memoryview) -> None:
    """Directory entries of a chunk whose header is damaged: each has its own CRC.

    Formatting zeroes the whole meta region, so entries of an earlier generation
    cannot linger; the generation most entries agree on is the chunk's.
    """
    found = []
    for i in range(_used_positions(g, meta)):
        e = _entry_at(meta, scan.chunk_id, i)
        if e is not None and _plausible(g, e, e.generation, -1):
            found.append(e)
    if found:
        gens = [e.generation for e in found]
        scan.generation = max(set(gens), key=gens.count)
        found = [e for e in found if e.generation == scan.generation]
        top = max(e.index for e in found)
        have = {e.index for e in found}
        scan.damaged_at = [i for i in range(top) if i not in have]
    scan.entries = found


def _scan_entries(g: Geometry, scan: ChunkScan, meta: memoryview) -> None:
    found: list[BlockEntry] = []
    used = _used_positions(g, meta)
    limit = scan.seal_n_blocks if scan.sealed else used
    last_seq, data_end = -1, g.meta_bytes
    for i in range(limit):
        e = _entry_at(meta, scan.chunk_id, i)
        if e is None or not _plausible(g, e, scan.generation, last_seq):
            if scan.sealed or any(
                _plausible(g, _entry_at(meta, scan.chunk_id, j), scan.generation, last_seq)
                for j in range(i + 1, used)
            ):
                # Each entry carries its own CRC, so the others stay trustworthy;
                # the damaged block's points are restored from the index or reported.
                scan.anomaly += f"directory entry {i} damaged; "
                scan.damaged_at.append(i)
                continue
            if i < used:
                # Non-zero bytes that are no entry: a write torn by a crash (its block is
                # after the checkpoint, so in the WAL) or damage. The index may know it.
                scan.anomaly += f"directory entry {i} torn or damaged; "
                scan.damaged_at.append(i)
            break
        found.append(e)
        last_seq = e.seq
        data_end = max(data_end, e.body_off + e.body_len)
    if scan.sealed:
        if dir_check(meta[DIR_OFFSET:], scan.seal_n_blocks) != scan.seal_dir_crc:
            scan.anomaly += "directory check mismatch; "
    else:
        scan.data_end = data_end
    scan.entries = found
