"""The block store: container files, the active chunk, and start-up reconciliation.

Writes go to one active chunk: the body is packed after the previous one and
its directory entry is written after it. When a body or an entry no longer
fits, the chunk is sealed (bodies and entries fsynced first, so a visible seal
always covers durable blocks) and the next free slot is allocated, in a new
container file if need be. A flush that runs out of room rolls over and
continues; it never drops points.

On open the store reads every chunk header and trusts the index only for
sealed chunks whose seal record matches the index row and whose rows give the
seal's directory check; any other chunk is rescanned from disk, and a chunk
with damaged states, header or directory entries is reconciled by
:mod:`.salvage` (never taken as free without proof). The active chunk is found
from the chunk states, never assumed to be chunk 0.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xtsdb.protocol.errors import StorageError

from .compaction_rules import (
    BLOCK_RETIRE,
    RETIRE_FIRST_TS,
    RETIRE_LAST_TS,
    is_merged,
    is_retire,
    resolve,
)
from .config import EXTENT
from .container import (
    BLOCK_TOMBSTONE,
    CODEC_NONE,
    FLAG_DEPRECATED,
    FLAG_FREE,
    FLAG_SEALED,
    BlockEntry,
    ChunkScan,
    ContainerFile,
    Geometry,
    crc32,
)
from .container_dir import container_path, open_containers
from .index import MetaIndex
from .reader import BlockRef
from .salvage import data_end, fix_states, rescan, salvage_chunk, verified_rows

log = logging.getLogger("xtsdb.engine")
# A chunk claims disk space (posix_fallocate) ahead of its writes, so that a
# block body lands in space already allocated. The step grows with the fill
# (1/64 of it, between one extent and 4 MiB): a small database does not carry
# megabytes of reserved, unwritten space (du), and a full chunk still needs
# only a few hundred calls.
RESERVE_MAX = 4 * 1024 * 1024
RESERVE_SHARE = 64


def reserve_target(end: int, chunk_size: int) -> int:
    """The chunk offset to reserve up to once its data reaches ``end``."""
    ahead = min(RESERVE_MAX, max(EXTENT, end // RESERVE_SHARE))
    return min(chunk_size, -(-(end + ahead) // EXTENT) * EXTENT)


@dataclass
class _Active:
    container: ContainerFile
    slot: int
    chunk_id: int
    generation: int
    entries: list[BlockEntry] = field(default_factory=list)
    data_end: int = 0
    reserved: int = 0  # bytes of the chunk backed by allocated disk blocks


class BlockStore:
    """Owns the container files; every mutating call happens under the engine's seal lock."""

    def __init__(self, directory: Path, geometry: Geometry, instance_id: bytes, index: MetaIndex):
        self.directory = directory
        self.geometry = geometry
        self.instance_id = instance_id
        self.index = index
        self.containers: dict[int, ContainerFile] = {}
        self.free_slots: list[tuple[int, int, int]] = []  # (container, slot, next generation)
        self.active: _Active | None = None
        self.next_seq = 1
        self.repairs: list[str] = []
        self._pending: list[BlockEntry] = []
        self.chunk_max_ts: dict[int, int] = {}
        self.chunk_tombstones: dict[int, list[BlockEntry]] = {}
        # Compaction (compaction_rules.py): each tag's newest retire record, the chunks
        # still holding entries it supersedes (retention carries the record forward
        # while any of them lives), and every entry the rule dropped at open.
        self.retires: dict[int, BlockEntry] = {}
        self.dead_chunks: dict[int, set[int]] = {}
        self.superseded: list[BlockEntry] = []
        self.retired: list[tuple[int, float]] = []  # DEPRECATED, not yet FREE: (chunk, when)
        self._use_rows = True  # False while the index is being rebuilt: it has no rows yet
        # Chunks whose blocks came partly from the index (damaged on disk): an index
        # rebuild must keep these rows rather than rescan the damaged directory.
        self.salvaged: dict[int, ChunkScan] = {}

    # -- open ------------------------------------------------------------

    def load(self, checkpoint_lsn: int, full_rebuild: bool) -> list[BlockEntry]:
        """Reconcile disk and index; return every live block entry (any order)."""
        self.containers = open_containers(
            self.directory, self.geometry, self.instance_id, self.repairs
        )
        rows = {} if full_rebuild else self.index.chunk_rows()
        self._use_rows = not full_rebuild
        trusted: dict[int, int] = {}  # chunk id -> directory check from its seal record
        live: list[BlockEntry] = []
        unsealed: list[ChunkScan] = []
        seen: set[int] = set()
        for no, cf in sorted(self.containers.items()):
            for slot in range(cf.geometry.n_chunks):
                head = cf.scan_chunk(slot, self.instance_id, entries=False)
                seen.add(head.chunk_id)
                blank = not head.allocated and not head.damaged and head.generation == 0
                if blank and cf.slot_blank(slot) and head.chunk_id not in rows:
                    self.free_slots.append((no, slot, 1))  # never allocated: all zeros
                    continue
                if head.damaged or blank:
                    live.extend(salvage_chunk(self, cf, slot, rows.get(head.chunk_id)))
                    continue
                fix_states(self, cf, head)
                if not head.allocated or head.free:
                    self.free_slots.append((no, slot, head.generation + 1))
                    continue
                if head.deprecated:
                    # Retired before a restart: no reader can hold it now, so free it.
                    cf.set_flag(slot, FLAG_FREE)
                    self.index.replace_chunk(head)
                    self.free_slots.append((no, slot, head.generation + 1))
                    continue
                want = (head.generation, 1, head.seal_n_blocks, head.seal_dir_crc)
                if head.sealed and not head.anomaly and rows.get(head.chunk_id) == want:
                    trusted[head.chunk_id] = head.seal_dir_crc
                    continue
                scan = rescan(self, cf, slot)
                if scan.sealed:
                    live.extend(scan.entries or [])
                else:
                    unsealed.append(scan)
        stale = set(rows) - seen
        for chunk_id in stale:
            self.index.replace_chunk(ChunkScan(chunk_id, 0, 0, allocated=False))
        live.extend(verified_rows(self, trusted))
        for scan in unsealed:
            live.extend(self._recover_unsealed(scan, checkpoint_lsn, len(unsealed) > 1))
        if full_rebuild or stale:
            self.index.recompute_tags()
        # Superseded entries still count for seq: a new seq must never repeat one on disk.
        self.next_seq = max((e.seq for e in live), default=0) + 1
        for e in live:
            self._track(e)
        rule = resolve(live)
        self.superseded = rule.dead + rule.orphans
        self.note_superseded(self.superseded)
        live = rule.live
        if self.active is not None:
            self.chunk_max_ts.setdefault(self.active.chunk_id, -(1 << 63))
        self.sync()
        return live

    def index_rows(self, chunk_id: int) -> list[BlockEntry]:
        """The index's rows of one chunk: a second witness when its directory is damaged."""
        if not self._use_rows:
            return []
        return self.index.blocks_of_chunks([chunk_id])

    def _track(self, e: BlockEntry) -> None:
        """Keep per-chunk facts retention needs: newest data timestamp, tombstones."""
        top = self.chunk_max_ts.get(e.chunk_id, -(1 << 63))
        if is_retire(e):
            have = self.retires.get(e.tag_id)
            if have is None or e.seq > have.seq:
                self.retires[e.tag_id] = e
        elif e.is_tombstone:
            self.chunk_tombstones.setdefault(e.chunk_id, []).append(e)
        else:
            top = max(top, e.last_ts)
        self.chunk_max_ts[e.chunk_id] = top

    def _index_call(self, fn: Callable[..., None], *args: object) -> bool:
        """Run an index update; the index is a cache, so a failure is logged, not fatal.

        The disk stays the truth: rows that did not make it are rebuilt at the next
        start, when the chunk's seal record disagrees with the index.
        """
        try:
            fn(*args)
        except sqlite3.Error as exc:
            log.warning("metadata index update failed (%s); it is reconciled at restart", exc)
            return False
        return True

    def _recover_unsealed(
        self, scan: ChunkScan, checkpoint_lsn: int, several: bool
    ) -> list[BlockEntry]:
        """Keep the valid prefix of an unsealed chunk; seal it if anything looked wrong.

        Blocks newer than the checkpoint may not have reached the disk whole
        before a power cut, so their bodies are verified here; their points are
        still in the WAL, so a cut loses nothing.
        """
        cf = self.containers[scan.container_no]
        entries = scan.entries or []
        keep = len(entries)
        for i, e in enumerate(entries):
            # A merged block's points are older than the checkpoint: its body is checked
            # too, and a torn one is cut with everything after it (its retire record too).
            if e.max_lsn > checkpoint_lsn or is_merged(e):
                body = cf.read_body_unchecked(scan.slot, e)
                if crc32(body) != e.body_crc:
                    keep = i
                    self.repairs.append(
                        f"chunk {scan.chunk_id}: block {i} torn after the checkpoint; "
                        "its points are replayed from the WAL"
                    )
                    break
        cut = keep < len(entries)
        entries = entries[:keep]
        scan.entries = entries
        if cut or scan.anomaly or several or self.active is not None:
            # Positions left damaged stay inside the seal (checked as they are on disk),
            # so every later start finds and reports them again.
            n = max((e.index for e in entries), default=-1) + 1
            dir_crc = cf.write_seal(scan.slot, entries, data_end(entries, self.geometry), n)
            cf.sync()
            cf.set_flag(scan.slot, FLAG_SEALED)
            cf.sync()
            scan.sealed, scan.seal_n_blocks, scan.seal_dir_crc = True, n, dir_crc
        else:
            end = scan.data_end
            self.active = _Active(
                cf, scan.slot, scan.chunk_id, scan.generation, [*entries], end, end
            )
        self.index.replace_chunk(scan)
        return entries

    # -- write -----------------------------------------------------------

    @property
    def max_body(self) -> int:
        """The largest body that fits in an empty chunk."""
        return self.geometry.chunk_size - self.geometry.meta_bytes

    def append(
        self,
        tag_id: int,
        codec: int,
        flags: int,
        body: bytes,
        first_ts: int,
        last_ts: int,
        count: int,
        max_lsn: int,
        mask_seq: int = 0,
    ) -> BlockEntry:
        if len(body) > self.max_body:
            raise StorageError(f"block body of {len(body)} bytes exceeds a chunk's data region")
        a = self.active
        if (
            a is None
            or len(a.entries) >= self.geometry.dir_capacity
            or a.data_end + len(body) > self.geometry.chunk_size
        ):
            a = self._roll()
        entry = BlockEntry(
            a.chunk_id,
            len(a.entries),
            tag_id,
            codec,
            flags,
            first_ts,
            last_ts,
            count,
            len(body),
            a.data_end,
            crc32(body),
            a.generation,
            self.next_seq,
            max_lsn,
            mask_seq,
        )
        end = a.data_end + len(body)
        if end > a.reserved:
            target = reserve_target(end, self.geometry.chunk_size)
            a.container.reserve(a.slot, a.reserved, target)
            a.reserved = target
        base = self.geometry.chunk_base(a.slot)
        a.container.pwrite(body, base + a.data_end)
        a.container.write_entry(a.slot, entry)
        a.entries.append(entry)
        a.data_end += len(body)
        self.next_seq += 1
        self._pending.append(entry)
        self._track(entry)
        return entry

    def append_tombstone(
        self, tag_id: int, start: int, end: int, lsn: int, mask_seq: int | None = None
    ) -> BlockEntry:
        """Record that ``[start, end)`` of a tag is deleted for every block before ``mask_seq``.

        A new delete masks every block written so far; a copy carried forward by
        retention keeps the ``mask_seq`` of the original.
        """
        mask = self.next_seq if mask_seq is None else mask_seq
        return self.append(tag_id, CODEC_NONE, BLOCK_TOMBSTONE, b"", start, end - 1, 0, lsn, mask)

    def append_retire(self, tag_id: int, mask_seq: int, lsn: int) -> BlockEntry:
        """A retire record: every entry of ``tag_id`` with ``seq < mask_seq`` is superseded."""
        flags = BLOCK_TOMBSTONE | BLOCK_RETIRE
        first, last = RETIRE_FIRST_TS, RETIRE_LAST_TS
        return self.append(tag_id, CODEC_NONE, flags, b"", first, last, 0, lsn, mask_seq)

    def note_superseded(self, entries: list[BlockEntry]) -> None:
        """Entries a retire record just superseded: they still sit in their chunks."""
        for e in entries:
            self.dead_chunks.setdefault(e.tag_id, set()).add(e.chunk_id)
            if e.is_tombstone and e in self.chunk_tombstones.get(e.chunk_id, ()):
                self.chunk_tombstones[e.chunk_id].remove(e)

    def retire_before(
        self, cutoff: int, keep_tombstone: Callable[[BlockEntry, set[int]], bool]
    ) -> tuple[set[int], list[BlockEntry]]:
        """Retire sealed chunks whose data is all older than ``cutoff``.

        In the design's order: tombstones that still mask live blocks are copied
        forward first, then the chunk is marked DEPRECATED on disk, then its index
        rows go. Marking the disk first means a rebuild never revives it. The slot
        becomes FREE later (:meth:`free_retired`), once no reader can hold it.
        Returns the retired chunk ids and the copied tombstones.
        """
        active = self.active.chunk_id if self.active else None
        victims = {c for c, top in self.chunk_max_ts.items() if c != active and top < cutoff}
        if not victims:
            return victims, []
        carried = [
            self.append_tombstone(t.tag_id, t.first_ts, t.last_ts + 1, t.max_lsn, t.mask_seq)
            for c in sorted(victims)
            for t in self.chunk_tombstones.get(c, [])
            if keep_tombstone(t, victims)
        ]
        # A retire record moves forward while a chunk it supersedes entries in survives.
        for tag, r in sorted(self.retires.items()):
            if r.chunk_id in victims and self.dead_chunks.get(tag, set()) - victims:
                carried.append(self.append_retire(tag, r.mask_seq, r.max_lsn))
        self.commit_index()
        self.sync()  # the copies are durable before the originals are retired
        n = self.geometry.n_chunks
        for c in sorted(victims):
            self.containers[c // n].set_flag(c % n, FLAG_DEPRECATED)
        self.sync()
        now = time.monotonic()
        for c in sorted(victims):
            scan = ChunkScan(c, c // n, c % n, allocated=True, deprecated=True)
            self._index_call(self.index.replace_chunk, scan)
            del self.chunk_max_ts[c]
            self.chunk_tombstones.pop(c, None)
            self.retired.append((c, now))
        for tag in list(self.dead_chunks):
            self.dead_chunks[tag] -= victims
        return victims, carried

    def free_retired(self, grace_s: float) -> int:
        """Mark retired chunks FREE once ``grace_s`` has passed; their slots are reused."""
        now, n, freed = time.monotonic(), self.geometry.n_chunks, 0
        still: list[tuple[int, float]] = []
        for c, when in self.retired:
            if now - when < grace_s:
                still.append((c, when))
                continue
            cf = self.containers[c // n]
            head = cf.scan_chunk(c % n, self.instance_id, entries=False)
            cf.set_flag(c % n, FLAG_FREE)
            cf.sync()
            self.free_slots.append((c // n, c % n, head.generation + 1))
            freed += 1
        self.retired = still
        return freed

    def commit_index(self) -> None:
        """Mirror the blocks appended since the last call into the index (one transaction)."""
        if self._pending and self._index_call(self.index.add_blocks, self._pending):
            self._pending = []  # on failure they stay pending and go with the next commit

    def _roll(self) -> _Active:
        if self.active is not None:
            self._seal(self.active)
        no, slot, generation = self._free_slot()
        cf = self.containers[no]
        chunk_id = no * self.geometry.n_chunks + slot
        cf.format_chunk(slot, chunk_id, generation, self.instance_id)
        cf.sync()
        meta = self.geometry.meta_bytes
        self.active = _Active(cf, slot, chunk_id, generation, [], meta, meta)
        scan = ChunkScan(chunk_id, no, slot, allocated=True, generation=generation)
        self._index_call(self.index.put_chunk, scan, 0, 0)
        return self.active

    def _seal(self, a: _Active) -> None:
        cf = a.container
        cf.sync()  # a seal on disk must imply durable bodies and entries
        dir_crc = cf.write_seal(a.slot, a.entries, a.data_end)
        cf.set_flag(a.slot, FLAG_SEALED)
        cf.sync()
        # Block rows first: the index must never show a sealed chunk short of rows.
        self.commit_index()
        where = (a.chunk_id, cf.container_no, a.slot)
        scan = ChunkScan(*where, allocated=True, sealed=True, generation=a.generation)
        self._index_call(self.index.put_chunk, scan, dir_crc, len(a.entries))
        self.active = None

    def _free_slot(self) -> tuple[int, int, int]:
        if self.free_slots:
            self.free_slots.sort()
            return self.free_slots.pop(0)
        no = max(self.containers, default=-1) + 1
        path = container_path(self.directory, no)
        self.containers[no] = ContainerFile.create(path, no, self.geometry, self.instance_id)
        self.free_slots.extend((no, s, 1) for s in range(1, self.geometry.n_chunks))
        return no, 0, 1

    def sync(self) -> None:
        for cf in self.containers.values():
            cf.sync()

    # -- read ------------------------------------------------------------

    def ref(self, e: BlockEntry) -> BlockRef:
        n = self.geometry.n_chunks
        cf = self.containers[e.chunk_id // n]
        offset = self.geometry.chunk_base(e.chunk_id % n) + e.body_off
        label = f"{cf.path.name} chunk {e.chunk_id} entry {e.index} (tag {e.tag_id})"
        return BlockRef(str(cf.path), offset, e.body_len, e.body_crc, e.codec, e.count, label)

    def disk_bytes(self) -> int:
        """Bytes the container files really occupy (they are sparse)."""
        return sum(os.fstat(cf.fd).st_blocks * 512 for cf in self.containers.values())

    def close(self) -> None:
        for cf in self.containers.values():
            cf.close()
