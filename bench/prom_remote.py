"""Decode rate of Prometheus remote write requests, and encode rate of read responses.

A WriteRequest of 100,000 samples, built with the protobuf runtime as
Prometheus sends it (snappy, value then timestamp per sample), is decoded by
``decode_write_request`` plus a tag name per series (what the server does; with
a fresh name cache, and with the cache warm from the previous request, as it is
when Prometheus sends the same series every scrape), by the decode alone, by
the same with the bulk paths turned off (series and samples one at a time,
the path for other encoders), and by the plain runtime loop ``[s.value for s in
ts.samples]`` (labels read too, no names) for reference; shapes go
from one sample per series (what Prometheus sends: each series' latest
scrape) to few long series. Prints a table; nothing is asserted.

    .venv/bin/python bench/prom_remote.py [--samples 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import cramjam
import numpy as np

from xtsdb.protocol import prom_messages as pm
from xtsdb.protocol import prom_remote as pr
from xtsdb.protocol import prom_samples as ps
from xtsdb.server.prom_remote import SeriesNames


def build(n_series: int, per_series: int, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    req = pm.WriteRequest()
    t0 = 1_700_000_000_000
    for i in range(n_series):
        ts = req.timeseries.add()
        ts.labels.add(name="__name__", value=f"metric_{i % 50}")
        ts.labels.add(name="instance", value=f"host-{i // 50}:9100")
        ts.labels.add(name="job", value="node")
        vals = rng.normal(100, 10, per_series).round(2)
        vals[rng.random(per_series) < 0.2] = 0.0  # counters at zero: left out on the wire
        for j in range(per_series):
            ts.samples.add(value=float(vals[j]), timestamp=t0 + 15_000 * j)
    return pr.snappy_encode(req.SerializeToString())


def runtime_loop(body: bytes) -> int:
    """What a straightforward decoder does: one attribute access per sample."""
    req = pm.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    n = 0
    for ts in req.timeseries:
        _ = [(lb.name, lb.value) for lb in ts.labels]
        v = np.array([s.value for s in ts.samples], np.float64)
        t = np.array([s.timestamp for s in ts.samples], np.int64)
        n += v.shape[0] + 0 * t.shape[0]
    return n


def named(body: bytes, names: SeriesNames) -> int:
    """What the server does: columns, and a tag name per series (cached across requests)."""
    cols = pr.decode_write_request(body)
    names.names(cols.keys)
    return len(cols)


def one_by_one(body: bytes) -> int:
    """The general path (series one by one, samples one by one), as for other encoders."""
    saved = ps._columns, pr.split_series
    ps._columns = lambda flat, n: None  # type: ignore[assignment]
    pr.split_series = lambda series: None  # type: ignore[assignment]
    try:
        return len(pr.decode_write_request(body))
    finally:
        ps._columns, pr.split_series = saved


def best(fn: Callable[[bytes], Any], body: bytes, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(body)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n = args.samples
    warm = SeriesNames()
    decoders: list[tuple[str, Callable[[bytes], Any]]] = [
        ("columns+names", lambda b: named(b, SeriesNames())),
        ("cached names", lambda b: named(b, warm)),
        ("columns only", lambda b: len(pr.decode_write_request(b))),
        ("one by one", one_by_one),
        ("runtime loop", runtime_loop),
    ]
    print(f"remote write decode, {n} samples per request, best of {args.repeat} (samples/s)")
    print(f"{'series x samples':>18} {'body KiB':>9}" + "".join(f"{d:>14}" for d, _ in decoders))
    for per in (1, 10, 100, 10_000):
        body = build(n // per, per)
        assert len(pr.decode_write_request(body)) == n
        rates = [n / best(fn, body, args.repeat) for _, fn in decoders]
        row = f"{n // per:>9} x {per:<6} {len(body) / 1024:>9.0f}"
        print(row + "".join(f"{r / 1e6:>12.2f} M" for r in rates))
    print()
    print("remote read response encode (SAMPLES), best of", args.repeat)
    for per in (1, 100, 10_000):
        series = [
            pr.SeriesSamples(
                [("__name__", f"m{i}"), ("job", "node")],
                np.arange(per, dtype=np.int64) * 15_000,
                np.linspace(0, 1, per),
            )
            for i in range(n // per)
        ]
        dt = best(lambda _, s=series: pr.encode_read_response([s]), b"", args.repeat)
        print(f"{n // per:>9} x {per:<6} {n / dt / 1e6:>12.2f} M samples/s")


if __name__ == "__main__":
    main()
