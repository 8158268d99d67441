"""The parts of cluster mode that need no NATS: frames, placement, the applied file, the
catalog's shared ids, backups of a cluster node."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats_harness import nats_cluster_fixture  # noqa: F401

from xtsdb.protocol.errors import CorruptionError, InvalidInput
from xtsdb.server.cluster import logframes, placement
from xtsdb.server.cluster.applied import FILE_NAME, AppliedSeqs, read_applied
from xtsdb.server.engine import Engine, backup
from xtsdb.server.engine.wal_records import WriteBatch


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=300),
    st.integers(1, 9),
    st.sampled_from([300, 1000, 1 << 20]),
)
def test_split_keeps_every_point_once_in_order_per_tag(
    tags: list[int], shards: int, max_bytes: int
) -> None:
    n = len(tags)
    batch = WriteBatch.build(np.array(tags, np.uint32), np.arange(n), np.arange(n) * 0.5)
    parts = logframes.split(batch, shards, max_bytes)
    got: dict[int, list[tuple[int, float]]] = {}
    for shard, part in parts:
        assert len(logframes.encode(part)) <= max_bytes
        decoded = logframes.decode(logframes.encode(part))
        assert isinstance(decoded, WriteBatch)
        for tag, sl in decoded.runs():
            assert tag % shards == shard
            pts = zip(decoded.timestamps[sl].tolist(), decoded.values[sl].tolist(), strict=True)
            got.setdefault(tag, []).extend(pts)
    want: dict[int, list[tuple[int, float]]] = {}
    for i, tag in enumerate(tags):
        want.setdefault(tag, []).append((i, i * 0.5))
    assert got == want


def test_delete_frames_and_damaged_frames() -> None:
    frame = logframes.Delete(7, -5, 10**12)
    assert logframes.decode(logframes.encode(frame)) == frame
    for bad in (b"", b"Q123", b"D12", b"W" + b"\0" * 7):
        with pytest.raises(CorruptionError):
            logframes.decode(bad)


def test_placement_moves_only_the_shards_of_a_node_that_left() -> None:
    nodes = [f"n{i}" for i in range(5)]
    before = placement.placement(256, nodes, 2)
    assert all(len(o) == 2 and len(set(o)) == 2 for o in before.values())
    load = {n: sum(n in o for o in before.values()) for n in nodes}
    assert min(load.values()) > 0.6 * 256 * 2 / 5  # spread, not piled on one node
    after = placement.placement(256, [n for n in nodes if n != "n3"], 2)
    for shard, owners in before.items():
        if "n3" not in owners:
            assert after[shard] == owners  # untouched: no replica has to catch up
        else:
            kept = [o for o in owners if o != "n3"]
            assert kept[0] in after[shard] and "n3" not in after[shard]
    assert placement.placement(256, nodes, 2) == before  # comes back to the same places


def test_applied_file_survives_a_torn_slot(tmp_path: Path) -> None:
    seqs = AppliedSeqs(tmp_path, 4)
    for gen in range(1, 6):
        seqs.record(gen % 4, gen * 10)
        seqs.save()
    seqs.record(0, 999)  # recorded, never saved: not on disk
    seqs.close()
    saved = read_applied(tmp_path)
    assert saved == {0: 40, 1: 50, 2: 20, 3: 30}
    path = tmp_path / FILE_NAME
    raw = bytearray(path.read_bytes())
    newest = (5 % 2) * (len(raw) // 2)  # generation 5 went to slot 1
    raw[newest + 30] ^= 0x40  # a torn write of the newest slot
    path.write_bytes(bytes(raw))
    assert read_applied(tmp_path) == {0: 40, 1: 10, 2: 20, 3: 30}  # the one before
    path.write_bytes(os.urandom(len(raw)))  # both slots gone: start from 0, never invent
    assert read_applied(tmp_path) == {}
    fresh = AppliedSeqs(tmp_path, 4)
    assert fresh.get(1) == 0
    fresh.save()  # a valid file of 4 shards again
    with pytest.raises(ValueError, match="another cluster"):
        AppliedSeqs(tmp_path, 5)


class SharedIds:
    """A real allocator over a dict, standing in for the KV bucket (tested with NATS in
    test_cluster_routing): ids from 1000 up, the first settings win."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, dict[str, Any]]] = {}

    def __call__(self, items: Any) -> list[Any]:
        out = []
        for name, meta in items:
            made = name not in self.entries
            if made:
                self.entries[name] = (1000 + len(self.entries), meta)
            out.append((*self.entries[name], made))
        return out


def test_engine_catalog_takes_ids_from_the_shared_catalog(tmp_path: Path) -> None:
    shared = SharedIds()
    shared([("made.elsewhere", {"unit": "bar"})])
    engine = Engine.open(tmp_path / "d")
    try:
        engine.catalog.allocator = shared
        assert engine.create_tag("a", unit="m").id == 1001
        with pytest.raises(InvalidInput, match="exists already"):
            engine.create_tag("made.elsewhere")  # named on another node first
        assert engine.catalog.get("made.elsewhere").unit == "bar"  # mirrored as it is there
        got = engine.create_tags([("b", {}), ("a", {}), ("bad\0name", {}), ("b", {})])
        assert [g.id if not isinstance(g, InvalidInput) else None for g in got] == [
            1002,
            1001,
            None,
            1002,
        ]
        assert engine.get_or_create_tag("c") == 1003
        assert engine.adopt_tag("d", 1004, {}).id == 1004
        assert engine.adopt_tag("d", 1004, {}).id == 1004  # the mirror seeing it twice
        with pytest.raises(InvalidInput, match="did not start empty"):
            engine.adopt_tag("e", 1004, {})
    finally:
        engine.close()
    engine = Engine.open(tmp_path / "d")  # durable, with the shared ids
    try:
        assert {t.name: t.id for t in engine.catalog.all()} == {
            "a": 1001,
            "made.elsewhere": 1000,
            "b": 1002,
            "c": 1003,
            "d": 1004,
        }
    finally:
        engine.close()


