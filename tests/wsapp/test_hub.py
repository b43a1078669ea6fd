"""The hub's invariants, in-process on the in-memory twins (no Redis, no uvicorn, no database)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from tests.wsapp.inprocess import WAIT, Cluster, Process, connection, run_scenario
from wsapp.errors import Close

T = TypeVar("T")


@pytest.fixture
def run() -> Callable[[Callable[[Cluster, Process], Awaitable[T]]], T]:
    """``run(scenario)``: the scenario on a fresh in-process cluster (``inprocess.run_scenario``)."""
    return run_scenario


def test_joined_last_seq_is_the_exact_boundary(run):
    """A message appended while the join is under way (not yet seen by the hub) arrives after ``joined``."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        _, first = connection()
        await process.hub.join(first, lobby, None)  # the room is subscribed from here on
        for i in range(3):
            await cluster.append(lobby, f"old {i}")
        await cluster.settle()
        cluster.broker.holding = True  # the hub has not seen seq 4 when it answers the join
        await cluster.append(lobby, "during the join")
        socket, conn = connection()
        await process.hub.join(conn, lobby, None)
        cluster.broker.release()
        await cluster.append(lobby, "after")
        await cluster.settle()
        joined = socket.frames[0]
        assert joined["type"] == "joined" and joined["last_seq"] == 3 and joined["reset"] is False
        assert socket.seqs("lobby") == [4, 5]

    run(scenario)


def test_join_since_replays_the_backlog_then_the_frames_held_meanwhile(run):
    """Live messages that arrive while the backlog is read are held, then sent after it, in seq order."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        for i in range(5):
            await cluster.append(lobby, f"m{i}")
        await cluster.settle()
        reading, gate = cluster.hold_range_reads()
        socket, conn = connection()
        join = asyncio.ensure_future(process.hub.join(conn, lobby, 0))
        await reading.wait()
        await cluster.append(lobby, "live 6")
        await cluster.append(lobby, "live 7")
        await cluster.settle()
        assert conn.held_messages == 3  # its own presence "join" and the two live messages
        assert socket.frames == []  # not even joined: it goes first, with the backlog
        gate.set()
        await join
        assert socket.frames[0]["type"] == "joined" and socket.frames[0]["last_seq"] == 5
        assert socket.seqs("lobby") == [1, 2, 3, 4, 5, 6, 7]
        assert (conn.held_messages, conn.held_bytes) == (0, 0)

    run(scenario)


def test_a_lost_event_is_repaired_from_the_log_before_the_next_one(run):
    """The relay loses seq 1: seq 2 reveals the gap, 1 is read back, the client sees 1 then 2."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        socket, conn = connection()
        await process.hub.join(conn, lobby, None)
        cluster.broker.drop = 1
        await cluster.append(lobby, "lost on the relay")
        await cluster.append(lobby, "reveals the gap")
        await cluster.settle()
        assert socket.seqs("lobby") == [1, 2]

    run(scenario)


def test_a_reconnected_relay_repairs_what_it_missed(run):
    """Events lost while the relay was away (the last one included) arrive once it subscribes again."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        socket, conn = connection()
        await process.hub.join(conn, lobby, None)
        cluster.broker.drop = 2
        await cluster.append(lobby, "lost 1")
        await cluster.append(lobby, "lost 2")
        await cluster.settle()
        assert socket.seqs("lobby") == []
        process.relay.drop_connection()
        await cluster.settle()
        assert socket.seqs("lobby") == [1, 2]

    run(scenario)


def test_duplicated_and_reordered_events_reach_the_client_once_in_order(run):
    """The relay repeats one event and delivers three in reverse: the client sees 1, 2, 3 once each."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        socket, conn = connection()
        await process.hub.join(conn, lobby, None)
        cluster.broker.duplicate = 1
        await cluster.append(lobby, "twice")
        cluster.broker.holding = True
        for i in range(3):
            await cluster.append(lobby, f"held {i}")
        cluster.broker.release(lambda held: list(reversed(held)))
        await cluster.settle()
        assert socket.seqs("lobby") == [1, 2, 3, 4]

    run(scenario)


def test_a_client_that_does_not_read_is_closed_with_1013(run):
    """A paused socket whose queue passes its bound is closed with 1013; the other member gets everything."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        slow_socket, slow = connection()
        slow.max_messages = 3
        fast_socket, fast = connection()
        await process.hub.join(slow, lobby, None)
        await process.hub.join(fast, lobby, None)
        slow_socket.writable.clear()
        for i in range(6):
            await cluster.append(lobby, f"m{i}")
        await cluster.settle()
        assert slow.close_code == Close.TRY_AGAIN
        assert fast_socket.seqs("lobby") == [1, 2, 3, 4, 5, 6]
        slow_socket.writable.set()
        async with asyncio.timeout(WAIT):
            await slow.wait_ended()
        assert slow_socket.close_code == Close.TRY_AGAIN

    run(scenario)


def test_held_frames_past_the_queue_bound_close_1013(run):
    """While a backlog is read, live frames are held; more of them than the queue takes closes the socket."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        await cluster.append(lobby, "old")
        await cluster.settle()
        reading, gate = cluster.hold_range_reads()
        _, conn = connection()
        conn.max_messages = 2
        join = asyncio.ensure_future(process.hub.join(conn, lobby, 0))
        await reading.wait()
        for i in range(3):
            await cluster.append(lobby, f"live {i}")
        await cluster.settle()
        assert conn.close_code == Close.TRY_AGAIN
        gate.set()
        await join

    run(scenario)


