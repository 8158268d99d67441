"""One client per system with the same small interface, so workloads are system-agnostic.

``write(payload)``, ``query_range(tag, start_us, end_us) -> points``,
``last_all(tags) -> series``, ``aggregate(...) -> buckets or None``, ``close()``.

Peer clients speak HTTP through the stdlib with one keep-alive connection each
and decode every answer into numpy arrays, because the xtsdb client hands back
numpy arrays too: a query is timed until the caller holds usable columns.
Ranges are half-open ``[start_us, end_us)`` for every system.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.data import MEASUREMENT, Frame, tag_name

VM_METRIC = f"{MEASUREMENT}_value"  # VictoriaMetrics names an Influx field <measurement>_<field>


class HttpError(RuntimeError):
    pass


class Http:
    """A keep-alive HTTP/1.1 connection that reconnects once if the server closed it."""

    def __init__(self, host: str, port: int, timeout: float = 300.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def request(
        self, method: str, path: str, body: bytes | None = None, ok: tuple[int, ...] = (200,)
    ) -> bytes:
        headers = {"Content-Type": "text/plain; charset=utf-8"} if body is not None else {}
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # An idle keep-alive connection may have been closed by the server;
                # repeating the request is safe (a rewrite of the same points is a no-op).
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                if attempt:
                    raise
        if resp.status not in ok:
            raise HttpError(f"{method} {path[:120]} -> {resp.status}: {data[:300]!r}")
        return data

    def close(self) -> None:
        self.conn.close()


def _qs(**params: str) -> str:
    return urllib.parse.urlencode(params)


class InfluxClient:
    def __init__(self, host: str, port: int, db: str = "bench") -> None:
        self.http = Http(host, port)
        self.db = db

    def create_database(self) -> None:
        self.http.request("POST", "/query?" + _qs(q=f"CREATE DATABASE {self.db}"))

    def write(self, body: bytes) -> None:
        self.http.request("POST", f"/write?db={self.db}&precision=u", body, ok=(204,))

    def _query(self, q: str) -> list[dict[str, Any]]:
        raw = self.http.request("GET", "/query?" + _qs(db=self.db, epoch="u", q=q))
        res = json.loads(raw)["results"][0]
        if "error" in res:
            raise HttpError(res["error"])
        series: list[dict[str, Any]] = res.get("series", [])
        return series

    @staticmethod
    def _where(tag: int, start_us: int, end_us: int) -> str:
        # InfluxQL bare integers in time comparisons are nanoseconds.
        return (
            f"\"tag\" = '{tag_name(tag)}' AND time >= {start_us * 1000} AND time < {end_us * 1000}"
        )

    def query_range(self, tag: int, start_us: int, end_us: int) -> int:
        series = self._query(
            f"SELECT value FROM {MEASUREMENT} WHERE {self._where(tag, start_us, end_us)}"
        )
        if not series:
            return 0
        rows = np.asarray(series[0]["values"], dtype=np.float64)
        ts, vals = rows[:, 0].astype(np.int64), rows[:, 1]
        return int(min(ts.size, vals.size))

    def last_all(self, tags: npt.NDArray[np.uint32], at_us: int = 0) -> int:
        # The idiomatic InfluxQL lastpoint query; it covers every series of the measurement.
        series = self._query(f'SELECT last(value) FROM {MEASUREMENT} GROUP BY "tag"')
        return len(series)

    def aggregate(self, tag: int, start_us: int, end_us: int, bucket_us: int) -> int | None:
        q = (
            f"SELECT min(value), max(value), mean(value) FROM {MEASUREMENT} "
            f"WHERE {self._where(tag, start_us, end_us)} GROUP BY time({bucket_us}u)"
        )
        series = self._query(q)
        return len(series[0]["values"]) if series else 0

    def close(self) -> None:
        self.http.close()


class VMClient:
    def __init__(self, host: str, port: int) -> None:
        self.http = Http(host, port)

    def write(self, body: bytes) -> None:
        self.http.request("POST", "/write?precision=us", body, ok=(204,))

    def force_flush(self) -> None:
        self.http.request("GET", "/internal/force_flush")

    def force_merge(self) -> bool:
        try:
            self.http.request("GET", "/internal/force_merge")
            return True
        except HttpError:
            return False

    @staticmethod
    def _selector(tag: int) -> str:
        return f'{VM_METRIC}{{tag="{tag_name(tag)}"}}'

    def query_range(self, tag: int, start_us: int, end_us: int) -> int:
        # /api/v1/export returns raw samples; its end is inclusive and in (fractional)
        # seconds, and VictoriaMetrics stores millisecond timestamps.
        params = _qs(
            **{"match[]": self._selector(tag)},
            start=f"{start_us / 1e6:.3f}",
            end=f"{(end_us - 1000) / 1e6:.3f}",
        )
        raw = self.http.request("GET", "/api/v1/export?" + params)
        n = 0
        for line in raw.splitlines():
            obj = json.loads(line)
            ts = np.asarray(obj["timestamps"], dtype=np.int64) * 1000
            vals = np.asarray(obj["values"], dtype=np.float64)
            n += int(min(ts.size, vals.size))
        return n

    def last_all(self, tags: npt.NDArray[np.uint32], at_us: int = 0) -> int:
        # The idiomatic Prometheus-style lastpoint query: an instant query of the bare
        # selector at the newest timestamp; it returns each series' latest sample within
        # the staleness lookback (5 min by default). It was faster than
        # last_over_time(m_value[1h]) (bench/README.md, "Figures behind choices");
        # a series silent for longer would not be found.
        params = _qs(query=VM_METRIC, time=f"{at_us / 1e6:.3f}")
        res = json.loads(self.http.request("GET", "/api/v1/query?" + params))
        result = res["data"]["result"]
        vals = np.asarray([float(r["value"][1]) for r in result], dtype=np.float64)
        return int(vals.size)

    def aggregate(self, tag: int, start_us: int, end_us: int, bucket_us: int) -> int | None:
        step = f"{bucket_us // 1_000_000}s"
        q = (
            '(aggr_over_time(("min_over_time", "max_over_time", "avg_over_time"), '
            f"{self._selector(tag)}[{step}]))"
        )
        params = _qs(
            query=q,
            start=f"{(start_us + bucket_us) / 1e6:.3f}",
            # Evaluate up to the end of the last (partial) bucket, as GROUP BY time() does.
            end=f"{(start_us + -(-(end_us - start_us) // bucket_us) * bucket_us) / 1e6:.3f}",
            step=step,
        )
        res = json.loads(self.http.request("GET", "/api/v1/query_range?" + params))
        result = res["data"]["result"]
        if not result:
            return 0
        cols = [np.asarray(r["values"], dtype=np.float64) for r in result]
        return int(cols[0].shape[0])

    def close(self) -> None:
        self.http.close()


class XtsdbClient:
    """Adapter over the xtsdb SDK (imported lazily: the peers run without it)."""

    def __init__(self, url: str) -> None:
        from xtsdb.client import connect

        self.c = connect(url)

    def write(self, f: Frame) -> None:
        self.c.write(f.tags, f.timestamps, f.values, f.qualities)

    def query_range(self, tag: int, start_us: int, end_us: int) -> int:
        r = self.c.query(tag, start_us, end_us)
        return len(r.timestamps)

    def last_all(self, tags: npt.NDArray[np.uint32], at_us: int = 0) -> int:
        r = self.c.last(tags)
        ts = getattr(r, "timestamps", r)
        return len(ts)

    def aggregate(self, tag: int, start_us: int, end_us: int, bucket_us: int) -> int | None:
        if not hasattr(self.c, "aggregate"):
            return None  # not implemented yet: reported as n/a
        # min/max/avg, as the peers are asked for (the SDK's default is avg alone).
        r = self.c.aggregate(tag, start_us, end_us, bucket_us, ("min", "max", "avg"))
        return len(getattr(r, "timestamps", r))

    def flush_server(self) -> None:
        self.c.flush_server()

    def close(self) -> None:
        self.c.close()
