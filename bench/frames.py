"""Framing a query response: ``encode_frame`` (one bytes) against ``encode_frame_parts``.

    .venv/bin/python -m bench.frames            # 10 K, 100 K and 1 M points

The server builds each query answer in a pool thread. ``encode_frame`` packs the
arrays into one msgpack body and prepends the length: two full copies of the
result. ``encode_frame_parts`` packs only headers and small fields and hands the
arrays to ``transport.writelines`` as views. Both are timed in the same run on
the same response; the table shows the ratio (the baseline is ``encode_frame``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a file: make `bench` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import Row, median_s, table
from xtsdb.protocol import QUERY, encode_frame, encode_frame_parts

SIZES = (10_000, 100_000, 1_000_000)


def main() -> int:
    rows = []
    for n in SIZES:
        ts = 1_700_000_000_000_000 + np.arange(n, dtype=np.int64) * 1_000_000
        values = np.sin(np.arange(n) / 100.0)
        q = np.full(n, 192, np.uint8)
        resp = QUERY.reply(1, ts, values, q, {"blocks_read": 1})
        reps = max(5, 2_000_000 // n)
        whole = median_s(lambda: encode_frame(resp), reps)  # noqa: B023 - run here, at once
        parts = median_s(lambda: encode_frame_parts(resp), reps)  # noqa: B023
        assert b"".join(encode_frame_parts(resp)) == encode_frame(resp)
        rows.append(Row(f"frame a {n:,}-point answer: encode_frame", f"{whole * 1e3:.3f} ms"))
        rows.append(
            Row(
                f"frame a {n:,}-point answer: encode_frame_parts",
                f"{parts * 1e3:.3f} ms",
                f"{whole / parts:,.2f}x the speed of encode_frame",
            )
        )
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
