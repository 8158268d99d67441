"""The tag catalog every node shares: names to ids in a JetStream key-value bucket.

A name's entry is made with ``kv.create`` (compare-and-set: it fails if the
key exists), so when two nodes name the same tag at once exactly one id wins
and both use it. Ids come from a counter key advanced with ``kv.update``
against its last revision, a block of ids per request; an id reserved by a
creation that then lost the race stays unused (ids need not be dense). Named
tags get ids from 2**31 up, leaving the ids below to clients writing raw ids.

Each node's engine catalog asks this one for ids (``Catalog.allocator``, from
the query pool threads: it blocks on a round trip) and mirrors every entry of
the bucket with the same id (a watcher), so names resolve locally everywhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from xtsdb.protocol.errors import InternalError, InvalidInput, NotFound, Unavailable
from xtsdb.server.engine import Engine
from xtsdb.server.engine.catalog import TagInfo, check_meta, check_name

log = logging.getLogger("xtsdb.cluster")
T = TypeVar("T")

NAMED_BASE = 1 << 31
ALLOCATE_TIMEOUT = 10.0
_NEXT = "next_id"
_PREFIX = "t."

Allocated = tuple[int, dict[str, Any], bool] | InvalidInput


def key_of(name: str) -> str:
    # KV keys allow [-/_=.a-zA-Z0-9] only; a tag name may hold anything.
    return _PREFIX + base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def name_of(key: str) -> str:
    body = key[len(_PREFIX) :]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def _entry(value: bytes | None) -> tuple[int, dict[str, Any], str | None]:
    """(id, settings, the name it moved to: a rename's marker, or None)."""
    doc = json.loads(value or b"{}")
    return int(doc["id"]), dict(doc.get("meta") or {}), doc.get("moved_to")


class SharedCatalog:
    def __init__(self, kv: KeyValue, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.kv = kv
        self.engine = engine
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._watch: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()  # the mirror has seen every entry there was at start
        self.mirrored = 0

    async def start(self, timeout: float = 30.0) -> None:
        self._watch = asyncio.create_task(self._mirror(), name="xtsdb-catalog-mirror")
        await asyncio.wait_for(self.synced.wait(), timeout)
        self.engine.catalog.allocator = self.allocate

    async def close(self) -> None:
        self.engine.catalog.allocator = None
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)

    # -- allocation (called by the engine's catalog, in a pool thread) -----------

    def allocate(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Allocated]:
        if threading.get_ident() == self._loop_thread:
            raise InternalError("a tag was created on the event loop thread in cluster mode")
        fut = asyncio.run_coroutine_threadsafe(self._allocate(list(items)), self._loop)
        try:
            return fut.result(ALLOCATE_TIMEOUT)
        except TimeoutError:
            fut.cancel()
            raise Unavailable(
                f"the shared tag catalog did not answer within {ALLOCATE_TIMEOUT:.0f} s"
            ) from None

    async def _allocate(self, items: list[tuple[str, dict[str, Any]]]) -> list[Allocated]:
        try:
            return await self._allocate_all(items)
        except (InvalidInput, Unavailable):
            raise
        except Exception as exc:  # NATS down, no quorum, timeout
            raise Unavailable(f"the shared tag catalog is unreachable: {exc!r}") from None

    async def _allocate_all(self, items: list[tuple[str, dict[str, Any]]]) -> list[Allocated]:
        out: list[Allocated | None] = [None] * len(items)
        missing: list[int] = []
        for i, (name, fields) in enumerate(items):
            if fields.get("duplicates") == "reject":
                # A replica applies writes after the fact: it cannot refuse one.
                out[i] = InvalidInput("duplicate policy 'reject' is not available in cluster mode")
                continue
            try:
                tag_id, meta, moved = _entry((await self.kv.get(key_of(name))).value)
            except KeyNotFoundError:
                moved = "-"
            if moved is None:
                out[i] = (tag_id, meta, False)
            else:  # absent, or left by a rename: free
                missing.append(i)
        if missing:
            first = await self._reserve(len(missing))
            made = await asyncio.gather(
                *(self._create(*items[i], first + k) for k, i in enumerate(missing))
            )
            for i, got in zip(missing, made, strict=True):
                out[i] = got
        return [x for x in out if x is not None]

    async def _reserve(self, n: int) -> int:
        """The first of ``n`` fresh ids (the counter moved past them)."""
        while True:
            try:
                entry = await self.kv.get(_NEXT)
            except KeyNotFoundError:
                try:
                    await self.kv.create(_NEXT, str(NAMED_BASE + n).encode())
                    return NAMED_BASE
                except KeyWrongLastSequenceError:
                    continue  # another node made the counter first
            first = int(entry.value or b"0")
            if first + n > 0xFFFFFFFF:
                raise InvalidInput("no tag ids left")
            try:
                await self.kv.update(_NEXT, str(first + n).encode(), last=entry.revision)
                return first
            except KeyWrongLastSequenceError:
                continue  # another node took these ids: take the next ones

    async def _create(self, name: str, fields: dict[str, Any], tag_id: int) -> Allocated:
        value = json.dumps({"id": tag_id, "meta": fields}).encode()
        while True:
            try:
                await self.kv.create(key_of(name), value)
                return (tag_id, fields, True)
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await self.kv.get(key_of(name))
            except KeyNotFoundError:
                continue  # removed meanwhile: create again
            got_id, meta, moved = _entry(entry.value)
            if moved is None:  # named meanwhile by another node: use its id
                return (got_id, meta, False)
            try:  # a name a rename left behind: take it over
                await self.kv.update(key_of(name), value, last=entry.revision)
                return (tag_id, fields, True)
            except KeyWrongLastSequenceError:
                continue

    async def lookup(self, name: str) -> int:
        """The id of ``name`` from the shared catalog, mirrored here at once (a name created
        through another node that this node's watcher has not delivered yet)."""
        try:
            value = (await self.kv.get(key_of(name))).value
        except KeyNotFoundError:
            raise NotFound(f"no tag named {name!r} in the catalog") from None
        except Exception as exc:
            raise Unavailable(f"the shared tag catalog is unreachable: {exc!r}") from None
        if _entry(value)[2] is not None:
            raise NotFound(f"no tag named {name!r} in the catalog (renamed)")
        await self._adopt(key_of(name), value or b"")
        info = self.engine.catalog.get(name)
        if info is None:
            raise NotFound(f"no tag named {name!r} in the catalog")
        return info.id

    # -- settings changes -----------------------------------------------------------

    async def update(self, key: int | str, meta: dict[str, Any]) -> TagInfo:
        """Change a tag's settings for every node: the shared entry first (compare-and-set
        on its revision), then this node's catalog; the others follow through the mirror."""
        fields = check_meta(meta)
        if fields.get("duplicates") == "reject":
            raise InvalidInput("duplicate policy 'reject' is not available in cluster mode")
        info = self.engine.catalog.get(key)
        if info is None:
            raise NotFound(f"no tag {key!r} in the catalog")
        while True:
            try:
                entry = await self.kv.get(key_of(info.name))
            except KeyNotFoundError:
                raise NotFound(f"no tag {info.name!r} in the shared catalog") from None
            tag_id, old, moved = _entry(entry.value)
            if tag_id != info.id or moved is not None:
                raise InvalidInput(f"the shared catalog gives {info.name!r} id {tag_id}")
            new = {**old, **fields}
            value = json.dumps({"id": tag_id, "meta": new}).encode()
            try:
                await self.kv.update(key_of(info.name), value, last=entry.revision)
                break
            except KeyWrongLastSequenceError:
                continue  # changed meanwhile by another node: apply ours over theirs
        return await self._loop.run_in_executor(None, lambda: self.engine.update_tag(tag_id, **new))

    async def remove(self, key: int | str) -> TagInfo:
        """Remove a tag's name for every node (its points are deleted through the write log
        first, by the caller): the shared entry, if it is still the one this node knows."""
        info = self.engine.catalog.get(key)
        if info is None:
            raise NotFound(f"no tag {key!r} in the catalog")
        try:
            entry = await self.kv.get(key_of(info.name))
            tag_id, _, moved = _entry(entry.value)
            if tag_id == info.id and moved is None:
                await self.kv.delete(key_of(info.name), last=entry.revision)
        except KeyNotFoundError:
            pass  # removed meanwhile through another node
        except KeyWrongLastSequenceError:
            raise InvalidInput(
                f"tag {info.name!r} changed through another node meanwhile; try again"
            ) from None
        await self._loop.run_in_executor(None, self.engine.forget_tag, info.name)
        return info

    async def rename(self, key: int | str, new_name: str) -> TagInfo:
        """Rename a tag for every node: reserve the new name (``kv.create``), then turn the
        old name's entry into a marker naming the new one (compare-and-set); every node's
        watcher renames when it sees the marker. Retrying a rename that stopped half-way
        finds its own reservation and goes on."""
        check_name(new_name)
        info = self.engine.catalog.get(key)
        if info is None:
            raise NotFound(f"no tag {key!r} in the catalog")
        if new_name == info.name:
            return info
        old_key, new_key = key_of(info.name), key_of(new_name)
        try:
            old = await self.kv.get(old_key)
        except KeyNotFoundError:
            raise NotFound(f"no tag {info.name!r} in the shared catalog") from None
        tag_id, meta, moved = _entry(old.value)
        if tag_id != info.id or moved is not None:
            raise InvalidInput(f"tag {info.name!r} changed through another node; try again")
        value = json.dumps({"id": tag_id, "meta": meta}).encode()
        reserved = await self._reserve_name(new_key, new_name, tag_id, value)
        marker = json.dumps({"id": tag_id, "moved_to": new_name}).encode()
        try:
            await self.kv.update(old_key, marker, last=old.revision)
        except KeyWrongLastSequenceError:
            with contextlib.suppress(Exception):  # give the new name back
                await self.kv.delete(new_key, last=reserved)
            raise InvalidInput(
                f"tag {info.name!r} changed through another node meanwhile; try again"
            ) from None
        return await self._run(self.engine.catalog.rename, tag_id, new_name)

    async def _reserve_name(self, key: str, name: str, tag_id: int, value: bytes) -> int:
        """``name`` taken for ``tag_id``; the entry's revision."""
        while True:
            try:
                return int(await self.kv.create(key, value))
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                continue
            got_id, _, moved = _entry(entry.value)
            if moved is None and got_id == tag_id:
                return int(entry.revision or 0)  # a retried rename's own reservation
            if moved is None:
                raise InvalidInput(f"a tag named {name!r} exists already")
            try:  # a name a rename left behind: free
                return int(await self.kv.update(key, value, last=entry.revision))
            except KeyWrongLastSequenceError:
                continue

    # -- the mirror ---------------------------------------------------------------

    async def _mirror(self) -> None:
        while True:
            try:
                watcher = await self.kv.watchall()
                async for entry in watcher:
                    if entry is None:  # every entry present at start has been seen
                        self.synced.set()
                        continue
                    if not entry.key.startswith(_PREFIX):
                        continue
                    if entry.operation in ("DEL", "PURGE"):  # removed through another node
                        await self._forget(entry.key)
                    elif entry.value:
                        await self._adopt(entry.key, entry.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS went away: watch again once it is back
                log.warning("catalog watch interrupted (%r); watching again", exc)
                await asyncio.sleep(1.0)

    async def _forget(self, key: str) -> None:
        name = name_of(key)
        if self.engine.catalog.get(name) is not None:
            await self._loop.run_in_executor(None, self.engine.forget_tag, name)

    async def _adopt(self, key: str, value: bytes) -> None:
        name = name_of(key)
        tag_id, meta, moved = _entry(value)
        catalog = self.engine.catalog
        info, holder = catalog.get(name), catalog.get(tag_id)
        try:
            if moved is not None:  # a rename: the tag leaves this name for ``moved``
                if info is not None and info.id == tag_id:
                    await self._run(catalog.rename, tag_id, moved)
            elif info is not None and info.id == tag_id:
                if all(getattr(info, k, v) == v for k, v in meta.items()):
                    return  # made or changed through this node, or seen before
                await self._run(lambda: self.engine.update_tag(tag_id, **meta))
            elif holder is not None:
                return  # a rename's new name: the tag moves when the old name's marker comes
            else:
                await self._run(self.engine.adopt_tag, name, tag_id, meta)
            self.mirrored += 1
        except InvalidInput as exc:
            log.error("shared catalog entry %r not mirrored: %s", name, exc)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._loop.run_in_executor(None, fn, *args)
