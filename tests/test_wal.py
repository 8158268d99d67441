"""Tests of the write-ahead log: real files, real fsync, and a real SIGKILL."""

from __future__ import annotations

import array
import errno
import os
import selectors
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from xtsdb.protocol.errors import (
    CorruptionError,
    DiskFull,
    DurabilityError,
    EngineClosed,
    InvalidInput,
)
from xtsdb.server.engine import wal as wal_mod
from xtsdb.server.engine.wal import Wal, read_checkpoint, write_checkpoint
from xtsdb.server.engine.wal_segment import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE

# Shared with the crash-test child process, so both sides agree on every record's bytes.
PAYLOAD_SRC = """
def payload(lsn):
    return lsn.to_bytes(8, "little") * (1 + (lsn * 7919) % 97)

def crash_payload(lsn):  # some records of hundreds of KB, so a kill can land mid-write
    return payload(lsn) * (512 if lsn % 3 == 0 else 1)
"""
_ns: dict[str, Any] = {}
exec(PAYLOAD_SRC, _ns)
payload: Callable[[int], bytes] = _ns["payload"]
crash_payload: Callable[[int], bytes] = _ns["crash_payload"]


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("wal-*.log"))


def reopen(d: Path, after: int = 0, **kw: Any) -> tuple[Wal, list[tuple[int, bytes]]]:
    w = Wal(d, **kw)
    return w, [(lsn, bytes(p)) for lsn, p in w.replay(after)]


def fill(d: Path, n_batches: int, per_batch: int = 3, **kw: Any) -> list[int]:
    """Append deterministic batches; returns the first LSN of every batch."""
    w, _ = reopen(d, **kw)
    starts = []
    for _ in range(n_batches):
        first = w.last_lsn + 1
        starts.append(first)
        assert w.append_many([payload(i) for i in range(first, first + per_batch)]) == (
            first + per_batch - 1
        )
    w.close()
    return starts


def expected(lo: int, hi: int) -> list[tuple[int, bytes]]:
    return [(i, payload(i)) for i in range(lo, hi + 1)]


def record_offsets(path: Path) -> list[int]:
    """Byte offset of every record in a segment (test-side parser of the documented format)."""
    data = path.read_bytes()
    offs, off = [], SEGMENT_HEADER_SIZE
    while off + RECORD_HEADER_SIZE <= len(data):
        offs.append(off)
        off += RECORD_HEADER_SIZE + int.from_bytes(data[off : off + 4], "little")
    return offs


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(data)


# -- round trips -----------------------------------------------------------------------------


def test_round_trip_across_rotations(tmp_path: Path) -> None:
    w, got = reopen(tmp_path, segment_bytes=600)
    assert got == [] and w.last_lsn == 0
    batch_starts = []
    for b in range(40):
        first = w.last_lsn + 1
        n = 1 + b % 4
        big = [bytes([b]) * 70_000] if b % 10 == 0 else []  # > the copy threshold: iovec path
        items = [payload(i) for i in range(first, first + n - len(big))] + big
        assert w.append_many(items) == first + n - 1
        batch_starts.append((first, items))
    assert w.size_bytes == sum(p.stat().st_size for p in segments(tmp_path))
    w.close()
    segs = segments(tmp_path)
    assert len(segs) > 5
    # Every segment starts at a batch boundary: a batch never spans segments.
    firsts = {first for first, _ in batch_starts}
    assert all(int(p.name[4:24]) in firsts for p in segs)
    w2, got = reopen(tmp_path)
    want = [(first + i, p) for first, items in batch_starts for i, p in enumerate(items)]
    assert got == want and w2.repairs == [] and w2.last_lsn == want[-1][0]


def test_payload_buffer_types(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path)
    doubles = array.array("d", [1.5, -2.25, 1e300])
    items: list[bytes | bytearray | memoryview] = [
        b"",
        bytearray(b"abc"),
        memoryview(doubles),
        memoryview(b"0123456789")[2:5],
        bytearray(100_000),
    ]
    assert w.append_many(items) == 5
    w.close()
    _, got = reopen(tmp_path)
    assert [p for _, p in got] == [b"", b"abc", doubles.tobytes(), b"234", bytes(100_000)]


def test_empty_batch_does_no_io(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path)
    assert w.append_many([]) == 0
    w.close()
    assert segments(tmp_path) == []


