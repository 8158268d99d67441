"""The containers directory: container file names, opening them all at start-up,
and removing files whose making was cut short by a crash.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .config import EXTENT
from .container import CONTAINER_HEADER_SIZE, DIR_OFFSET, TMP_SUFFIX, ContainerFile, Geometry
from .fsync import fsync_path, make_dirs

NAME = re.compile(r"^c-(\d{6})\.xtc$")


def open_containers(
    directory: Path, geometry: Geometry, instance_id: bytes, repairs: list[str]
) -> dict[int, ContainerFile]:
    """Every container file of ``directory`` by number, unfinished ones removed (noted)."""
    make_dirs(directory)
    containers: dict[int, ContainerFile] = {}
    removed = False
    for path in sorted(directory.iterdir()):
        m = NAME.match(path.name.removesuffix(TMP_SUFFIX))
        if m and remove_unfinished(path, geometry):
            repairs.append(f"{path.name}: unfinished container file removed")
            removed = True
        elif m and path.name == m.group(0):
            containers[int(m.group(1))] = ContainerFile.open(path, instance_id)
    if removed:
        fsync_path(directory)
    return containers


def remove_unfinished(path: Path, geometry: Geometry) -> bool:
    """Remove a container file whose making was cut short; True if it was removed.

    That is a ``.tmp`` left by :meth:`ContainerFile.create`, or a file an older
    version made in place and never finished: shorter than its header, or with a
    blank header and blank chunk headers (nothing was ever stored in it). A file
    with data behind a bad header is left for :meth:`ContainerFile.open` to refuse.
    """
    if not path.name.endswith(TMP_SUFFIX):
        fd = os.open(path, os.O_RDONLY)
        try:
            whole = os.fstat(fd).st_size >= CONTAINER_HEADER_SIZE
            if whole and any(os.pread(fd, EXTENT, 0)):
                return False  # the usual case: a header (valid or not is open()'s question)
            slots = range(geometry.n_chunks)
            if whole and any(any(os.pread(fd, DIR_OFFSET, geometry.chunk_base(s))) for s in slots):
                return False
        finally:
            os.close(fd)
    path.unlink()
    return True


def container_path(directory: Path, container_no: int) -> Path:
    return directory / f"c-{container_no:06d}.xtc"
