"""Epochs through the hub (protocol.md 7.1), in-process on the in-memory twins (no Redis, no uvicorn, no database).

``MemoryLog`` runs the same ``chat.epochs.settle`` as the Redis log; its
``MemoryEpochs`` store plays the database (issued epochs, stored messages).
The same rules against real Redis and uvicorn: tests/wsapp/test_epochs_redis.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from chat.epochs import MemoryEpochs, StoredToken
from chat.messagelog import AppendResult, FloorNeeded
from chat.models import Room
from tests.wsapp.inprocess import Cluster, Process, connection, run_scenario

T = TypeVar("T")


@pytest.fixture
def run() -> Callable[[Callable[[Cluster, Process], Awaitable[T]]], T]:
    """``run(scenario)``: the scenario on a fresh in-process cluster (``inprocess.run_scenario``)."""
    return run_scenario


def store(cluster: Cluster) -> MemoryEpochs:
    assert cluster.log is not None
    assert isinstance(cluster.log.epoch_store, MemoryEpochs)
    return cluster.log.epoch_store


async def send(process: Process, room: Room, body: str, *, client_id: str | None = None) -> AppendResult:
    """What ``services.amessage_send`` does with the log: a floor from what this process saw when it is asked for."""
    log = process.hub.log
    known = process.hub.known_last(room.pk) or 0
    floor: int | None = None
    while True:
        try:
            return await log.append(
                room_id=room.pk, slug=room.slug, user_id=7, username="ann", body=body, client_id=client_id,
                token=client_id or body, floor=floor, known_last=known,
            )  # fmt: skip
        except FloorNeeded:
            assert floor is None, "the log asked for a floor twice"
            floor = known


def joined_frames(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "joined"]


def test_joined_carries_the_epoch_and_a_join_with_another_epoch_is_reset(run):
    """``joined.epoch`` names the room's epoch; ``join`` with ``since`` and that epoch gets its backlog,
    with another epoch ``reset: true`` and no backlog."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        first_socket, first = connection()
        await process.hub.join(first, lobby, None)
        epoch = first_socket.frames[0]["epoch"]
        assert isinstance(epoch, str) and 0 < len(epoch) <= 64
        for i in range(3):
            await send(process, lobby, f"m{i}")
        await cluster.settle()
        same_socket, same = connection()
        await process.hub.join(same, lobby, 1, epoch=epoch)
        other_socket, other = connection()
        await process.hub.join(other, lobby, 1, epoch="an-older-epoch")
        await cluster.settle()
        assert same_socket.frames[0]["reset"] is False and same_socket.seqs("lobby") == [2, 3]
        assert other_socket.frames[0]["reset"] is True and other_socket.frames[0]["epoch"] == epoch
        assert other_socket.seqs("lobby") == []

    run(scenario)


def test_redis_losing_its_data_starts_a_new_epoch_above_every_seen_seq(run):
    """After Redis lost the room (nothing stored yet), the next send starts a new epoch above the seqs this
    process delivered; joined members get a ``joined`` with ``reset: true`` and the new epoch, then the message."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        socket, conn = connection()
        await process.hub.join(conn, lobby, None)
        old_epoch = socket.frames[0]["epoch"]
        for i in range(5):
            await send(process, lobby, f"m{i}")
        await cluster.settle()
        assert cluster.log is not None
        cluster.log.lose_data()
        result = await send(process, lobby, "after the loss")
        await cluster.settle()
        assert result.seq == 6  # above the 5 this process delivered, though the database stored none
        reset = joined_frames(socket.frames)[-1]
        assert reset["reset"] is True and reset["last_seq"] == 5 and reset["epoch"] != old_epoch
        assert socket.seqs("lobby") == [1, 2, 3, 4, 5, 6]
        assert [f["type"] for f in socket.frames[-2:]] == ["joined", "message"]

    run(scenario)


def test_a_new_epoch_starts_above_the_highest_stored_seq(run):
    """A Redis that belongs to another database (the epoch is not one the database issued) is re-seeded
    above the database's highest seq, even if its own counter is lower."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        socket, conn = connection()
        await process.hub.join(conn, lobby, None)
        await send(process, lobby, "m1")
        await cluster.settle()
        # Switch databases under the running "Redis": this one stored 40 messages and issued no epoch.
        switched = MemoryEpochs(max_stored={lobby.pk: 40})
        assert cluster.log is not None
        cluster.log.epoch_store = switched
        cluster.log.adopt(lobby.pk, "")  # a process started against the new database validates again
        result = await send(process, lobby, "m2")
        await cluster.settle()
        assert result.seq == 41
        assert joined_frames(socket.frames)[-1]["reset"] is True
        assert [e for e, _ in switched.epochs[lobby.pk]] == [joined_frames(socket.frames)[-1]["epoch"]]

    run(scenario)


