"""What the server's handlers need of cluster mode, without importing NATS.

:class:`xtsdb.server.cluster.node.ClusterNode` implements it; a single-node
server has ``ctx.cluster is None`` and never loads that module.
"""

from __future__ import annotations

from typing import Any, Protocol


class Cluster(Protocol):
    async def status(self) -> dict[str, Any]:
        """What ``cluster_status`` answers (see :mod:`xtsdb.protocol.cluster`)."""
        ...
