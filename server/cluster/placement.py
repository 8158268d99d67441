"""Which nodes own a shard: rendezvous (highest random weight) hashing.

Each (node, shard) pair gets a pseudo-random weight from a hash; a shard's
owners are the ``replication`` live nodes with the highest weights. Every node
computes the same owners from the same member list, with no coordination, and
when a node leaves only the shards it owned get a new owner (the next
highest weight): the others stay where they are, so their replicas need no
catch-up. When it comes back, it gets exactly those shards back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(node: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{node}\x00{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def owners(shard: int, members: Iterable[str], replication: int) -> list[str]:
    """The ``replication`` owners of ``shard`` among ``members``, highest weight first."""
    ranked = sorted(set(members), key=lambda node: (weight(node, shard), node), reverse=True)
    return ranked[:replication]


def placement(shards: int, members: Iterable[str], replication: int) -> dict[int, list[str]]:
    """Shard -> its owners, for every shard."""
    live = sorted(set(members))
    return {s: owners(s, live, replication) for s in range(shards)}


def shard_of(tag_id: int, shards: int) -> int:
    """The shard of a tag: fixed for the cluster's life (``shards`` never changes)."""
    return tag_id % shards
