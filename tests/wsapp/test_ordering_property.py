"""Property: concurrent senders on two processes; every client sees each room's seqs gapless, once, identically."""

from __future__ import annotations

import asyncio
import random

import pytest

from chat.models import Room
from tests.wsapp.conftest import UNLIMITED_RATES, Peer, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

SEEDS = [1, 2, 3]


def test_concurrent_senders_see_identical_gapless_sequences(start_server, make_user, aio):
    """Seeded random schedules: 6 clients (3 users) on 2 processes, 2 rooms, random sends, joins and pauses."""
    servers = [start_server(env=UNLIMITED_RATES), start_server(env=UNLIMITED_RATES)]
    users = [make_user(f"user{i}") for i in range(3)]
    cookies = [session_cookie(u) for u in users]
    for seed in SEEDS:
        rooms = [f"r{seed}-a", f"r{seed}-b"]
        for slug in rooms:
            Room.objects.create(slug=slug, name=slug)
        aio(_schedule(random.Random(seed), servers, cookies, rooms))


async def _schedule(rng: random.Random, servers, cookies, rooms) -> None:
    peers = [await Peer.open(servers[i % 2].ws, cookies[i % 3]) for i in range(6)]
    for peer in peers:
        for slug in rooms:
            await peer.join(slug)
    acked: dict[str, dict[int, str]] = {slug: {} for slug in rooms}

    async def client(index: int, peer: Peer) -> int:
        count = rng.randint(5, 25)
        for n in range(count):
            slug = rng.choice(rooms)
            body = f"p{index}-{n}"
            if rng.random() < 0.3:
                # Pipelined: do not wait for the ack before the next frame.
                await peer.send({"type": "send", "room": slug, "body": body, "client_id": body})
            else:
                answer = await peer.send_message(slug, body, body)
                assert answer["type"] == "ack", answer
            if rng.random() < 0.2:
                await asyncio.sleep(rng.random() / 100)  # vary the interleaving, not a synchronisation
        return count

    plan = [client(i, peer) for i, peer in enumerate(peers)]
    counts = await asyncio.wait_for(asyncio.gather(*plan), 60)
    for peer, count in zip(peers, counts, strict=True):
        sent = await peer.wait_for(lambda f: f["type"] == "ack", count, wait=30)
        for ack in sent:
            acked[ack["room"]][ack["seq"]] = ack["client_id"]
    total = sum(len(v) for v in acked.values())
    assert total >= 6 * 5
    for slug in rooms:
        count = len(acked[slug])
        assert sorted(acked[slug]) == list(range(1, count + 1)), slug
        reference = None
        for peer in peers:
            await peer.wait_seqs(slug, count, wait=30)
            seqs = peer.seqs(slug)
            assert seqs == list(range(1, count + 1)), (slug, seqs)
            bodies = [(f["seq"], f["body"]) for f in peer.frames if f["type"] == "message" and f["room"] == slug]
            assert all(acked[slug][seq] == body for seq, body in bodies)
            reference = reference or bodies
            assert bodies == reference
    for peer in peers:
        await peer.close()