def test_one_fdatasync_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(wal_mod.os, "fdatasync", counting)
    w, _ = reopen(tmp_path)
    w.append_many([b"x"])  # creates the segment (fsync, not fdatasync) then one fdatasync
    calls.clear()
    w.append_many([payload(i) for i in range(100)])
    assert len(calls) == 1
    w.close()
    w2, _ = reopen(tmp_path, fsync=False)
    calls.clear()
    w2.append_many([b"y"] * 10)
    assert calls == []
    w2.sync()
    assert len(calls) == 1
    w2.close()  # nothing unsynced left: no extra sync
    assert len(calls) == 1


def test_replay_after_lsn_and_reopen_continues(tmp_path: Path) -> None:
    fill(tmp_path, 10, segment_bytes=400)  # LSNs 1..30
    w, got = reopen(tmp_path, after=17)
    assert got == expected(18, 30) and w.last_lsn == 30
    assert w.append_many([payload(31)]) == 31
    assert segments(tmp_path)[-1].name == f"wal-{31:020d}.log"  # a new segment after reopen
    w.close()
    w, got = reopen(tmp_path)
    assert got == expected(1, 31)
    w.close()
    # after_lsn beyond what exists (all of it checkpointed): last_lsn follows after_lsn.
    w, got = reopen(tmp_path, after=50)
    assert got == [] and w.last_lsn == 50
    assert w.append_many([payload(51)]) == 51
    w.close()
    _, got = reopen(tmp_path, after=50)
    assert got == expected(51, 51)


def test_replay_and_append_ordering_rules(tmp_path: Path) -> None:
    fill(tmp_path, 2)
    w = Wal(tmp_path)
    with pytest.raises(RuntimeError):
        w.append_many([b"x"])  # last_lsn unknown until replay
    assert list(w.replay(0))
    with pytest.raises(RuntimeError):
        w.replay(0)
    w.close()
    w.close()  # idempotent
    with pytest.raises(EngineClosed):
        w.append_many([b"x"])


def test_oversized_payload_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wal_mod, "MAX_RECORD_PAYLOAD", 100)
    w, _ = reopen(tmp_path)
    with pytest.raises(InvalidInput):
        w.append_many([b"a", b"b" * 101])
    assert w.append_many([b"c" * 100]) == 1  # the refusal did not fail the WAL
    w.close()


def test_concurrent_appends(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path, segment_bytes=4096, fsync=False)
    results: list[tuple[int, list[bytes]]] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(40):
            items = [f"{t}-{i}-{k}".encode() for k in range(3)]
            last = w.append_many(items)
            with lock:
                results.append((last, items))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    w.close()
    _, got = reopen(tmp_path)
    want = sorted((last - 2 + k, p) for last, items in results for k, p in enumerate(items))
    assert got == want and got[-1][0] == 6 * 40 * 3


# -- torn tails and corruption -----------------------------------------------------------------


def test_torn_tail_at_every_offset(tmp_path: Path) -> None:
    base = tmp_path / "base"
    fill(base, 12, segment_bytes=500)
    last_seg = segments(base)[-1]
    last_off = record_offsets(last_seg)[-1]
    size = last_seg.stat().st_size
    last_lsn = 36  # its payload is 16 bytes: 33 cuts keep the test fast
    assert size - last_off == RECORD_HEADER_SIZE + len(payload(last_lsn))
    for cut in range(last_off, size):  # inside the record header and inside the payload
        d = tmp_path / f"cut{cut}"
        shutil.copytree(base, d)
        os.truncate(d / last_seg.name, cut)
        w, got = reopen(d)
        assert got == expected(1, last_lsn - 1), cut
        assert (d / last_seg.name).stat().st_size == last_off
        if cut == last_off:  # ends exactly at a record boundary: nothing to repair
            assert w.repairs == []
        else:
            assert len(w.repairs) == 1 and f"offset {last_off}" in w.repairs[0]
        assert w.append_many([payload(last_lsn), payload(last_lsn + 1)]) == last_lsn + 1
        w.close()
        w, got = reopen(d)
        assert got == expected(1, last_lsn + 1) and w.repairs == []
        w.close()
        shutil.rmtree(d)


def test_torn_segment_header(tmp_path: Path) -> None:
    base = tmp_path / "base"
    fill(base, 4, segment_bytes=200)  # one batch per segment; LSNs 1..12
    last_seg = segments(base)[-1]
    for cut in range(SEGMENT_HEADER_SIZE + 1):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(base, d)
        os.truncate(d / last_seg.name, cut)
        w, got = reopen(d)
        if cut < SEGMENT_HEADER_SIZE:  # a crash right after create: the segment goes away
            assert not (d / last_seg.name).exists()
            assert "segment deleted" in w.repairs[0]
        else:  # a valid header and no records: kept, then recreated by the next append
            assert (d / last_seg.name).exists() and w.repairs == []
        assert got == expected(1, 9) and w.last_lsn == 9
        assert w.append_many([payload(10)]) == 10
        w.close()
        _, got = reopen(d)
        assert got == expected(1, 10)
        shutil.rmtree(d)


