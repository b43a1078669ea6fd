"""``KAIWA_ACK_REPLICAS`` on the append path: an ack waits for the replicas (protocol.md 7.2)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest
import redis.asyncio as aioredis

from chat.epochs import MemoryEpochs
from chat.messagelog import MessageLog
from chat.redistopology import ReplicasDidNotConfirm
from tests.redis_topology import SentinelTopology

pytest_plugins = ["tests.redis_topology_fixtures"]


def test_acks_wait_for_the_replica_and_a_duplicate_answer_does_too(sentinel_topology: SentinelTopology) -> None:
    """With the replica stopped an append is not acked (ReplicasDidNotConfirm, answered ``unavailable``), and
    neither is its re-send answered from the dedup token on another connection: the answer writes, so WAIT
    covers the original. Once the replica is back the re-send is acked with the original seq."""
    primary, replica = sentinel_topology.primary, sentinel_topology.replicas[0]
    assert replica.process is not None
    pid = replica.process.pid

    async def main() -> None:
        store = MemoryEpochs()
        clients = [aioredis.Redis.from_url(primary.url), aioredis.Redis.from_url(primary.url)]
        logs = [
            MessageLog(c, dedup_seconds=600, stream_keep=100, epoch_store=store, ack_replicas=1, ack_timeout_ms=300)
            for c in clients
        ]
        fields: dict[str, Any] = {"room_id": 77, "slug": "acks", "user_id": 1, "username": "ann", "body": "hi"}
        try:
            first = await logs[0].append(**fields, client_id="c1", token="c1", floor=0)
            await logs[1].settle(room_id=77, slug="acks", floor=0)
            os.kill(pid, signal.SIGSTOP)
            try:
                with pytest.raises(ReplicasDidNotConfirm):
                    await logs[0].append(**fields, client_id="c2", token="c2")
                with pytest.raises(ReplicasDidNotConfirm):
                    await logs[1].append(**fields, client_id="c2", token="c2")
            finally:
                os.kill(pid, signal.SIGCONT)
            again = await logs[1].append(**fields, client_id="c2", token="c2")
            assert (again.seq, again.duplicate) == (first.seq + 1, True)
        finally:
            for c in clients:
                await c.aclose()

    asyncio.run(asyncio.wait_for(main(), 30))