def test_two_processes_deliver_every_message_to_both(run):
    """Members on two processes (one relay each, one log) both see every seq."""

    async def scenario(cluster: Cluster, first: Process) -> None:
        lobby = cluster.room()
        second = await cluster.start()
        sockets = []
        for process in (first, second):
            socket, conn = connection()
            await process.hub.join(conn, lobby, None)
            sockets.append(socket)
        for i in range(4):
            await cluster.append(lobby, f"m{i}")
        await cluster.settle()
        assert [s.seqs("lobby") for s in sockets] == [[1, 2, 3, 4], [1, 2, 3, 4]]

    run(scenario)


def test_presence_is_announced_once_per_user(run):
    """A user's second connection announces nothing; their last leave announces ``leave`` to the others."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        watcher_socket, watcher = connection()
        await process.hub.join(watcher, lobby, None)
        _, first = connection(user_id=500, username="zoe")
        _, second = connection(user_id=500, username="zoe")
        await process.hub.join(first, lobby, None)
        await process.hub.join(second, lobby, None)
        await process.hub.leave(first, "lobby")
        await process.hub.leave(second, "lobby")
        await cluster.settle()
        presence = [f for f in watcher_socket.frames if f["type"] == "presence" and f["user"]["id"] == 500]
        assert [(f["event"], f["user"]["username"]) for f in presence] == [("join", "zoe"), ("leave", "zoe")]

    run(scenario)


def test_a_join_waits_for_a_late_subscription_while_the_relay_is_connected(run, monkeypatch):
    """A room's subscription confirmed long after the first check (a loop busy with a connect storm): the joins
    wait and get ``joined``, and the room keeps its one subscription; with the relay disconnected they are refused."""
    from wsapp import hub as hub_module
    from wsapp import memoryrelay

    monkeypatch.setattr(hub_module, "SUBSCRIBE_CHECK_SECONDS", 0.02)

    async def scenario(cluster: Cluster, process: Process) -> None:
        relay = process.relay
        confirmations: list[str] = []
        subscribes: list[str] = []

        async def late_subscribe(channel: str) -> None:
            subscribes.append(channel)
            relay.channels.add(channel)
            relay._subscribed.add(channel)
            confirmations.append(channel)  # confirmed when the test says so

        monkeypatch.setattr(relay, "subscribe", late_subscribe)
        lobby = cluster.room()
        sockets = []
        joins = []
        for _ in range(3):
            socket, conn = connection()
            sockets.append(socket)
            joins.append(asyncio.ensure_future(process.hub.join(conn, lobby, None)))
        # Ten checks pass without a confirmation: nobody is refused.
        for _ in range(10):
            await asyncio.sleep(hub_module.SUBSCRIBE_CHECK_SECONDS)
        assert not any(j.done() for j in joins)
        for channel in confirmations:
            relay._inbox.put_nowait((channel, memoryrelay._SUBSCRIBED))
        await asyncio.gather(*joins)
        assert [s.frames[0]["type"] for s in sockets] == ["joined"] * 3
        assert len(subscribes) == 1

        other = cluster.room(pk=2, slug="other")
        socket, conn = connection()
        waiting = asyncio.ensure_future(process.hub.join(conn, other, None))
        await asyncio.sleep(hub_module.SUBSCRIBE_CHECK_SECONDS)
        relay._live = False  # the relay lost Redis: waiting longer would be waiting for nothing
        with pytest.raises(TimeoutError):
            await waiting
        relay._live = True

    run(scenario)


def test_a_membership_ended_by_the_server_says_left_before_any_later_frame(run, monkeypatch):
    """A revocation's ``left`` is queued as the subscription ends, not after the presence update: a
    ``room_removed`` handled while that update waits on Redis still comes after ``left`` (protocol.md 7.5)."""
    from chat import roomevents
    from wsapp import userevents

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        socket, conn = connection()
        conn.checked_at = time.monotonic()  # its session was just checked: no re-check task of its own
        process.hub.add(conn)  # a room event's audience is the registered connections
        await process.hub.join(conn, lobby, None)
        presence = process.hub.presence
        leaving, gate = asyncio.Event(), asyncio.Event()
        real_leave = presence.leave

        async def slow_leave(**kwargs: object) -> bool:
            leaving.set()
            await gate.wait()
            return await real_leave(**kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(presence, "leave", slow_leave)
        revoked = asyncio.ensure_future(process.hub.leave(conn, "lobby", tell=True))
        async with asyncio.timeout(WAIT):
            await leaving.wait()
        event = roomevents.event(roomevents.REMOVED, room_id=lobby.pk, room="lobby", users=[conn.user_id])
        # Only the removal's own task: another (a re-check) may be waiting on the database.
        others = set(process.hub._background)
        userevents.on_control(process.hub, event)
        async with asyncio.timeout(WAIT):  # the removal finds the membership already ended and says so
            await asyncio.gather(*(process.hub._background - others))
        gate.set()
        async with asyncio.timeout(WAIT):
            await revoked
        kinds = [f["type"] for f in socket.frames if f["type"] in ("left", "room_removed")]
        assert kinds == ["left", "room_removed"], socket.frames

    run(scenario)
