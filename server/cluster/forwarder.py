"""Reads for shards another node holds, forwarded over the binary protocol.

One SDK :class:`~xtsdb.client.aio.AsyncClient` per peer address, opened on
first use and dropped on a connection error (the next forward reconnects).
The request goes out as its op's declaration encodes it, with ``fwd`` set in
the envelope so that the peer answers from its own engine and never forwards
again; the answer is parsed by the same declaration, so the peer's errors (not
found, invalid input) reach the client unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from xtsdb.client._core import ClientCore, Plan, Step
from xtsdb.client.aio import AsyncClient
from xtsdb.protocol.declare import Message, Op

FORWARD_TIMEOUT = 30.0


def _plan(core: ClientCore, op: Op[Any, Any], req: Message, extra: dict[str, Any]) -> Plan[Any]:
    msg = op.encode(core.next_id(), req)
    msg.update(extra)
    [resp] = yield Step([core.request(msg)], 1)
    return op.parse_answer(resp)


class Forwarder:
    def __init__(self, token: str | None = None) -> None:
        self._clients: dict[str, AsyncClient] = {}
        self._lock = asyncio.Lock()
        self._token = token
        self.forwarded = 0

    async def ask(
        self, address: str, op: Op[Any, Any], req: Message, min_seq: int | None
    ) -> Message:
        client = await self._client(address)
        extra: dict[str, Any] = {"fwd": True}
        if min_seq:
            extra["min_seq"] = min_seq
        self.forwarded += 1
        try:
            answer: Message = await client._drive(
                _plan(client._core, op, req, extra), FORWARD_TIMEOUT
            )
        except (ConnectionError, TimeoutError, OSError):
            await self._drop(address)
            raise
        return answer

    async def _client(self, address: str) -> AsyncClient:
        async with self._lock:
            client = self._clients.get(address)
            if client is None:
                kwargs: dict[str, Any] = {"token": self._token} if self._token else {}
                client = await AsyncClient.connect(f"xtsdb://{address}", timeout=10.0, **kwargs)
                self._clients[address] = client
            return client

    async def _drop(self, address: str) -> None:
        async with self._lock:
            client = self._clients.pop(address, None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        for address in list(self._clients):
            await self._drop(address)
