"""Encode rate of streamed remote read answers (XOR chunks, then frames), and their size.

Samples as the server hands them over (timestamps in ms, float64 values),
shaped as Prometheus data often is (a counter scraped every 15 s) and as it
compresses worst (random floats, jittered timestamps). Measures
``encode_chunks`` on one long series, then ``query_frames`` (chunks, protobuf
messages, length and CRC32C) on many series, and compares with the SAMPLES
answer (``encode_read_response``, snappy) of the same series. Prints a
table; nothing is asserted.

    .venv/bin/python bench/prom_stream.py [--samples 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from xtsdb.protocol import prom_remote as pr
from xtsdb.protocol.prom_stream import query_frames
from xtsdb.protocol.prom_xor import encode_chunks


def shapes(n: int) -> list[tuple[str, Any, Any]]:
    rng = np.random.default_rng(1)
    t0 = 1_700_000_000_000
    counter = np.cumsum(rng.integers(0, 5, n)).astype(np.float64)
    jitter = t0 + np.cumsum(15_000 + rng.integers(-50, 50, n))
    return [
        ("counter, every 15 s", t0 + np.arange(n, dtype=np.int64) * 15_000, counter),
        ("random floats, jittered", jitter.astype(np.int64), rng.standard_normal(n)),
    ]


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times = []
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def row(data: str, what: str, samples: int, seconds: float, size: int) -> None:
    print(f"{data:<26}{what:<34}{samples / seconds / 1e6:>12.2f}{size / samples:>10.2f}")


def measure(name: str, ts: Any, values: Any, repeat: int, per: int = 1000) -> None:
    n = len(ts)
    dt, chunks = best(lambda: encode_chunks(ts, values, np.array([n])), repeat)
    row(name, "XOR chunks, one series", n, dt, len(chunks.data))
    series = [
        pr.SeriesSamples([("__name__", f"m{i}")], ts[lo : lo + per], values[lo : lo + per])
        for i, lo in enumerate(range(0, n - per + 1, per))
    ]
    m = per * len(series)
    dt, frames = best(lambda: list(query_frames(0, series)), repeat)
    row("", f"stream, {len(series)} series x {per}", m, dt, sum(map(len, frames)))
    dt, body = best(lambda: pr.encode_read_response([series]), repeat)
    row("", "SAMPLES answer (snappy), same", m, dt, len(body))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{args.samples} samples, best of {args.repeat}")
    print(f"{'data':<26}{'what':<34}{'M samples/s':>12}{'B/sample':>10}")
    for name, ts, values in shapes(args.samples):
        measure(name, ts, values, args.repeat)


if __name__ == "__main__":
    main()
