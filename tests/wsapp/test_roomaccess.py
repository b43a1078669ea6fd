"""A join's remembered room access: what it remembers, what drops it, and that it never lets a removed user in."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from django.test import override_settings

from chat import selectors, services
from chat.models import Room
from tests.conftest import ROOT, server_env
from tests.wsapp.conftest import Peer, session_cookie
from tests.wsapp.inprocess import Client, Cluster
from wsapp.roomaccess import QUIET_SECONDS, RoomAccess, room_for_join

PUBLIC = Room(pk=1, slug="lobby", name="Lobby", private=False)
SECRET = Room(pk=2, slug="secret", name="Secret", private=True)
T0 = 1000.0  # the control channel's subscription, on the monotonic clock


def _access() -> RoomAccess:
    access = RoomAccess()
    access.reset(now=T0)
    return access


def test_a_grant_is_answered_with_the_time_it_was_read():
    """A public room serves every user; a private room only the member it was read for."""
    access = _access()
    access.put(user_id=7, room=PUBLIC, read_at=T0 + 1)
    access.put(user_id=7, room=SECRET, read_at=T0 + 2)
    assert access.get(user_id=8, slug="lobby", now=T0 + 3) == (PUBLIC, T0 + 1)
    assert access.get(user_id=7, slug="secret", now=T0 + 3) == (SECRET, T0 + 2)
    assert access.get(user_id=8, slug="secret", now=T0 + 3) is None
    assert access.get(user_id=7, slug="elsewhere", now=T0 + 3) is None


def test_nothing_read_before_the_control_channel_was_subscribed_is_remembered():
    """Events sent while the channel was not subscribed are lost: reads from then are not kept, and a
    (re)subscription forgets everything."""
    fresh = RoomAccess()
    fresh.put(user_id=7, room=PUBLIC, read_at=T0)
    assert fresh.get(user_id=7, slug="lobby", now=T0) is None
    access = _access()
    access.put(user_id=7, room=PUBLIC, read_at=T0 - 0.001)
    assert access.get(user_id=7, slug="lobby", now=T0 + 1) is None
    access.put(user_id=7, room=SECRET, read_at=T0 + 1)
    access.reset(now=T0 + 5)
    assert access.get(user_id=7, slug="secret", now=T0 + 6) is None
    assert len(access) == 0


def test_an_event_drops_what_it_concerns_and_nothing_else():
    """forget_room drops the room and its members; forget_user that user's memberships; forget_member one."""
    other = Room(pk=3, slug="other", name="Other", private=True)
    access = _access()
    for room in (PUBLIC, SECRET, other):
        for user_id in (7, 8):
            access.put(user_id=user_id, room=room, read_at=T0 + 1)
    access.forget_room(SECRET.pk, now=T0 + 10)
    assert access.get(user_id=7, slug="secret", now=T0 + 11) is None
    assert access.get(user_id=7, slug="other", now=T0 + 11) is not None
    access.forget_user(7, now=T0 + 12)
    assert access.get(user_id=7, slug="other", now=T0 + 13) is None
    assert access.get(user_id=8, slug="other", now=T0 + 13) is not None
    assert access.get(user_id=7, slug="lobby", now=T0 + 13) is not None  # public: no membership to drop
    access.forget_member(room_id=other.pk, user_id=8)
    assert access.get(user_id=8, slug="other", now=T0 + 13) is None


@pytest.mark.parametrize("read_at", [T0 + 9.0, T0 + 10.0, T0 + 10.0 + QUIET_SECONDS - 0.01])
def test_a_read_before_or_just_after_an_event_is_not_remembered(read_at):
    """A read that started before the event (its answer may predate it) or within QUIET_SECONDS after it (the
    deleting transaction may not have committed) is used once and not kept; later reads are kept again."""
    access = _access()
    access.forget_room(SECRET.pk, now=T0 + 10)
    access.put(user_id=7, room=SECRET, read_at=read_at)
    assert access.get(user_id=7, slug="secret", now=T0 + 20) is None
    access.forget_user(8, now=T0 + 10)
    access.put(user_id=8, room=PUBLIC, read_at=read_at)
    assert access.get(user_id=8, slug="lobby", now=T0 + 20) is None
    later = T0 + 10 + QUIET_SECONDS
    access.put(user_id=7, room=SECRET, read_at=later)
    assert access.get(user_id=7, slug="secret", now=T0 + 20) == (SECRET, later)


