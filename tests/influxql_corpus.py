"""Data and InfluxQL queries asked of ``influxd`` and xtsdb (test_influxql_differential.py).

:func:`data` is line protocol around a base time ``t0`` (seconds): irregular
timestamps (millisecond multiples: xtsdb keeps microseconds), points of
several series on one timestamp, a half-hour gap, tags missing from some
series, fields missing from some lines, escaped names, a name with a dot in
its field, integer and boolean fields (``disk``). :func:`queries` covers every
feature docs/influxql.md lists; :func:`typed_queries`, those whose every
column is an integer, a boolean or a tag, are checked for JSON types too.
Values are random with 3 decimals, so exact ties (whose order InfluxDB does
not define for ``percentile``) are rare but exist (``first``/``last`` ties
between series at one timestamp are defined, and present).
"""

from __future__ import annotations

import random

NS = 1_000_000_000
FUNCS = ["mean", "median", "min", "max", "sum", "count", "first", "last", "spread", "stddev"]
FUNCS += ["percentile(usage_idle, 90)", "percentile(usage_idle, 50)", "integral(usage_idle)"]
FUNCS += ["integral(usage_idle, 1m)"]


def data(t0: int, seed: int = 13) -> bytes:
    rnd = random.Random(seed)
    lines: list[str] = []
    ms = t0 * 1000
    hosts = [("a", ",region=eu"), ("b", ",region=us"), ("c", "")]
    for host, region in hosts:
        t = ms + rnd.randrange(0, 20_000)
        for i in range(260):
            t += rnd.choice([5_000, 10_000, 15_000, 30_000, 47_123])
            if host == "b" and 100 <= i < 140:
                continue  # a gap: empty buckets
            fields = f"usage_idle={rnd.uniform(0, 100):.3f}"
            if rnd.random() < 0.6:
                fields += f",usage_user={rnd.uniform(0, 50):.3f}"
            lines.append(f"cpu,host={host}{region} {fields} {t * 1_000_000}")
    for i in range(0, 180):
        if rnd.random() < 0.2:
            continue
        t = ms + i * 60_000
        lines.append(
            f"mem used={rnd.uniform(1e9, 2e9):.1f},free={rnd.uniform(0, 1e9):.1f} {t}000000"
        )
    t = ms
    for _ in range(120):
        t += rnd.randrange(1_000, 90_000)
        lines.append(f"sensor,unit=1 temp={rnd.uniform(-20, 40):.3f} {t}000000")
    for i in range(20):
        t = ms + i * 300_000 + 7
        lines.append(f"my\\ meas,t\\ k=v\\,1,zone=a.b x.y={i * 1.5} {t}000000")
        lines.append(f"wea\\,ther,loc=us\\ mid\\=west temp={20 + i % 7} {t}000000")
    for host, parity in (("a", 0), ("b", 1)):  # even / odd milliseconds: no shared time
        t = ms
        for i in range(150):
            t += rnd.choice([4_000, 10_000, 30_000, 62_000]) + parity * (i == 0)
            if host == "b" and 60 <= i < 80:
                continue  # empty buckets to fill
            fields = [f"used={rnd.randrange(-1000, 1_000_000)}i"]
            if rnd.random() < 0.7:
                fields.append(f"ok={rnd.choice(['t', 'false', 'T', 'f'])}")
            if rnd.random() < 0.3:
                fields.append(f"load={rnd.uniform(0, 4):.2f}")
            lines.append(f"disk,host={host} {','.join(fields)} {t}000000")
    return ("\n".join(lines) + "\n").encode()