def test_damaged_header_with_records_behind_is_corruption(tmp_path: Path) -> None:
    fill(tmp_path, 4, segment_bytes=200)
    flip(segments(tmp_path)[-1], 3)  # inside the magic
    with pytest.raises(CorruptionError, match="header"):
        reopen(tmp_path)


def test_flipped_byte_in_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    fill(tmp_path, 5, segment_bytes=400)
    seg = segments(tmp_path)[-1]
    off = record_offsets(seg)[-1]
    flip(seg, off + RECORD_HEADER_SIZE + 5)
    w, got = reopen(tmp_path)
    assert got == expected(1, 14) and "CRC" in w.repairs[0]
    assert seg.stat().st_size == off


def test_replayed_stale_record_is_a_torn_tail(tmp_path: Path) -> None:
    # A record with a valid CRC but the wrong LSN (say, an old record's bytes) is not data.
    fill(tmp_path, 3)
    seg = segments(tmp_path)[0]
    data = seg.read_bytes()
    first_rec = data[SEGMENT_HEADER_SIZE : record_offsets(seg)[1]]
    seg.write_bytes(data + first_rec)
    w, got = reopen(tmp_path)
    assert got == expected(1, 9) and "LSN 1 where 10 was expected" in w.repairs[0]
    assert seg.read_bytes() == data


