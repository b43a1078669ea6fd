"""Server resources do not grow per socket where they must not: Redis connections."""

from __future__ import annotations

import asyncio

import pytest
import redis as redis_sync

from tests.wsapp.conftest import Peer, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def test_open_sockets_share_the_process_redis_connections(start_server, make_user, room, aio, redis_server_process):
    """50 authenticated, joined sockets add no Redis connection: the pool and one pub/sub serve them all."""
    server = start_server()
    cookies = [session_cookie(make_user(f"user{i}")) for i in range(5)]
    r = redis_sync.Redis.from_url(redis_server_process.url)

    def clients() -> int:
        return len(r.client_list())

    async def scenario():
        warm = await Peer.open(server.ws, cookies[0])
        await warm.join("lobby")
        before = await asyncio.to_thread(clients)
        peers = [await Peer.open(server.ws, cookies[i % 5]) for i in range(50)]
        for peer in peers:
            await peer.join("lobby")
        after = await asyncio.to_thread(clients)
        assert after - before <= 3, (before, after)

    try:
        aio(scenario())
    finally:
        r.close()
