"""Epochs against real Redis servers and uvicorn processes (protocol.md 7.1).

Redis restarted empty, Redis restored from an older AOF, and a database that
is not the one the running Redis belongs to: each ends in a new epoch, a
``joined`` with ``reset: true`` for the members, seqs that go on above every
stored and delivered one, and no contradiction (no seq holds two messages,
no acked message is lost).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chat.epochmodels import RoomEpoch, UnstoredMessage
from chat.models import Message, Room
from tests import redis_server
from tests.redis_server import free_port
from tests.redis_topology import RedisNode, Topology, _server_args
from tests.wsapp.conftest import Peer, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 20.0


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        # Polling the database for the worker's writes, not synchronising with the server.
        time.sleep(0.05)


def stored(room: Room) -> list[tuple[int, str]]:
    return list(Message.objects.filter(room=room).order_by("seq").values_list("seq", "client_id"))


def is_reset(frame: dict[str, Any]) -> bool:
    return frame["type"] == "joined" and frame["reset"] is True


async def join_with_epoch(peer: Peer, room: str, since: int, epoch: str) -> dict[str, Any]:
    before = len(peer.matching(lambda f: f["type"] in ("joined", "error")))
    await peer.send({"type": "join", "room": room, "since": since, "epoch": epoch})
    answers = await peer.wait_for(lambda f: f["type"] in ("joined", "error"), before + 1)
    assert answers[-1]["type"] == "joined", answers[-1]
    return answers[-1]


def assert_no_contradiction(room: Room, acked: dict[str, int]) -> None:
    """Every acked client_id is stored once, at its acked seq; nothing was kept as a conflict."""
    rows = [(seq, cid) for seq, cid in stored(room) if cid]
    by_client = {cid: seq for seq, cid in rows}
    assert len(by_client) == len(rows)
    assert {cid: by_client.get(cid) for cid in acked} == acked
    assert not UnstoredMessage.objects.exists()


def test_redis_restarted_empty_starts_a_new_epoch(start_server, make_user, aio):
    """Redis restarts without its data: the member gets ``joined`` with ``reset: true`` and a new epoch;
    a re-send of a stored message is acked with its seq (dedup from the database); new seqs go on above."""
    ann = make_user("ann")
    lobby = Room.objects.create(slug="lobby", name="Lobby")
    server = start_server()
    cookie = session_cookie(ann)
    peer = aio(Peer.open(server.ws, cookie))
    joined = aio(peer.join("lobby"))
    acked = {f"c{i}": aio(peer.send_message("lobby", f"m{i}", f"c{i}"))["seq"] for i in range(3)}
    assert list(acked.values()) == [1, 2, 3]
    wait_until(lambda: len(stored(lobby)) == 3, "the worker to store 3 messages")
    assert redis_server.SERVER is not None
    redis_server.SERVER.kill()
    redis_server.SERVER.start()
    reset = aio(peer.wait_for(is_reset, wait=WAIT))[0]
    assert reset["epoch"] != joined["epoch"] and reset["last_seq"] == 3
    again = aio(peer.send_message("lobby", "m1", "c1"))
    assert (again["type"], again["seq"]) == ("ack", 2)
    acked["c3"] = aio(peer.send_message("lobby", "m3", "c3"))["seq"]
    assert acked["c3"] == 4
    late = aio(Peer.open(server.ws, cookie))
    rejoined = aio(join_with_epoch(late, "lobby", 3, joined["epoch"]))
    assert rejoined["reset"] is True and rejoined["epoch"] == reset["epoch"]
    wait_until(lambda: len(stored(lobby)) == 4, "the worker to store the 4th message")
    assert_no_contradiction(lobby, acked)
    assert aio(peer.wait_seqs("lobby", 4)) == [1, 2, 3, 4]


@pytest.fixture
def aof_redis() -> Iterator[RedisNode]:
    """A Redis of the test's own with an AOF (``appendfsync always``), in a directory removed afterwards."""
    topology = Topology("kaiwa-test-aof-")
    try:
        args = _server_args("aof", free_port(), topology.directory, appendonly=True, extra=["--appendfsync", "always"])
        node = topology._node("aof", args)
        node.start()
        yield node
    finally:
        topology.close()


