"""``xtsdb cluster status``: what a node sees of its cluster, for an operator.

Members, then one line per shard with its owners and each replica's lag (frames
of the write log it has not applied yet), worst lag last in a summary: the
questions asked during an incident are "who is up", "who holds shard N" and
"is anyone behind". ``--json`` prints the answer as the server gave it.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sync import Client


def add_commands(sub: Any) -> None:
    """Add ``cluster status`` to the ``xtsdb`` subcommands ``sub``."""
    p = sub.add_parser("cluster", help="cluster mode: members, shard owners, replica lag")
    cluster_sub = p.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    c = cluster_sub.add_parser("status", help="members, each shard's owners and replicas' lag")
    c.add_argument("--json", action="store_true", help="the server's answer as JSON")
    c.set_defaults(run=cmd_cluster_status)


def cmd_cluster_status(client: Client, args: argparse.Namespace) -> int:
    status = client.cluster_status()
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True, default=str))
    else:
        print("\n".join(format_status(status)))
    return 0


def _since(started_us: Any) -> str:
    if not isinstance(started_us, int) or started_us <= 0:
        return ""
    return "up since " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_us / 1e6))


def _shard_order(key: Any) -> tuple[int, str]:
    text = str(key)
    return (int(text), "") if text.isdigit() else (1 << 62, text)


def format_status(status: dict[str, Any]) -> list[str]:
    """The lines ``cluster status`` prints for a ``cluster_status`` answer."""
    members: dict[str, Any] = status.get("members") or {}
    owners: dict[Any, list[str]] = status.get("owners") or {}
    replicas: dict[str, dict[Any, Any]] = status.get("replicas") or {}
    shards, replication = status.get("shards", len(owners)), status.get("replication", "?")
    lines = [
        f"node {status.get('node', '?')} answering: {len(members)} members, {shards} shards, "
        f"replication {replication}, write log at sequence {status.get('stream_last_seq', '?')}",
        "",
        "members:",
    ]
    width = max((len(str(m)) for m in members), default=0)
    for name in sorted(members):
        info = members[name] if isinstance(members[name], dict) else {}
        since = _since(info.get("started_us"))
        lines.append(f"  {name:<{width}}  {info.get('address', '?')}  {since}".rstrip())
    lines += ["", "shard  owners (lag in frames behind the write log)"]

    def lag_of(node: str, shard: Any) -> Any:
        # Shard keys may arrive as ints or strings (msgpack keeps what the server used).
        per_shard = replicas.get(node) or {}
        entry = per_shard.get(shard, per_shard.get(str(shard), per_shard.get(_int(shard))))
        return entry.get("lag", "?") if isinstance(entry, dict) else "?"

    worst: tuple[Any, str, Any] | None = None
    unowned = []
    for shard in sorted(owners, key=_shard_order):
        nodes = owners[shard] or []
        if not nodes:
            unowned.append(str(shard))
        cells = []
        for node in nodes:
            lag = lag_of(node, shard)
            cells.append(f"{node} ({lag})")
            if isinstance(lag, int) and (worst is None or lag > worst[0]):
                worst = (lag, node, shard)
        lines.append(f"  {shard!s:>4}  {', '.join(cells) or 'NO OWNER'}")
    lines.append("")
    if unowned:
        lines.append(f"shards without an owner: {', '.join(unowned)}")
    if worst is not None:
        lines.append(f"largest lag: {worst[0]} frames ({worst[1]}, shard {worst[2]})")
    return lines


def _int(key: Any) -> Any:
    text = str(key)
    return int(text) if text.isdigit() else key