@override_settings(KAIWA_ROOM_ACCESS_CACHE_SECONDS=30.0)
def test_a_grant_expires():
    """After KAIWA_ROOM_ACCESS_CACHE_SECONDS a grant is read from the database again (changes behind signals)."""
    access = _access()
    access.put(user_id=7, room=PUBLIC, read_at=T0 + 1)
    access.put(user_id=7, room=SECRET, read_at=T0 + 1)
    assert access.get(user_id=7, slug="secret", now=T0 + 31) is not None
    assert access.get(user_id=7, slug="secret", now=T0 + 31.5) is None
    assert access.get(user_id=7, slug="lobby", now=T0 + 31.5) is None


@override_settings(KAIWA_ROOM_ACCESS_CACHE_SECONDS=0.0)
def test_zero_seconds_turns_it_off():
    """KAIWA_ROOM_ACCESS_CACHE_SECONDS=0 remembers nothing."""
    access = _access()
    access.put(user_id=7, room=PUBLIC, read_at=T0 + 1)
    assert len(access) == 0


@override_settings(KAIWA_ROOM_ACCESS_CACHE_ENTRIES=3)
def test_the_number_of_entries_is_bounded():
    """Past KAIWA_ROOM_ACCESS_CACHE_ENTRIES the oldest memberships go first."""
    access = _access()
    for user_id in range(1, 6):
        access.put(user_id=user_id, room=SECRET, read_at=T0 + user_id)
    assert len(access) <= 3
    assert access.get(user_id=5, slug="secret", now=T0 + 6) is not None
    assert access.get(user_id=1, slug="secret", now=T0 + 6) is None


def test_a_renamed_room_is_not_found_under_its_old_slug():
    """A grant read under a new slug replaces the old one (room_updated drops it too)."""
    access = _access()
    access.put(user_id=7, room=PUBLIC, read_at=T0 + 1)
    renamed = Room(pk=PUBLIC.pk, slug="hall", name="Hall", private=False)
    access.put(user_id=7, room=renamed, read_at=T0 + 2)
    assert access.get(user_id=7, slug="lobby", now=T0 + 3) is None
    assert access.get(user_id=7, slug="hall", now=T0 + 3) == (renamed, T0 + 2)


@pytest.mark.django_db(transaction=True)
def test_refusals_are_never_remembered(make_user):
    """An unknown slug or a private room the user is not in is asked again: a room created or a membership
    added later is found at once."""
    alice, bob = make_user("alice"), make_user("bob")
    secret = services.room_create(name="Secret", slug="secret", private=True, creator=alice, members=[])
    access = _access()
    access.reset(now=0.0)

    async def check() -> None:
        assert (await room_for_join(access, user_id=bob.pk, slug="later"))[0] is None
        assert (await room_for_join(access, user_id=bob.pk, slug="secret"))[0] is None
        await asyncio.to_thread(Room.objects.create, slug="later", name="Later")
        await asyncio.to_thread(services.room_member_add, room=secret, user=bob)
        assert (await room_for_join(access, user_id=bob.pk, slug="later"))[0] is not None
        assert (await room_for_join(access, user_id=bob.pk, slug="secret"))[0] is not None

    asyncio.run(asyncio.wait_for(check(), 10))


def _counting_reads(monkeypatch: pytest.MonkeyPatch, gate: threading.Event | None = None) -> list[str]:
    """Count the database reads of rooms (the real selector runs; ``gate`` holds each read until set)."""
    reads: list[str] = []
    real = selectors.room_get_for_user_id

    def counted(*, user_id: int | None, slug: str) -> Room | None:
        reads.append(slug)
        if gate is not None:
            assert gate.wait(10), "the test never opened the gate"
        return real(user_id=user_id, slug=slug)

    monkeypatch.setattr(selectors, "room_get_for_user_id", counted)
    return reads