def test_flipped_byte_in_non_last_segment_is_corruption(tmp_path: Path) -> None:
    fill(tmp_path, 6, segment_bytes=400)
    seg = segments(tmp_path)[0]
    offs = record_offsets(seg)
    assert len(offs) >= 3 and len(segments(tmp_path)) >= 2
    mid = offs[len(offs) // 2]
    flip(seg, mid + RECORD_HEADER_SIZE + 1)
    with pytest.raises(CorruptionError) as info:
        reopen(tmp_path)
    assert seg.name in str(info.value) and f"offset {mid}" in str(info.value)
    # Data already checkpointed past that segment is not needed: it is not even read.
    last_of_first = int(segments(tmp_path)[1].name[4:24]) - 1
    _, got = reopen(tmp_path, after=last_of_first)
    assert got == expected(last_of_first + 1, 18)


def test_gap_between_segments(tmp_path: Path) -> None:
    fill(tmp_path, 5, segment_bytes=100)  # one batch (3 records) per segment
    segs = segments(tmp_path)
    segs[2].unlink()  # LSNs 7..9
    with pytest.raises(CorruptionError, match=r"7\.\.9 are missing"):
        reopen(tmp_path)
    with pytest.raises(CorruptionError, match="missing"):
        reopen(tmp_path, after=8)
    _, got = reopen(tmp_path, after=9)  # the gap is all checkpointed: harmless
    assert got == expected(10, 15)


def test_foreign_instance_is_corruption(tmp_path: Path) -> None:
    fill(tmp_path, 2, instance_id=b"A" * 16)
    with pytest.raises(CorruptionError, match="instance"):
        reopen(tmp_path, instance_id=b"B" * 16)
    _, got = reopen(tmp_path, instance_id=b"A" * 16)
    assert got == expected(1, 6)


# -- recycle and checkpoint ---------------------------------------------------------------------


def test_recycle(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path, segment_bytes=100)
    for first in range(1, 31, 3):  # ten segments of three records
        w.append_many([payload(i) for i in range(first, first + 3)])
    assert len(segments(tmp_path)) == 10
    size = w.size_bytes
    assert w.recycle(8) == 2  # 1..3 and 4..6 go; 7..9 still holds LSN 9 > 8
    assert segments(tmp_path)[0].name == f"wal-{7:020d}.log"
    assert w.size_bytes < size
    assert w.recycle(8) == 0
    write_checkpoint(tmp_path, 9)
    assert w.recycle(read_checkpoint(tmp_path)) == 1
    assert w.recycle(10**9) == 7  # all checkpointed: the current segment goes too
    assert segments(tmp_path) == []
    assert w.append_many([payload(31)]) == 31  # numbering goes on in a new segment
    assert [p.name for p in segments(tmp_path)] == [f"wal-{31:020d}.log"]
    w.close()
    w, got = reopen(tmp_path, after=30)
    assert got == expected(31, 31)
    assert w.size_bytes == sum(p.stat().st_size for p in segments(tmp_path))


def test_checkpoint_file(tmp_path: Path) -> None:
    assert read_checkpoint(tmp_path) == 0
    write_checkpoint(tmp_path, 123)
    assert read_checkpoint(tmp_path) == 123
    write_checkpoint(tmp_path, 2**63)
    assert read_checkpoint(tmp_path) == 2**63
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no temp file left
    path = tmp_path / "checkpoint"
    good = path.read_bytes()
    for i in range(len(good)):
        flip(path, i)
        with pytest.raises(CorruptionError):
            read_checkpoint(tmp_path)
        path.write_bytes(good)
    path.write_bytes(good[:-1])
    with pytest.raises(CorruptionError):
        read_checkpoint(tmp_path)


# -- I/O failures ---------------------------------------------------------------------------


def test_failed_fsync_fails_the_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w, _ = reopen(tmp_path)
    w.append_many([payload(1), payload(2)])
    seg = segments(tmp_path)[0]
    size = seg.stat().st_size

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(wal_mod.os, "fdatasync", broken)
    with pytest.raises(DurabilityError, match="Input/output"):
        w.append_many([payload(3), payload(4)])
    assert seg.stat().st_size == size  # the unacknowledged batch was cut back off
    monkeypatch.undo()
    with pytest.raises(DurabilityError, match="failed earlier"):
        w.append_many([payload(5)])  # even though fsync works again
    with pytest.raises(DurabilityError):
        w.sync()
    assert w.last_lsn == 2
    w.close()
    w, got = reopen(tmp_path)
    assert got == expected(1, 2)
    assert w.append_many([payload(3)]) == 3
    w.close()


def test_enospc_mid_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w, _ = reopen(tmp_path)
    w.append_many([payload(1)])
    seg = segments(tmp_path)[0]
    size = seg.stat().st_size
    real = os.pwritev

    def half_then_full(fd: int, bufs: list[memoryview], offset: int) -> int:
        if offset > size:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, [bufs[0][: max(1, len(bufs[0]) // 2)]], offset)  # a short write

    monkeypatch.setattr(wal_mod.os, "pwritev", half_then_full)
    with pytest.raises(DiskFull):
        w.append_many([payload(2), payload(3)])
    assert seg.stat().st_size == size
    monkeypatch.undo()
    # Nothing reached an fsync and the half batch was cut away: once space is back
    # the WAL goes on, reusing the LSNs of the records that never existed.
    assert not w.failed
    assert w.append_many([payload(2)]) == 2
    w.close()
    _, got = reopen(tmp_path)
    assert got == expected(1, 2)


# -- a real crash -------------------------------------------------------------------------------

CHILD = (
    PAYLOAD_SRC
    + """
import sys
from xtsdb.server.engine.wal import Wal
w = Wal(sys.argv[1], segment_bytes=1 << 20)
for _ in w.replay(0):
    pass
while True:
    first = w.last_lsn + 1
    last = w.append_many([crash_payload(i) for i in range(first, first + 1 + first % 5)])
    print(last, flush=True)
"""
)


def run_and_kill(d: Path, want_lines: int, max_seconds: float) -> list[int]:
    """Start a writer, SIGKILL it once it acknowledged enough batches; return its acks."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(d)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = b""
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + max_seconds
        while out.count(b"\n") < want_lines and time.monotonic() < deadline:
            if sel.select(timeout=0.1):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
    finally:
        proc.kill()  # SIGKILL to this child only
        proc.wait()
    out += proc.stdout.read()  # lines printed (so acknowledged) before the kill landed
    proc.stdout.close()
    assert proc.returncode == -9, proc.returncode
    return [int(line) for line in out.split(b"\n")[:-1]]  # a cut-off last line is no ack


def test_sigkill_loses_no_acknowledged_record(tmp_path: Path) -> None:
    # Each round kills a writer at a random point (sometimes mid-write: the kernel stops a
    # large write between pages, leaving a real torn tail), then checks the survivors. The
    # next writer replays (truncating a torn tail) and continues on a new segment.
    acked_max = 0
    for _round in range(4):
        acks = run_and_kill(tmp_path, want_lines=40, max_seconds=5.0)
        assert acks, "the writer acknowledged nothing"
        assert acks == sorted(acks) and acks[0] > acked_max
        acked_max = acks[-1]
        w, got = reopen(tmp_path)
        assert [lsn for lsn, _ in got] == list(range(1, len(got) + 1))  # no gap, no loss
        assert all(p == crash_payload(lsn) for lsn, p in got)
        assert got[-1][0] >= acked_max
        w.close()
    assert len(segments(tmp_path)) > 4  # rotations happened under the kills
