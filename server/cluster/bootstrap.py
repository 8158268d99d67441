"""Connecting to NATS and creating (or joining) the cluster's stream and buckets.

Every node runs :func:`bootstrap` at start; it is idempotent. The first node
creates the write-log stream and the key-value buckets; the others find them
and verify them. The number of shards, the replication and the heartbeat are fixed when the
cluster is created: the first node stores them in the ``config`` bucket with
``create`` (which fails if the key exists), and every node, first or not,
reads them back and refuses to start if its own disagree.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import (
    BucketNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from xtsdb.protocol.errors import InvalidInput, Unavailable
from xtsdb.server.config import ServerConfig

log = logging.getLogger("xtsdb.cluster")

STREAM = "XTSDB_LOG"
SUBJECT_PREFIX = "xtsdb.shard."
BOOTSTRAP_TIMEOUT = 60.0  # seconds to create or join the streams once NATS answers
MAX_IN_FLIGHT = 4096  # frames published and not yet acknowledged (then publishing waits)
MEMBERS, SETTINGS = "xtsdb_members", "xtsdb_config"
CATALOG_STREAM, CATALOG_SUBJECT = "XTSDB_CATALOG", "xtsdb.catalog"


def subject(shard: int) -> str:
    return f"{SUBJECT_PREFIX}{shard}"


@dataclass
class Handles:
    nc: NATS
    js: JetStreamContext
    members: KeyValue
    settings: KeyValue
    replicas: int  # of the stream: min(3, NATS servers)


async def connect(config: ServerConfig, **callbacks: Any) -> NATS:
    """A NATS connection that reconnects forever once made; the first one must succeed
    within ``join_timeout(config)`` (NATS may start after the node, not never).

    The first connection is tried here, a couple of attempts per ``nats.connect``,
    rather than by nats-py's own endless retry: a cancellation (SIGTERM while the
    node waits for NATS) that lands as an attempt fails can be lost inside
    Python 3.11's ``wait_for``, and an endless retry then never ends; this loop
    sees the lost request in ``Task.cancelling()`` and stops.
    """
    tls = None
    if config.nats_tls_ca is not None:
        tls = ssl.create_default_context(cafile=str(config.nats_tls_ca))
    creds = str(config.nats_creds) if config.nats_creds is not None else None
    timeout = join_timeout(config)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    me = asyncio.current_task()
    while True:
        left = deadline - loop.time()
        try:
            if left <= 0:
                raise TimeoutError
            nc: NATS = await asyncio.wait_for(
                nats.connect(
                    servers=list(config.cluster),
                    name=f"xtsdb-{config.node_id}",
                    user_credentials=creds,
                    tls=tls,
                    max_reconnect_attempts=1,  # then NoServersError: this loop retries
                    reconnect_time_wait=0.25,
                    connect_timeout=min(5.0, timeout),
                    **callbacks,
                ),
                left,
            )
        except TimeoutError:
            raise Unavailable(
                f"no NATS server of {', '.join(config.cluster)} answered within {timeout:.0f} s"
            ) from None
        except (OSError, NatsError):
            if me is not None and me.cancelling():
                raise asyncio.CancelledError from None
            await asyncio.sleep(0.25)
            continue
        if me is not None and me.cancelling():  # connected just as the node was stopped
            await nc.close()
            raise asyncio.CancelledError
        # Connected: from now on a NATS server restarting must not end the node.
        # nats-py reads this option at each reconnect attempt.
        nc.options["max_reconnect_attempts"] = -1
        return nc


def member_ttl(heartbeat: float) -> float:
    """How long a member entry lives unless put again: 3 heartbeats and a second more, so
    that a loaded machine's late heartbeat does not move shards back and forth (seen at
    0.5 s heartbeats with 3 heartbeats alone: a member gone for 0.5 s every few seconds)."""
    return 3 * heartbeat + 1.0


def join_timeout(config: ServerConfig) -> float:
    """How long the first connection to NATS may take: NATS may start after the node."""
    return 10 * config.heartbeat


async def bootstrap(nc: NATS, config: ServerConfig) -> Handles:
    """Create or join; nodes started together retry until ``join_timeout`` (a stream
    another node just created answers nothing until its replicas elected a leader)."""
    # Reachable NATS servers electing leaders under load may take a while (measured:
    # over 5 s with the test suite running on 2 cores): not only a few heartbeats.
    deadline = asyncio.get_running_loop().time() + max(BOOTSTRAP_TIMEOUT, join_timeout(config))
    while True:
        try:
            return await _bootstrap(nc, config)
        except (NoStreamResponseError, ServiceUnavailableError, TimeoutError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise Unavailable(
                    f"could not create or join the cluster's streams: {exc!r}"
                ) from None
            log.info("the cluster's streams are not ready yet (%r); trying again", exc)
            await asyncio.sleep(0.2)


async def _bootstrap(nc: NATS, config: ServerConfig) -> Handles:
    js = nc.jetstream(timeout=5.0, publish_async_max_pending=MAX_IN_FLIGHT)
    # One replica per NATS server up to 3 (JetStream's usual maximum); the servers
    # the client discovered count too, so naming one URL of a cluster is enough.
    known = max(len(set(config.cluster)), len({u.netloc for u in nc.servers}))
    replicas = max(1, min(3, known))
    stream = StreamConfig(
        name=STREAM,
        subjects=[SUBJECT_PREFIX + "*"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=config.stream_max_age,
        num_replicas=replicas,
    )
    try:
        info = await js.stream_info(STREAM)
        replicas = info.config.num_replicas or 1
        if info.config.max_age != config.stream_max_age:
            log.warning(
                "the write log keeps frames %.0f s, this node asks %.0f s: the stream's "
                "setting applies",
                info.config.max_age or 0,
                config.stream_max_age,
            )
    except NotFoundError:
        await js.add_stream(stream)
        log.info("created the write log %s (%d replicas)", STREAM, replicas)
    members = await _bucket(js, MEMBERS, replicas, ttl=member_ttl(config.heartbeat))
    await _stream(js, CATALOG_STREAM, [CATALOG_SUBJECT], replicas, max_age=None)
    settings = await _bucket(js, SETTINGS, replicas)
    for name in (STREAM, CATALOG_STREAM, *(f"KV_{b}" for b in (MEMBERS, SETTINGS))):
        await _wait_leader(js, name)
    await _check_settings(settings, config)
    return Handles(nc, js, members, settings, replicas)


async def _wait_leader(js: JetStreamContext, stream: str) -> None:
    """Until ``stream`` has a leader (raises TimeoutError after a while: bootstrap retries)."""
    for _ in range(50):
        info = await js.stream_info(stream)
        if info.cluster is None or info.cluster.leader:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"stream {stream} has no leader")


async def _stream(
    js: JetStreamContext, name: str, subjects: list[str], replicas: int, max_age: float | None
) -> None:
    """Create the stream ``name`` unless it exists (another node may create it at once)."""
    try:
        await js.stream_info(name)
        return
    except NotFoundError:
        pass
    cfg = StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=max_age,
        num_replicas=replicas,
    )
    try:
        await js.add_stream(cfg)
    except Exception:  # made by another node between the two calls
        await js.stream_info(name)


async def _bucket(js: JetStreamContext, name: str, replicas: int, ttl: float = 0) -> KeyValue:
    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        pass
    # direct=False: every get goes to the bucket's leader. Direct gets may be answered by
    # any replica, and a node starting was seen reading peers' first heartbeats, seconds
    # old, through them.
    cfg = KeyValueConfig(bucket=name, history=1, replicas=replicas, ttl=ttl or None, direct=False)
    try:
        return await js.create_key_value(cfg)
    except Exception:  # another node created it between the two calls: join it
        return await js.key_value(name)


async def _check_settings(settings: KeyValue, config: ServerConfig) -> None:
    """The settings every node must share, fixed by the first node: refuse to join otherwise."""
    for key, mine, why in (
        ("shards", config.shards, "tag ids would map to other shards"),
        ("replication", config.replication, "nodes would disagree on shard owners"),
        ("heartbeat", config.heartbeat, "the members bucket expires entries after 3 of them"),
    ):
        try:
            await settings.create(key, json.dumps(mine).encode())
            log.info("created the cluster with %s %s", key, mine)
        except KeyWrongLastSequenceError:
            pass
        fixed = json.loads((await settings.get(key)).value or b"0")
        if fixed != mine:
            raise InvalidInput(
                f"the cluster was created with {key} {fixed}, this node has --{key} {mine}: "
                f"every node must agree ({why})"
            )
