"""The server's backup op: where a backup may go, and one backup at a time.

The copy itself -- consistent while the engine keeps writing, and why -- is
:func:`xtsdb.server.engine.backup` (``server/engine/live_copy.py``). To
restore, start a server on the copy; ``xtsdb-server check --data-dir COPY``
checks it in full.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

from xtsdb.protocol.errors import InvalidInput, Overloaded, PermissionDenied
from xtsdb.server.engine import BackupSource, StopCheck
from xtsdb.server.engine import backup as backup


class Backups:
    """The server's backup op: destination policy, one backup at a time."""

    def __init__(self, engine: BackupSource, backup_dir: Path) -> None:
        self.engine = engine
        self.backup_dir = backup_dir
        self._running = threading.Lock()

    def resolve(self, dest: str) -> Path:
        """``dest`` as an absolute path inside ``backup_dir`` that does not exist yet."""
        if not dest:
            raise InvalidInput("'path' is empty")
        if "\0" in dest:
            raise InvalidInput("'path' holds a NUL byte, which no file name may contain")
        root = self.backup_dir.resolve()
        _check_lengths(root, dest)
        try:
            target = (root / dest).resolve()  # an absolute dest replaces root here
        except (OSError, RuntimeError) as exc:  # a symlink loop, a name the OS refuses
            raise InvalidInput(f"'path' cannot be used as a directory: {exc}") from None
        if target == root or not target.is_relative_to(root):
            raise PermissionDenied(f"backups may only be written under {root} (backup_dir)")
        if target.is_relative_to(self.engine.path.resolve()):
            raise InvalidInput("a backup cannot go inside the data directory it copies")
        if target.exists():
            raise InvalidInput(f"{target} exists; a backup goes into a new directory")
        for parent in target.parents:
            if parent.exists() and not parent.is_dir():
                raise InvalidInput(f"{parent} is not a directory, so {target} cannot be made")
        return target

    def run(self, dest: str, stop: StopCheck) -> dict[str, Any]:
        target = self.resolve(dest)
        if not self._running.acquire(blocking=False):
            raise Overloaded("a backup is already running; try again when it has finished")
        try:
            return backup(self.engine, target, stop)
        finally:
            self._running.release()


def _check_lengths(root: Path, dest: str) -> None:
    """Refuse names the file system would refuse (ENAMETOOLONG), before touching it."""
    name_max, path_max = 255, 4096
    with contextlib.suppress(OSError, ValueError):
        name_max = os.pathconf(root, "PC_NAME_MAX")
        path_max = os.pathconf(root, "PC_PATH_MAX")
    for part in Path(dest).parts:
        if len(os.fsencode(part)) > name_max:
            raise InvalidInput(
                f"a name in 'path' is too long: {len(os.fsencode(part))} bytes, "
                f"at most {name_max} ({part[:40]}...)"
            )
    total = len(os.fsencode(str(root / dest)))
    if total >= path_max:
        raise InvalidInput(
            f"'path' is too long: {total} bytes under {root}, at most {path_max - 1}"
        )