def test_backup_copies_the_applied_sequences(tmp_path: Path) -> None:
    engine = Engine.open(tmp_path / "d")
    try:
        seqs = AppliedSeqs(tmp_path / "d", 3)
        seqs.record(2, 77)
        seqs.save()
        engine.write(5, np.arange(10), np.arange(10.0))
        backup(engine, tmp_path / "copy")
    finally:
        engine.close()
    assert read_applied(tmp_path / "copy") == {0: 0, 1: 0, 2: 77}


def test_catalog_frames_give_every_node_the_same_catalog(tmp_path: Path) -> None:
    """The catalog log's frames, applied in order, decide alike on every node; applying a
    suffix again (a node that crashed before saving its sequence) changes nothing."""
    from xtsdb.server.cluster.catalog_log import NAMED_BASE, apply_frame

    log = [
        {"op": "create", "name": "a", "meta": {"unit": "m"}},
        {"op": "create", "name": "b", "meta": {}},
        {"op": "create", "name": "a", "meta": {"unit": "s"}},  # a second creation: loses
        {"op": "rename", "id": NAMED_BASE + 1, "name": "c"},
        {"op": "rename", "id": NAMED_BASE + 2, "name": "c"},  # taken at that point: nothing
        {"op": "update", "id": NAMED_BASE + 2, "meta": {"unit": "V"}},
        {"op": "create", "name": "a", "meta": {}},  # the name is free again
        {"op": "remove", "id": NAMED_BASE + 2},
        {"op": "remove", "id": NAMED_BASE + 99},  # unknown: nothing
    ]

    def catalog_of(engine: Engine) -> set[Any]:
        return {(t.id, t.name, t.unit) for t in engine.catalog.all()}

    once = Engine.open(tmp_path / "once")
    try:
        for seq, frame in enumerate(log, start=1):
            apply_frame(once, seq, frame)
        want = catalog_of(once)
    finally:
        once.close()
    assert want == {(NAMED_BASE + 1, "c", "m"), (NAMED_BASE + 7, "a", "")}
    # A node stopped after any frame, to which the log then delivers from any earlier
    # frame again (its consumer restarted before it saw its own position): the same.
    for cut in range(len(log) + 1):
        for back in range(cut + 1):
            engine = Engine.open(tmp_path / f"r{cut}-{back}")
            try:
                for seq, frame in enumerate(log[:cut], start=1):
                    apply_frame(engine, seq, frame)
            finally:
                engine.close()
            engine = Engine.open(tmp_path / f"r{cut}-{back}")
            try:
                assert engine.catalog.log_seq() == cut
                for seq, frame in enumerate(log[back:], start=back + 1):
                    apply_frame(engine, seq, frame)
                assert catalog_of(engine) == want, (cut, back)
            finally:
                engine.close()


async def test_a_frame_rewritten_in_the_log_is_found(nats_cluster: Any) -> None:
    """The applier's check: the newest applied frame compared with the stream leader's."""
    import nats

    from xtsdb.server.cluster.bootstrap import STREAM
    from xtsdb.server.cluster.log_check import Trail, diverged_after

    nc = await nats.connect(servers=nats_cluster.urls)
    try:
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=["xtsdb.shard.*"], num_replicas=3)
        seqs = [(await js.publish("xtsdb.shard.1", f"frame {k}".encode())).seq for k in range(5)]
        trail = Trail()
        assert await diverged_after(js, "xtsdb.shard.1", trail) is None  # nothing applied
        for k, seq in enumerate(seqs):
            trail.add(seq, f"frame {k}".encode())
        assert await diverged_after(js, "xtsdb.shard.1", trail) is None
        trail.add(seqs[-1] + 1, b"a frame the log never committed")  # what quorum loss left
        await js.publish("xtsdb.shard.1", b"the acknowledged frame at that sequence")
        assert await diverged_after(js, "xtsdb.shard.1", trail) == seqs[-1]
        # Good frames after it do not hide it; frames checked before are not asked again.
        later = (await js.publish("xtsdb.shard.1", b"a later frame")).seq
        trail.add(later, b"a later frame")
        assert await diverged_after(js, "xtsdb.shard.1", trail) == seqs[-1]
        assert await diverged_after(js, "xtsdb.shard.1", trail, checked=later) is None
        ghost = Trail()
        ghost.add(seqs[0], b"not this")
        assert await diverged_after(js, "xtsdb.shard.1", ghost) == 0
        assert await diverged_after(js, "xtsdb.shard.2", trail) == 0  # another shard's seqs
    finally:
        await nc.close()