@pytest.mark.django_db(transaction=True)
def test_joins_that_miss_a_public_room_together_share_one_read(make_user, monkeypatch):
    """Twenty users joining one public room at once cost one database read, and all get its answer and time;
    a join that gives up meanwhile does not cancel the read for the others."""
    users = [make_user(f"user{i}") for i in range(20)]
    lobby = Room.objects.create(slug="lobby", name="Lobby")
    reads = _counting_reads(monkeypatch)
    access = _access()
    access.reset(now=0.0)

    async def check() -> None:
        quitter = asyncio.ensure_future(room_for_join(access, user_id=users[0].pk, slug="lobby"))
        await asyncio.sleep(0)  # the quitter's read is under way
        quitter.cancel()
        answers = await asyncio.gather(*(room_for_join(access, user_id=u.pk, slug="lobby") for u in users[1:]))
        assert {room.pk for room, _ in answers if room is not None} == {lobby.pk}
        assert len({read_at for _, read_at in answers}) == 1
        assert quitter.cancelled()

    asyncio.run(asyncio.wait_for(check(), 10))
    assert reads == ["lobby"]


@pytest.mark.django_db(transaction=True)
def test_a_private_room_is_read_for_each_user_even_while_another_read_is_under_way(make_user, monkeypatch):
    """Membership is per user: a member and a non-member joining a private room together each get their own
    answer (the room; nothing)."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    secret = services.room_create(name="Secret", slug="secret", private=True, creator=alice, members=[bob])
    reads = _counting_reads(monkeypatch)
    access = _access()
    access.reset(now=0.0)

    async def check() -> list[Room | None]:
        answers = await asyncio.gather(
            *(room_for_join(access, user_id=u.pk, slug="secret") for u in (alice, carol, bob))
        )
        return [room for room, _ in answers]

    rooms = asyncio.run(asyncio.wait_for(check(), 10))
    assert [r.pk if r else None for r in rooms] == [secret.pk, None, secret.pk]
    assert len(reads) == 3


@pytest.mark.django_db(transaction=True)
def test_a_join_after_an_event_does_not_share_a_read_that_started_before_it(make_user, monkeypatch):
    """The room changed while a read of it was under way: a later join reads it again, and the first read's
    answer is neither shared with it nor remembered."""
    alice, bob = make_user("alice"), make_user("bob")
    lobby = Room.objects.create(slug="lobby", name="Lobby")
    gate = threading.Event()
    reads = _counting_reads(monkeypatch, gate)
    access = _access()
    access.reset(now=0.0)

    async def check() -> None:
        first = asyncio.ensure_future(room_for_join(access, user_id=alice.pk, slug="lobby"))
        await asyncio.sleep(0)
        assert access.reading("lobby") is not None
        access.forget_room(lobby.pk)
        second = asyncio.ensure_future(room_for_join(access, user_id=bob.pk, slug="lobby"))
        await asyncio.sleep(0)
        gate.set()
        (room1, _), (room2, _) = await asyncio.gather(first, second)
        assert room1 is not None and room2 is not None
        assert access.get(user_id=bob.pk, slug="lobby", now=time.monotonic()) is None  # within QUIET_SECONDS

    try:
        asyncio.run(asyncio.wait_for(check(), 10))
    finally:
        gate.set()
    assert reads == ["lobby", "lobby"]


@pytest.mark.django_db(transaction=True)
def test_a_remembered_room_is_joined_without_the_database(make_user, django_db_blocker):
    """In process: after one join, the same room is joined again (another socket) with database access blocked."""
    Room.objects.create(slug="lobby", name="Lobby")
    cookie = session_cookie(make_user("alice"))

    async def scenario() -> None:
        cluster = Cluster()
        try:
            process = await cluster.start()
            async with asyncio.timeout(15):
                first = Client(process, cookie)
                assert (await first.connect())["type"] == "websocket.accept"
                await first.send({"type": "join", "room": "lobby"})
                await first.receive_until("joined")
                second = Client(process, cookie)  # its session is answered from Redis
                assert (await second.connect())["type"] == "websocket.accept"
                with django_db_blocker.block():
                    await second.send({"type": "join", "room": "lobby"})
                    joined, _ = await second.receive_until("joined")
                assert joined["room"] == "lobby"
        finally:
            await cluster.stop()

    asyncio.run(scenario())


def _left(room: str) -> Any:
    return lambda f: f["type"] == "left" and f["room"] == room


async def _join_answer(peer: Peer, room: str) -> dict[str, Any]:
    def answer(f: dict[str, Any]) -> bool:
        return f["type"] in ("joined", "error") and f.get("room") == room

    before = len(peer.matching(answer))
    await peer.send({"type": "join", "room": room})
    return (await peer.wait_for(answer, before + 1))[-1]


@pytest.mark.django_db(transaction=True)
def test_a_removed_member_or_a_room_made_private_cannot_join_from_memory(start_server, make_user, aio):
    """Real server and Redis: grants remembered by earlier joins are dropped by the control events, so the
    next join is refused (not_found), while the users who kept access still join."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    secret = services.room_create(name="Secret", slug="secret", private=True, creator=alice, members=[bob])
    lobby = Room.objects.create(slug="lobby", name="Lobby")
    cookies = {u.username: session_cookie(u) for u in (alice, bob, carol)}
    # Started after the rows exist: no event holds the server off remembering the first joins.
    server = start_server(env={"KAIWA_RATE_BURST": "1000", "KAIWA_RATE_PER_SECOND": "1000"})

    async def remembered() -> dict[str, tuple[Peer, Peer]]:
        peers = {}
        for name, cookie in cookies.items():
            watcher, joiner = await Peer.open(server.ws, cookie), await Peer.open(server.ws, cookie)
            room = "lobby" if name == "carol" else "secret"
            await watcher.join(room)
            await joiner.join(room)  # the second join of the room: from memory
            await joiner.send({"type": "leave", "room": room})
            await joiner.wait_for(_left(room))
            peers[name] = (watcher, joiner)
        return peers

    peers = aio(remembered())
    services.room_member_remove(room=secret, user=bob)
    lobby.private = True
    lobby.save()

    async def refused() -> None:
        await peers["bob"][0].wait_for(_left("secret"), wait=5)  # the server has handled the event
        await peers["carol"][0].wait_for(_left("lobby"), wait=5)
        for name, room in (("bob", "secret"), ("carol", "lobby")):
            answer = await _join_answer(peers[name][1], room)
            assert answer["type"] == "error" and answer["code"] == "not_found", answer
        assert (await _join_answer(peers["alice"][1], "secret"))["type"] == "joined"

    aio(refused())


