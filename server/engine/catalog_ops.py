"""The engine's tag-catalog operations and duplicate policies.

The catalog itself (names, metadata, durability) lives in ``catalog.py``; this
is where its settings take effect on the write and read paths: a tag's
duplicate policy is copied into its in-memory state, and tags whose policy is
'reject' are checked under the engine's write lock, so two racing writes of
one timestamp cannot both get in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xtsdb.protocol.errors import InvalidInput, NotFound

from .catalog import Catalog, TagInfo
from .query import ReadPath
from .state import EngineState
from .wal_records import WriteBatch


class TagPolicies:
    """Catalog changes and their effect on the in-memory view (``state``).

    ``delete_tag`` is the engine's logged delete of all of a tag's points.
    """

    def __init__(
        self,
        catalog: Catalog,
        state: EngineState,
        reads: ReadPath,
        delete_tag: Callable[[int], int],
    ) -> None:
        self.catalog = catalog
        self.state = state
        self.reads = reads
        self._delete_tag = delete_tag
        for info in catalog.all():
            self._set_policy(info)

    def check_rejects(self, batches: list[WriteBatch]) -> None:
        """Refuse the call if it rewrites a timestamp of a tag whose policy is 'reject'."""
        seen: dict[int, list[np.ndarray]] = {}
        for b in batches:
            for tag_id, sl in b.runs():
                if tag_id not in self.state.reject_tags:
                    continue
                ts = b.timestamps[sl]
                earlier = seen.setdefault(tag_id, [])
                old = self.reads.query(tag_id, int(ts.min()), int(ts.max()) + 1, None).timestamps
                clash = np.unique(ts).shape[0] != ts.shape[0] or bool(
                    np.isin(ts, np.concatenate([old, *earlier])).any()
                )
                if clash:
                    raise InvalidInput(
                        f"tag {tag_id} refuses duplicate timestamps (duplicate policy 'reject')"
                    )
                earlier.append(ts)

    def create(self, name: str, **meta: Any) -> TagInfo:
        info = self.catalog.create(name, **meta)
        self._set_policy(info)
        return info

    def adopt(self, name: str, tag_id: int, meta: dict[str, Any]) -> TagInfo:
        info = self.catalog.adopt(name, tag_id, meta)
        self._set_policy(info)
        return info

    def create_many(
        self, items: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[TagInfo | InvalidInput]:
        """Tags ``(name, settings)`` in one catalog transaction (see ``Catalog.create_many``)."""
        out = self.catalog.create_many(items)
        for info in out:
            if isinstance(info, TagInfo):
                self._set_policy(info)
        return out

    def get_or_create(self, name: str) -> int:
        info = self.catalog.get(name)
        if info is not None:
            return info.id
        try:
            return self.create(name).id
        except InvalidInput:
            info = self.catalog.get(name)  # created meanwhile by another thread?
            if info is None:
                raise  # a bad name (or no ids left)
            return info.id

    def update(self, key: int | str, **meta: Any) -> TagInfo:
        info = self.catalog.update(key, **meta)
        self._set_policy(info)
        return info

    def remove(self, key: int | str) -> TagInfo:
        tag_id = self.catalog.resolve(key)
        self._delete_tag(tag_id)
        info = self.catalog.remove(tag_id)
        with self.state.lock:
            self.state.tag(tag_id).policy = "last"
            self.state.reject_tags.discard(tag_id)
        return info

    def forget(self, name: str) -> TagInfo | None:
        """Only the catalog entry of ``name`` removed (cluster mode: its points were deleted
        through the write log); None if there is none."""
        info = self.catalog.get(name)
        if info is None:
            return None
        try:
            self.catalog.remove(info.id)
        except NotFound:  # forgotten meanwhile by another thread (the catalog watcher)
            return None
        with self.state.lock:
            self.state.tag(info.id).policy = "last"
            self.state.reject_tags.discard(info.id)
        return info

    def _set_policy(self, info: TagInfo) -> None:
        state = self.state
        with state.lock:
            state.tag(info.id).policy = info.duplicates
            state.last.forget(info.id)
            if info.duplicates == "reject":
                state.reject_tags.add(info.id)
            else:
                state.reject_tags.discard(info.id)
