"""Server resources do not grow per socket where they must not: Redis connections."""

from __future__ import annotations

import asyncio

import pytest
import redis as redis_sync

from tests.wsapp.conftest import Peer, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def test_open_sockets_share_the_process_redis_connections(start_server, make_user, room, aio, redis_server_process):
    """50 sockets opened and joined at once all succeed; Redis connections stay within the process pool."""
    server = start_server(env={"KAIWA_REDIS_POOL_SIZE": "8"})
    cookies = [session_cookie(make_user(f"user{i}")) for i in range(5)]
    r = redis_sync.Redis.from_url(redis_server_process.url)

    def clients() -> int:
        return len(r.client_list())

    async def scenario():
        warm = await Peer.open(server.ws, cookies[0])
        await warm.join("lobby")
        before = await asyncio.to_thread(clients)
        # Concurrent handshakes and joins: session checks and room lookups overlap.
        peers = await asyncio.gather(*[Peer.open(server.ws, cookies[i % 5]) for i in range(50)])
        await asyncio.gather(*[peer.join("lobby") for peer in peers])
        after = await asyncio.to_thread(clients)
        # At most the pool's size (concurrent joins use several), never one per socket.
        assert after - before <= 8, (before, after)

    try:
        aio(scenario())
    finally:
        r.close()
