"""``/ws`` in-process: the endpoint on the in-memory twins, driven by asgiref's ``ApplicationCommunicator``.

The database and the session check are real (Django's test database); Redis is
replaced by the twins, so these run in well under a second each.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chat import services
from chat.logkeys import CONTROL_CHANNEL
from chat.models import Room
from tests.wsapp.conftest import session_cookie
from tests.wsapp.inprocess import WAIT, Client, Cluster, Process
from wsapp.errors import Close

pytestmark = pytest.mark.django_db(transaction=True)

Scenario = Callable[[Cluster, Process], Awaitable[None]]


def run(scenario: Scenario) -> None:
    async def main() -> None:
        cluster = Cluster()
        try:
            process = await cluster.start()
            async with asyncio.timeout(WAIT * 3):
                await scenario(cluster, process)
        finally:
            await cluster.stop()

    asyncio.run(main())


async def joined_client(process: Process, session: str, room: str) -> tuple[Client, dict[str, Any]]:
    client = Client(process, session)
    assert (await client.connect())["type"] == "websocket.accept"
    await client.send({"type": "join", "room": room})
    joined, _ = await client.receive_until("joined")
    return client, joined


def test_no_session_is_closed_4401_without_a_frame(db: Any) -> None:
    """A socket without a valid session is accepted, then closed with 4401 before any data frame."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        client = Client(process, "no-such-session")
        assert (await client.connect())["type"] == "websocket.accept"
        closed = await client.receive()
        assert closed["type"] == "websocket.close" and closed["code"] == Close.UNAUTHENTICATED

    run(scenario)


def test_send_is_acked_and_delivered_to_members_on_every_process(make_user: Any) -> None:
    """A send on one process is acked to the sender and reaches a member joined on another process."""
    Room.objects.create(slug="lobby", name="Lobby")
    ann, bob = session_cookie(make_user("ann")), session_cookie(make_user("bob"))

    async def scenario(cluster: Cluster, first: Process) -> None:
        second = await cluster.start()
        sender, _ = await joined_client(first, ann, "lobby")
        reader, joined = await joined_client(second, bob, "lobby")
        assert joined["last_seq"] == 0
        await sender.send({"type": "send", "room": "lobby", "body": "hello", "client_id": "c1"})
        ack, _ = await sender.receive_until("ack")
        message, _ = await reader.receive_until("message")
        assert (ack["seq"], ack["client_id"]) == (1, "c1")
        assert (message["seq"], message["body"], message["user"]["username"], message["ts"]) == (
            1,
            "hello",
            "ann",
            ack["ts"],
        )
        # The same client_id again: acked with the original seq, nothing new delivered.
        await sender.send({"type": "send", "room": "lobby", "body": "hello", "client_id": "c1"})
        again, _ = await sender.receive_until("ack")
        assert again["seq"] == 1
        await sender.disconnect()
        await reader.disconnect()

    run(scenario)


def test_bad_frames_get_errors_and_the_socket_stays_open(make_user: Any) -> None:
    """Invalid JSON and a send to a room not joined are refused with error frames; ping still answers."""
    session = session_cookie(make_user("ann"))

    async def scenario(cluster: Cluster, process: Process) -> None:
        client = Client(process, session)
        await client.connect()
        await client.communicator.send_input({"type": "websocket.receive", "text": "{not json"})
        assert (await client.receive())["code"] == "bad_request"
        await client.send({"type": "send", "room": "lobby", "body": "x", "client_id": "c9"})
        refused = await client.receive()
        assert (refused["code"], refused["ref"]) == ("not_joined", "c9")
        await client.send({"type": "ping"})
        assert await client.receive() == {"type": "pong"}
        await client.disconnect()

    run(scenario)


def test_a_session_revoked_on_the_control_channel_closes_4401(make_user: Any) -> None:
    """A ``session`` control event naming the socket's session closes it with 4401 at once."""
    Room.objects.create(slug="lobby", name="Lobby")
    ann = make_user("ann")
    session = session_cookie(ann)

    async def scenario(cluster: Cluster, process: Process) -> None:
        client, _ = await joined_client(process, session, "lobby")
        event = {"kind": "session", "user_id": ann.pk, "session_key": session}
        cluster.broker.publish(CONTROL_CHANNEL, json.dumps(event))
        closed, _ = await client.receive_until("websocket.close")
        assert closed["code"] == Close.UNAUTHENTICATED

    run(scenario)


def test_a_removed_member_gets_left_for_the_private_room(make_user: Any) -> None:
    """Removed from a private room while joined: the ``access`` control event ends the subscription with ``left``."""
    owner, guest = make_user("owner"), make_user("guest")
    private = services.room_create(name="Secret", private=True, creator=owner, members=[guest])
    session = session_cookie(guest)

    async def scenario(cluster: Cluster, process: Process) -> None:
        client, _ = await joined_client(process, session, private.slug)
        await asyncio.to_thread(services.room_member_remove, room=private, user=guest)
        event = {"kind": "access", "user_id": guest.pk, "room_id": private.pk}
        cluster.broker.publish(CONTROL_CHANNEL, json.dumps(event))
        left, _ = await client.receive_until("left")
        assert left["room"] == private.slug
        await client.send({"type": "send", "room": private.slug, "body": "x", "client_id": "c1"})
        refused, _ = await client.receive_until("error")
        assert refused["code"] == "not_joined"
        await client.disconnect()

    run(scenario)