def test_redis_restored_from_an_older_aof_starts_a_new_epoch(start_server, make_user, aio, aof_redis):
    """Redis comes back from an older AOF (same epoch, counter behind what was delivered and stored):
    the server's hub notices on reconnecting, re-seeds above, and members are reset; nothing is reused."""
    ann = make_user("ann")
    lobby = Room.objects.create(slug="lobby", name="Lobby")
    server = start_server(env={"REDIS_URL": aof_redis.url})
    peer = aio(Peer.open(server.ws, session_cookie(ann)))
    joined = aio(peer.join("lobby"))
    acked = {f"c{i}": aio(peer.send_message("lobby", f"m{i}", f"c{i}"))["seq"] for i in range(2)}
    aof_dir = aof_redis.directory / "aof-aof"
    backup = aof_redis.directory / "aof-backup"
    shutil.copytree(aof_dir, backup)  # appendfsync always: the copy holds both acked messages
    acked |= {f"c{i}": aio(peer.send_message("lobby", f"m{i}", f"c{i}"))["seq"] for i in range(2, 5)}
    assert list(acked.values()) == [1, 2, 3, 4, 5]
    wait_until(lambda: len(stored(lobby)) == 5, "the worker to store 5 messages")
    aof_redis.kill()
    shutil.rmtree(aof_dir)
    shutil.copytree(backup, aof_dir)
    aof_redis.start()
    reset = aio(peer.wait_for(is_reset, wait=WAIT))[0]
    assert reset["epoch"] != joined["epoch"] and reset["last_seq"] == 5
    acked["c5"] = aio(peer.send_message("lobby", "m5", "c5"))["seq"]
    assert acked["c5"] == 6
    wait_until(lambda: len(stored(lobby)) == 6, "the worker to store the 6th message")
    assert_no_contradiction(lobby, acked)


def test_a_database_the_running_redis_does_not_belong_to_starts_a_new_epoch(start_server, make_user, aio):
    """A server started on a database that did not issue the Redis state's epoch and holds a longer history
    (a switched or restored database) re-seeds the room above that history: ``reset: true``, no seq reused."""
    ann = make_user("ann")
    lobby = Room.objects.create(slug="lobby", name="Lobby")
    cookie = session_cookie(ann)
    first = start_server()
    peer = aio(Peer.open(first.ws, cookie))
    joined = aio(peer.join("lobby"))
    acked = {f"c{i}": aio(peer.send_message("lobby", f"m{i}", f"c{i}"))["seq"] for i in range(2)}
    wait_until(lambda: len(stored(lobby)) == 2, "the worker to store 2 messages")
    aio(peer.close())
    first.terminate(timeout=15)
    # The other database: it never issued this Redis's epoch, and its history of the room goes to seq 12.
    RoomEpoch.objects.filter(room=lobby).delete()
    Message.objects.bulk_create(
        Message(room=lobby, seq=seq, author=ann, author_username="ann", body=f"old {seq}", created_at=lobby.created_at)
        for seq in range(3, 13)
    )
    second = start_server()
    peer = aio(Peer.open(second.ws, cookie))
    rejoined = aio(join_with_epoch(peer, "lobby", 2, joined["epoch"]))
    assert rejoined["reset"] is True and rejoined["epoch"] != joined["epoch"] and rejoined["last_seq"] == 12
    acked["c2"] = aio(peer.send_message("lobby", "m2", "c2"))["seq"]
    assert acked["c2"] == 13
    wait_until(lambda: len(stored(lobby)) == 13, "the worker to store the 13th message")
    assert_no_contradiction(lobby, acked)


def test_a_fresh_database_never_shows_the_running_redis_history_of_another(start_server, make_user, aio):
    """A server started on a database that holds none of the Redis state's history (a fresh database beside
    a Redis kept from another one): a ``join`` with ``since`` gets no message of that other history
    (``reset: true``, no backlog), and new messages go on above every seq Redis handed out."""
    ann = make_user("ann")
    lobby = Room.objects.create(slug="lobby", name="Lobby")
    cookie = session_cookie(ann)
    first = start_server()
    peer = aio(Peer.open(first.ws, cookie))
    aio(peer.join("lobby"))
    for i in range(3):
        aio(peer.send_message("lobby", f"other history {i}", f"c{i}"))
    wait_until(lambda: len(stored(lobby)) == 3, "the worker to store 3 messages")
    aio(peer.close())
    first.terminate(timeout=15)
    # The other database: it never issued this Redis's epoch and stored none of the room's messages.
    RoomEpoch.objects.filter(room=lobby).delete()
    Message.objects.filter(room=lobby).delete()
    second = start_server()
    peer = aio(Peer.open(second.ws, cookie))
    before = len(peer.frames)
    rejoined = aio(peer.join("lobby", since=0))
    assert rejoined["reset"] is True and rejoined["last_seq"] == 3, rejoined
    seq = aio(peer.send_message("lobby", "this history", "c-new"))["seq"]
    assert seq == 4
    # The ack can come before the message's own frame (that one goes through pub/sub): wait for it.
    aio(peer.wait_for(lambda f: f["type"] == "message" and f["seq"] == 4))
    bodies = [f["body"] for f in peer.frames[before:] if f["type"] == "message"]
    assert bodies == ["this history"], bodies