# Runs in a child process whose database accepts TCP and never answers: prints what
# each join lookup answered and how long it took (os._exit: the ORM's thread stays stuck).
_STUCK_PROBE = """
import asyncio, os, time
import django
django.setup()
from wsapp.dbthread import DatabaseStuck
from wsapp.roomaccess import RoomAccess, room_for_join

async def probe():
    access = RoomAccess()
    async def one(slug):
        t0 = time.monotonic()
        try:
            await room_for_join(access, user_id=1, slug=slug)
            return f"answered {time.monotonic() - t0:.3f}"
        except DatabaseStuck:
            return f"stuck {time.monotonic() - t0:.3f}"
    for line in await asyncio.gather(one("a"), one("b"), one("c")):
        print(line, flush=True)
    print(await one("d"), flush=True)

asyncio.run(probe())
os._exit(0)
"""


def test_a_join_lookup_on_a_database_that_does_not_answer_is_refused_within_a_second():
    """PostgreSQL that accepts TCP and never answers: every lookup (three queued together, then one more) raises
    DatabaseStuck within a second instead of waiting for the outage to end."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        env = server_env(DATABASE_URL=f"postgres://nobody@127.0.0.1:{port}/kaiwa", KAIWA_AUTH_DB_TIMEOUT_SECONDS="0.5")
        done = subprocess.run(
            [sys.executable, "-c", _STUCK_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    out = done.stdout.split()
    assert out[0::2] == ["stuck"] * 4, done.stdout
    assert all(float(t) < 1.0 for t in out[1::2]), done.stdout