def test_a_resend_whose_client_id_the_database_holds_acks_the_stored_message(run):
    """After an epoch change, a re-send with a ``client_id`` the database holds for that sender and room is
    acked with the stored seq and creates nothing; a new message goes on above."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        _, conn = connection()
        await process.hub.join(conn, lobby, None)
        first = await send(process, lobby, "hello", client_id="c-1")
        await cluster.settle()
        stored = store(cluster)
        stored.stored[lobby.pk] = [StoredToken(7, "c-1", first.seq, first.ts_ms)]
        stored.max_stored[lobby.pk] = first.seq
        assert cluster.log is not None
        cluster.log.lose_data()
        again = await send(process, lobby, "hello", client_id="c-1")
        assert (again.seq, again.duplicate, again.ts_ms) == (first.seq, True, first.ts_ms)
        assert (await send(process, lobby, "next", client_id="c-2")).seq == first.seq + 1

    run(scenario)


def test_a_restored_older_copy_is_caught_by_the_reconnecting_hub(run):
    """Redis restored from an older copy (same epoch, counter behind): the hub that reconnects to it sees the
    counter below what it delivered and re-seeds a new epoch above it; its members are reset."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        socket, conn = connection()
        await process.hub.join(conn, lobby, None)
        epoch = socket.frames[0]["epoch"]
        for i in range(5):
            await send(process, lobby, f"m{i}")
        await cluster.settle()
        assert cluster.log is not None
        cluster.log.seqs[lobby.pk] = 2  # the older copy: seqs 3..5 and their dedup tokens are gone
        for seq in (3, 4, 5):
            cluster.log.streams[lobby.pk].pop(seq)
        process.relay.drop_connection()
        await cluster.settle()
        reset = joined_frames(socket.frames)[-1]
        assert reset["reset"] is True and reset["epoch"] != epoch and reset["last_seq"] == 5
        assert (await send(process, lobby, "after the restore")).seq == 6

    run(scenario)


def test_a_hub_that_delivered_more_than_a_new_epochs_base_raises_it(run):
    """Another process seeded a new epoch from a lower floor than this hub delivered: the hub re-seeds it
    above what it delivered, so no client sees one seq twice in one epoch."""

    async def scenario(cluster: Cluster, process: Process) -> None:
        lobby = cluster.room()
        socket, conn = connection()
        await process.hub.join(conn, lobby, None)
        for i in range(4):
            await send(process, lobby, f"m{i}")
        await cluster.settle()
        assert cluster.log is not None
        cluster.log.lose_data()
        # A process that saw nothing of the room seeds from the database's floor (0).
        low = await cluster.log.settle(room_id=lobby.pk, slug=lobby.slug, floor=0)
        assert low.last == 0
        await cluster.settle()
        current, last = await cluster.log.room_state(lobby.pk)
        assert current != low.epoch and last == 4
        final = joined_frames(socket.frames)[-1]
        assert final["epoch"] == current and final["last_seq"] == 4 and final["reset"] is True
        assert (await send(process, lobby, "next")).seq == 5

    run(scenario)