def typed_queries(t0: int) -> list[str]:
    """Queries of integer and boolean fields whose answers hold no float column."""
    start, end = t0 * 1000, (t0 + 3 * 3600) * 1000
    rng = f"time >= {start}ms AND time <= {end}ms"
    mid = f"time >= '{_iso(t0 + 17)}' AND time < '{_iso(t0 + 2 * 3600 + 5)}'"
    out = [
        "SHOW FIELD KEYS FROM disk",
        f"SELECT used, ok FROM disk WHERE {mid} AND host = 'a'",
        f"SELECT used * 2, used - 7, used % 7, used + used FROM disk WHERE {mid} GROUP BY host",
        f"SELECT used FROM disk WHERE used > 500000 AND {mid}",
        f"SELECT used FROM disk WHERE ok = 1 AND {mid}",  # a boolean is no number: no row
        f"SELECT used, ok FROM disk WHERE (ok > 0 OR used > 900000) AND {mid}",
        f"SELECT sum(used), count(used), min(used), max(used) FROM disk WHERE {rng}",
        f"SELECT first(used), last(used), spread(used) FROM disk WHERE {rng} GROUP BY host",
        f"SELECT percentile(used, 90) FROM disk WHERE {rng} GROUP BY host",
        f"SELECT sum(used) * 2, max(used) - min(used) FROM disk WHERE {mid} GROUP BY time(20m)",
        f"SELECT difference(used) FROM disk WHERE {mid} AND host = 'b' LIMIT 20",
        f"SELECT difference(max(used)) FROM disk WHERE {mid} GROUP BY time(10m) fill(previous)",
        f"SELECT first(ok), last(ok), count(ok) FROM disk WHERE {rng} GROUP BY host",
        f"SELECT min(ok), max(ok) FROM disk WHERE {mid} AND host = 'b'",
        f"SELECT ok FROM disk WHERE {mid} AND host = 'b' LIMIT 30",
        f"SELECT load::integer FROM disk WHERE {mid} GROUP BY host",
        f"SELECT used FROM disk WHERE load::integer >= 2 AND {mid}",
        f"SELECT used, ok FROM disk WHERE ok = true AND {mid} AND host = 'a'",
        f"SELECT used FROM disk WHERE (false != ok OR used < 1000) AND {mid}",
        f"SELECT used FROM disk WHERE (used = true OR host = true) AND {mid}",
    ]
    for fill in ["null", "none", "previous", "linear", "0", "-1.5", "100"]:
        for f in ("sum(used)", "max(used)", "last(ok)", "count(ok)"):
            out.append(
                f"SELECT {f} FROM disk WHERE {rng} AND host = 'b' GROUP BY time(10m) fill({fill})"
            )
    return out


