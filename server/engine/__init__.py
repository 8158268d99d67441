"""The xtsdb storage engine: a plain, thread-safe Python API (no asyncio, no sockets).

How the pieces meet (see docs/storage-format.md for the bytes):

* ``wal_records`` the WAL record codec: a validated columnar write (``WriteBatch``)
  and a delete (``DeleteRecord``), packed as WAL record bodies.
* ``wal``        appends records (length, CRC, LSN) with one fsync per group commit;
  ``wal_segment`` the bytes of a segment and a record, ``wal_checkpoint`` the
  checkpoint file.
* ``membuffer``  keeps each tag's unsealed points; the merge rule (later write wins).
* ``block_codec`` encodes a tag's points into a compressed columnar block body.
* ``container``  the on-disk format: container files, chunk slots, block directory;
  ``container_dir`` names, opens and tidies the container files of a directory.
* ``store``      the active chunk, rollover and sealing; reconciles disk with the index.
* ``index``      the SQLite mirror of chunks and blocks (a cache, rebuilt by scan).
* ``reader``     decodes blocks inline or in a process pool into shared memory;
  ``multiblock`` decodes many regular blocks in one pass.
* ``state``      the in-memory view (tags, last values, counters) under one lock;
  a query takes a ``TagSnapshot`` of one tag from it.
* ``query``      ``ReadPath``: snapshot -> blocks picked by time -> reader, merged
  with memory; ``last()`` and its cache fill.
* ``recovery``   opens a data directory: lock, format, index, chunks, WAL.
* ``tagstate``   per-tag buffers, blocks and tombstones as one unit of state.
* ``staging``    the single-point write path (array.array columns until commit).
* ``aggregate``  bucket aggregates and plot mode (pure numpy); ``reductions`` its
  per-segment columnar reductions; ``interpolate`` values at given times.
* ``retention``  retires chunks older than the retention window.
* ``sealing``    ``Sealer``, the background sealer: MemBuffers into blocks, then checkpoints.
* ``lastvalues`` the last-value file that keeps ``last()`` warm across a clean restart.
* ``catalog``    tag names and settings in ``catalog.sqlite3``, checked row by row at open.
* ``catalog_ops`` ``TagPolicies``: catalog changes and duplicate policies in effect.
* ``analytics``  aggregate, interpolate and plot over the read path.
* ``live_copy``  ``backup()``: a consistent copy of a live data directory.
* ``verify``     checks a closed data directory byte by byte (``xtsdb-server check``).
* ``engine``     composes them: :class:`Engine` (each part gets what it needs).
"""

from .aggregate import Buckets
from .analytics import Interpolated
from .catalog import Catalog, TagInfo
from .config import EngineConfig
from .engine import Engine
from .live_copy import BackupSource, StopCheck, backup
from .points import GOOD_QUALITY, LastPoints, Points, ReadStats
from .verify import CheckError, Progress, Report, check_data_dir
from .wal_records import WriteBatch

__all__ = [
    "GOOD_QUALITY",
    "BackupSource",
    "Buckets",
    "Catalog",
    "CheckError",
    "Engine",
    "EngineConfig",
    "Interpolated",
    "LastPoints",
    "Points",
    "Progress",
    "ReadStats",
    "Report",
    "StopCheck",
    "TagInfo",
    "WriteBatch",
    "backup",
    "check_data_dir",
]
