"""The engine's tag-catalog operations and duplicate policies (a mixin of Engine).

The catalog itself (names, metadata, durability) lives in ``catalog.py``; this
is where its settings take effect on the write and read paths: a tag's
duplicate policy is copied into its in-memory state, and tags whose policy is
'reject' are checked under the engine's write lock, so two racing writes of
one timestamp cannot both get in.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from xtsdb.protocol.errors import InvalidInput

from .catalog import Catalog, TagInfo
from .tagstate import TagState
from .wal_records import WriteBatch

if TYPE_CHECKING:
    from .engine import Engine


class CatalogOps:
    catalog: Catalog
    _state: threading.Condition
    _tags: dict[int, TagState]
    _last: dict[int, tuple[int, float, int]]
    _reject_tags: set[int]

    def _tag(self, tag_id: int) -> TagState:
        raise NotImplementedError

    def delete_tag(self, tag_id: int) -> int:
        raise NotImplementedError

    def _check_rejects(self, batches: list[WriteBatch]) -> None:
        """Refuse the call if it rewrites a timestamp of a tag whose policy is 'reject'."""
        from .query import run_query

        seen: dict[int, list[np.ndarray]] = {}
        for b in batches:
            for tag_id, sl in b.runs():
                if tag_id not in self._reject_tags:
                    continue
                ts = b.timestamps[sl]
                earlier = seen.setdefault(tag_id, [])
                old = run_query(
                    cast("Engine", self), tag_id, int(ts.min()), int(ts.max()) + 1, None
                ).timestamps
                clash = np.unique(ts).shape[0] != ts.shape[0] or bool(
                    np.isin(ts, np.concatenate([old, *earlier])).any()
                )
                if clash:
                    raise InvalidInput(
                        f"tag {tag_id} refuses duplicate timestamps (duplicate policy 'reject')"
                    )
                earlier.append(ts)

    # -- the tag catalog ---------------------------------------------------------

    def create_tag(self, name: str, **meta: Any) -> TagInfo:
        """Name a new tag (with unit, description, value_type, duplicates, retention_us)."""
        info = self.catalog.create(name, **meta)
        self._set_policy(info)
        return info

    def get_or_create_tag(self, name: str) -> int:
        """The id of the tag named ``name``, creating it (default settings) if absent.

        A creation by another thread between the lookup and the insert is not an
        error: the name then exists and its id is returned. A bad name raises
        InvalidInput and creates nothing.
        """
        info = self.catalog.get(name)
        if info is not None:
            return info.id
        try:
            return self.create_tag(name).id
        except InvalidInput:
            info = self.catalog.get(name)  # created meanwhile by another thread?
            if info is None:
                raise  # a bad name (or no ids left)
            return info.id

    def update_tag(self, key: int | str, **meta: Any) -> TagInfo:
        info = self.catalog.update(key, **meta)
        self._set_policy(info)
        return info

    def remove_tag(self, key: int | str) -> TagInfo:
        """Delete a tag's points and its catalog entry."""
        tag_id = self.catalog.resolve(key)
        self.delete_tag(tag_id)
        info = self.catalog.remove(tag_id)
        with self._state:
            self._tag(tag_id).policy = "last"
            self._reject_tags.discard(tag_id)
        return info

    def _set_policy(self, info: TagInfo) -> None:
        with self._state:
            self._tag(info.id).policy = info.duplicates
            self._last.pop(info.id, None)
            if info.duplicates == "reject":
                self._reject_tags.add(info.id)
            else:
                self._reject_tags.discard(info.id)