def queries(t0: int) -> list[str]:
    """Queries over ``data(t0)``; ``now()`` is only used where the answer cannot depend on
    the milliseconds between the two servers' clocks."""
    start, end = t0 * 1000, (t0 + 3 * 3600) * 1000
    rng = f"time >= {start}ms AND time <= {end}ms"  # Grafana's $timeFilter
    iso0 = _iso(t0 + 17)
    iso1 = _iso(t0 + 2 * 3600 + 5)
    mid = f"time >= '{iso0}' AND time < '{iso1}'"
    out = [
        "SHOW DATABASES",
        "SHOW MEASUREMENTS",
        "SHOW MEASUREMENTS LIMIT 2",
        "SHOW MEASUREMENTS LIMIT 2 OFFSET 1",
        "SHOW MEASUREMENTS WITH MEASUREMENT =~ /^(cpu|mem)$/",
        "SHOW MEASUREMENTS WITH MEASUREMENT =~ /e/ LIMIT 2",
        "SHOW MEASUREMENTS WHERE host = 'a'",
        "SHOW TAG KEYS",
        "SHOW TAG KEYS FROM cpu",
        'SHOW TAG KEYS FROM "my meas"',
        'SHOW TAG VALUES FROM cpu WITH KEY = "host"',
        'SHOW TAG VALUES FROM "cpu" WITH KEY IN ("host", "region")',
        "SHOW TAG VALUES FROM cpu WITH KEY =~ /reg/",
        "SHOW TAG VALUES FROM cpu WITH KEY != host",
        "SHOW TAG VALUES FROM cpu WITH KEY = \"host\" WHERE region = 'eu'",
        "SHOW TAG VALUES FROM cpu WITH KEY = \"host\" WHERE region =~ /u/ OR host = 'c'",
        'SHOW TAG VALUES WITH KEY = "loc"',
        'SHOW TAG VALUES FROM "my meas" WITH KEY = "t k"',
        "SHOW FIELD KEYS",
        "SHOW FIELD KEYS FROM mem",
        'SHOW RETENTION POLICIES ON "xtsdb"',
        "SHOW SERIES",
        "SHOW SERIES FROM cpu WHERE host != 'a'",
        "SHOW SERIES WHERE region =~ /u/",
        'SHOW TAG VALUES FROM cpu WITH KEY = "host" WHERE time > now() - 1m',
        "SHOW TAG KEYS WHERE time > now() - 1m AND host = 'a'",
        "SHOW SERIES WHERE time > now() - 1m",
        "SHOW MEASUREMENTS WHERE time > now() - 1m",
        "SHOW FIELD KEYS FROM /e/",
        "SHOW TAG KEYS FROM cpu, mem LIMIT 1",
        f"SELECT * FROM cpu WHERE {mid}",
        f"SELECT * FROM cpu WHERE {mid} GROUP BY *",
        f"SELECT usage_idle, usage_user FROM cpu WHERE {rng} GROUP BY host",
        f"SELECT usage_user FROM cpu WHERE {rng} AND host = 'a'",
        f'SELECT "usage_idle"::field FROM cpu WHERE "host"::tag = \'b\' AND {rng} LIMIT 4',
        f"SELECT usage_idle FROM cpu WHERE {rng} LIMIT 5",
        f"SELECT usage_idle FROM cpu WHERE {rng} ORDER BY time DESC LIMIT 4",
        f"SELECT usage_idle FROM cpu WHERE {rng} GROUP BY host LIMIT 3 OFFSET 2",
        f"SELECT usage_idle FROM cpu WHERE {rng} AND region != '' GROUP BY host, region SLIMIT 1",
        f"SELECT usage_idle FROM cpu WHERE {rng} GROUP BY host SLIMIT 1 SOFFSET 1",
        f"SELECT usage_idle * 2 + 1, usage_idle + usage_user AS total FROM cpu WHERE {mid}",
        f"SELECT (usage_idle - 50) / 10, usage_user % 7, host FROM cpu WHERE {mid}",
        f"SELECT usage_idle FROM cpu WHERE host != 'a' AND {mid}",
        f"SELECT usage_idle FROM cpu WHERE host =~ /^(a|c)$/ AND {mid}",
        f"SELECT usage_idle FROM cpu WHERE host !~ /a/ AND {mid} GROUP BY host",
        f"SELECT usage_idle FROM cpu WHERE region = '' AND {mid}",
        f"SELECT usage_idle FROM cpu WHERE (host = 'a' OR host = 'c') AND {mid}",
        f"SELECT usage_idle FROM cpu WHERE {mid} AND (region = 'eu' OR host = 'c')",
        f"SELECT usage_idle FROM cpu WHERE time > {(t0 + 600) * NS} AND time < {(t0 + 1200) * NS}",
        f"SELECT usage_idle FROM cpu WHERE time >= {t0 + 600}s AND time <= {t0 + 1200}s",
        f"SELECT * FROM mem WHERE time > {(t0 + 600) * NS - 1} AND time < {(t0 + 1200) * NS + 1}",
        f"SELECT * FROM mem WHERE time >= '{_iso(t0 + 600)}' AND time <= '{_iso(t0 + 1500)}'",
        f"SELECT * FROM mem WHERE time > '{_iso(t0 + 600)}' AND time < '{_iso(t0 + 1500)}'",
        "SELECT usage_idle FROM cpu WHERE time > now() - 5h AND host = 'a' LIMIT 3",
        f"SELECT max(usage_idle) FROM cpu WHERE time > now() - 5h AND time <= {end}ms "
        "GROUP BY time(10m) fill(none)",
        f'SELECT * FROM "my meas" WHERE {rng}',
        f'SELECT "x.y" FROM "my meas" WHERE {rng} GROUP BY *',
        f'SELECT temp FROM "wea,ther" WHERE {rng} GROUP BY *',
        f"SELECT mean(used) FROM /^me/ WHERE {rng}",
        f"SELECT mean(temp) FROM /e/ WHERE {rng} GROUP BY time(30m)",
        f"SELECT mean(used), max(free), count(used) FROM mem WHERE {rng} GROUP BY time(15m)",
        f"SELECT mean(usage_idle) - mean(usage_user) FROM cpu WHERE {rng} GROUP BY time(20m), host",
        f"SELECT mean(usage_idle) * 2 AS dbl, max(usage_idle), max(usage_user) FROM cpu "
        f"WHERE {rng}",
        f"SELECT mean(usage_idle) FROM cpu WHERE {rng} GROUP BY time(10m) ORDER BY time DESC",
        f"SELECT max(usage_idle) FROM cpu WHERE {mid} GROUP BY time(5m), host ORDER BY time DESC",
        f"SELECT usage_idle FROM cpu WHERE {mid} GROUP BY host ORDER BY time DESC LIMIT 2",
        f"SELECT last(usage_idle) FROM cpu WHERE {mid} GROUP BY host ORDER BY time DESC SLIMIT 2",
        f"SELECT difference(mean(usage_idle)) FROM cpu WHERE {mid} AND host = 'b' "
        "GROUP BY time(5m) fill(0) ORDER BY time DESC",
        f"SELECT derivative(mean(usage_idle), 1s) FROM cpu WHERE {mid} GROUP BY time(5m), host "
        "ORDER BY time DESC LIMIT 3",
        f"SELECT mean(usage_idle) FROM cpu WHERE {rng} GROUP BY time(10m) LIMIT 3 OFFSET 2",
        f"SELECT mean(usage_idle) FROM cpu WHERE {rng} GROUP BY time(10m), host SLIMIT 2",
        f"SELECT count(usage_idle) FROM cpu WHERE {mid} GROUP BY time(1h, 15m)",
        f"SELECT count(usage_idle) FROM cpu WHERE {mid} GROUP BY time(1h, -10m), host",
        f"SELECT mean(usage_idle) FROM cpu; SELECT count(used) FROM mem WHERE {rng}",
        # N = 5 picks no point from a bucket of under 10: the first bucket must be full, as
        # influxd 1.6 drops a series whose first bucket has no percentile (docs/influxql.md)
        f"SELECT percentile(usage_idle, 5) FROM cpu WHERE {rng} "
        f"GROUP BY time(30m, {t0 % 1800}s), host fill(previous)",
        f"SELECT derivative(mean(usage_idle), 1s) FROM cpu WHERE {mid} AND host = 'b' "
        "GROUP BY time(5m)",
        f"SELECT derivative(mean(usage_idle), 1s) FROM cpu WHERE {mid} AND host = 'b' "
        "GROUP BY time(5m) fill(0)",
        f"SELECT non_negative_derivative(mean(usage_idle)) FROM cpu WHERE {mid} GROUP BY time(5m)",
        f"SELECT non_negative_difference(max(usage_idle)) AS nnd FROM cpu WHERE {mid} "
        "GROUP BY time(7m), host fill(previous)",
        f"SELECT difference(mean(used)) FROM mem WHERE {rng} GROUP BY time(10m) fill(linear)",
        f"SELECT derivative(usage_idle) FROM cpu WHERE {mid} AND host = 'b'",
        f"SELECT non_negative_derivative(usage_idle, 1m) FROM cpu WHERE {mid} GROUP BY host "
        "LIMIT 5",
        f"SELECT difference(used) FROM mem WHERE {rng} ORDER BY time DESC LIMIT 4",
        f"SELECT non_negative_difference(temp) FROM sensor WHERE {mid}",
        f"SELECT derivative(mean(usage_idle)) FROM cpu WHERE {rng}",
        f"SELECT derivative(usage_idle) FROM cpu WHERE {rng} GROUP BY time(1m)",
        f"SELECT usage_user FROM cpu WHERE usage_idle > 50 AND {mid}",
        f"SELECT usage_idle FROM cpu WHERE (usage_user > 10 OR host = 'c') AND {mid}",
        f"SELECT count(usage_user) FROM cpu WHERE usage_idle > 50 AND {mid} GROUP BY time(10m)",
        f"SELECT usage_idle FROM cpu WHERE usage_idle + usage_user > 100 AND {mid}",
        f"SELECT * FROM cpu WHERE usage_user < 5 AND usage_idle >= 20 AND {rng} GROUP BY host",
        f"SELECT mean(usage_idle) FROM cpu WHERE (usage_user <= 25 OR region = 'us') AND {rng} "
        "GROUP BY time(20m), host",
        f"SELECT derivative(mean(usage_idle), 1s) FROM cpu WHERE usage_user != 7 AND host = 'a' "
        f"AND {mid} GROUP BY time(10m)",
        f"SELECT max(used) - min(free) FROM mem WHERE free > 500000000 AND {rng}",
        f"SELECT usage_idle FROM cpu WHERE (usage_idle > 99.5 OR usage_idle < 0.5) AND {rng}",
        f"SELECT usage_idle FROM cpu WHERE usage_user = 0 AND {rng}",
        f"SELECT integral(temp) FROM sensor WHERE {rng} GROUP BY time(10m)",
        f"SELECT integral(temp, 1h) FROM sensor WHERE {mid} GROUP BY time(7m) fill(0)",
        f"SELECT integral(temp) FROM sensor WHERE {mid}",
        f"SELECT first(temp), last(temp), min(temp), max(temp) FROM sensor WHERE {mid}",
        f"SELECT frobnicate(usage_idle) FROM cpu WHERE {rng}",
        # integers where the answer is a float; booleans where InfluxDB refuses
        f"SELECT used / 3, used + 0.5, used * load FROM disk WHERE {mid} AND host = 'a'",
        f"SELECT mean(used), median(used), stddev(used) FROM disk WHERE {rng} GROUP BY host",
        f"SELECT integral(used, 1m) FROM disk WHERE {rng} AND host = 'a' GROUP BY time(30m)",
        f"SELECT derivative(max(used), 1m) FROM disk WHERE {mid} GROUP BY time(10m)",
        f"SELECT derivative(used) FROM disk WHERE {mid} AND host = 'a'",
        f"SELECT sum(used) / 4, mean(used) FROM disk WHERE {rng} GROUP BY time(30m) fill(1.5)",
        f"SELECT load::float, ok::float, used::float / 2 FROM disk WHERE {mid} AND host = 'b'",
        f"SELECT sum(load::integer), max(ok::integer), mean(used::float) FROM disk WHERE {rng}",
        f"SELECT mean(ok) FROM disk WHERE {rng}",
        f"SELECT ok * 2 FROM disk WHERE {rng}",
        f"SELECT difference(ok) FROM disk WHERE {rng}",
        f"SELECT sum(ok) FROM disk WHERE {rng} GROUP BY time(10m)",
        f"SELECT * FROM cpu WHERE {rng} GROUP BY time(5m)",
        "SELECT FROM cpu",
        "SELECT usage_idle FROM cpu WHERE time > 'yesterday'",
    ]
    for fill in ["null", "none", "previous", "linear", "0", "-1.5", "100"]:
        for f in ("mean", "count", "max"):
            out.append(
                f"SELECT {f}(usage_idle) FROM cpu WHERE {rng} AND host = 'b' "
                f"GROUP BY time(5m) fill({fill})"
            )
    for f in FUNCS:
        call = f if "(" in f else f"{f}(usage_idle)"
        # Points of several series on one timestamp reach integral in an order influxd
        # leaves undefined (the later one counts): one series for it.
        one = " AND host = 'a'" if f.startswith("integral") else ""
        out.append(f"SELECT {call} FROM cpu WHERE {rng}{one}")
        out.append(f"SELECT {call} FROM cpu WHERE {mid} AND host = 'a'")
        out.append(f"SELECT {call} FROM cpu WHERE {mid}{one} GROUP BY time(10m)")
        if f.startswith("integral"):
            continue  # influxd 1.6 misorders integral's series (docs/influxql.md)
        out.append(f"SELECT {call} FROM cpu WHERE {mid} GROUP BY host")
        out.append(f"SELECT {call} FROM cpu WHERE {rng} GROUP BY time(7m, 2m), host fill(none)")
        out.append(f"SELECT {call} FROM cpu WHERE {mid} GROUP BY time(30m), * fill(previous)")
    return out + typed_queries(t0)


def _iso(seconds: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
