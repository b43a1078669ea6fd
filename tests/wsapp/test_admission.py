"""Admission: at most ``limit`` handshakes and joins in progress, the others served in arrival order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chat.models import Room
from tests.wsapp.conftest import session_cookie
from tests.wsapp.inprocess import WAIT, Client, Cluster, Process, run_scenario
from wsapp.admission import Admission
from wsapp.errors import Close


async def _until(condition: Any) -> None:
    """Yield to the loop until ``condition()`` holds (bounded by WAIT)."""
    async with asyncio.timeout(WAIT):
        while True:
            if condition():
                return
            await asyncio.sleep(0)  # one loop turn: the tasks under test run


def test_at_most_limit_holders_and_the_waiting_are_admitted_in_arrival_order() -> None:
    """Five callers on two slots: two inside at once, the rest counted as waiting and let in first come first served."""

    async def scenario() -> list[int]:
        admission = Admission(2)
        inside: set[int] = set()
        admitted: list[int] = []
        most = 0
        release = {i: asyncio.Event() for i in range(5)}

        async def caller(i: int) -> None:
            nonlocal most
            async with admission.slot():
                admitted.append(i)
                inside.add(i)
                most = max(most, len(inside))
                await release[i].wait()
                inside.discard(i)

        tasks = [asyncio.create_task(caller(i)) for i in range(5)]
        await _until(lambda: admitted == [0, 1] and admission.waiting == 3)
        for i in (1, 0, 2, 3, 4):  # out of order: the next waiter gets each freed slot
            release[i].set()
            await _until(lambda i=i: i not in inside)
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*tasks)
        assert most == 2 and admission.waiting == 0
        return admitted

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_a_slot_is_freed_when_its_holder_fails() -> None:
    """An exception inside the block gives the slot back."""

    async def scenario() -> None:
        admission = Admission(1)
        with pytest.raises(RuntimeError):
            async with admission.slot():
                raise RuntimeError("boom")
        async with asyncio.timeout(WAIT), admission.slot():
            pass

    asyncio.run(scenario())


class _Occupied:
    """Takes the only slot of ``admission`` until ``free()``, as a handshake in progress would."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self._held = asyncio.Event()
        self._free = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Occupied:
        self._task = asyncio.create_task(self._hold())
        await self._held.wait()
        return self

    async def _hold(self) -> None:
        async with self.admission.slot():
            self._held.set()
            await self._free.wait()

    def free(self) -> None:
        self._free.set()

    async def __aexit__(self, *exc: object) -> None:
        self._free.set()
        assert self._task is not None
        await self._task


@pytest.mark.django_db(transaction=True)
def test_a_handshake_waits_for_a_slot_and_a_shutdown_meanwhile_answers_1012(make_user: Any) -> None:
    """While every slot is taken a new socket is not accepted; freed, it is accepted and joins. One that waited
    through the start of a shutdown is answered 1012 (come back) once admitted, not taken in."""
    Room.objects.create(slug="lobby", name="Lobby")
    ann = session_cookie(make_user("ann"))

    async def scenario(cluster: Cluster, process: Process) -> None:
        hub = process.hub
        hub.admission = Admission(1)
        async with _Occupied(hub.admission) as occupied:
            client = Client(process, ann)
            await client.communicator.send_input({"type": "websocket.connect"})
            await _until(lambda: hub.admission.waiting == 1)
            assert client.communicator.output_queue.empty()
            occupied.free()
            assert (await client.receive())["type"] == "websocket.accept"
            await client.send({"type": "join", "room": "lobby"})
            joined, _ = await client.receive_until("joined")
            assert joined["room"] == "lobby"

        async with _Occupied(hub.admission) as occupied:
            late = Client(process, ann)
            await late.communicator.send_input({"type": "websocket.connect"})
            await _until(lambda: hub.admission.waiting == 1)
            hub.lifecycle.accepting = False  # a shutdown began
            occupied.free()
            assert (await late.receive())["type"] == "websocket.accept"
            closed = await late.receive()
            assert (closed["type"], closed["code"]) == ("websocket.close", Close.RESTART)

    run_scenario(scenario)


@pytest.mark.django_db(transaction=True)
def test_a_join_waits_for_a_slot(make_user: Any) -> None:
    """A join sent while every slot is taken is answered once one is free."""
    Room.objects.create(slug="lobby", name="Lobby")
    ann = session_cookie(make_user("ann"))

    async def scenario(cluster: Cluster, process: Process) -> None:
        hub = process.hub
        hub.admission = Admission(1)
        client = Client(process, ann)
        assert (await client.connect())["type"] == "websocket.accept"
        async with _Occupied(hub.admission) as occupied:
            await client.send({"type": "join", "room": "lobby"})
            await _until(lambda: hub.admission.waiting == 1)
            assert client.communicator.output_queue.empty()
            occupied.free()
            joined, _ = await client.receive_until("joined")
            assert joined["room"] == "lobby"

    run_scenario(scenario)
