"""Property (hypothesis, stateful): whatever the relay loses, repeats or reorders, each seq arrives once, in order.

Two in-process server processes share the in-memory log and broker. Hypothesis
interleaves appends, joins (with and without ``since``), and the relay's
faults: dropped, duplicated and held-then-reordered events, and relay
reconnects. After every step, every connection's ``message`` frames after its
``joined`` are consecutive seqs starting right after its boundary; at the end,
once the relays have caught up, every connection has every seq up to the log's last.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chat.models import Room
from tests.wsapp.inprocess import WAIT, Cluster, Process, Recorder, connection
from wsapp.connection import Connection

T = TypeVar("T")


@dataclass
class Member:
    socket: Recorder
    conn: Connection
    since: int | None


class RelayFaults(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.cluster = Cluster()
        self.processes: list[Process] = [self.run(self.cluster.start()), self.run(self.cluster.start())]
        self.room: Room = self.cluster.room()
        self.members: list[Member] = []
        self.appended = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(WAIT):
                result = await coro
                if self.__dict__.get("processes"):
                    await self.cluster.settle()
                return result

        return self.runner.run(bounded())

    @rule(body=st.text(max_size=20))
    def append(self, body: str) -> None:
        self.appended = self.run(self.cluster.append(self.room, body or "x"))

    @rule(process=st.integers(0, 1), since=st.one_of(st.none(), st.integers(0, 1_000)))
    def join(self, process: int, since: int | None) -> None:
        if since is not None:
            since = min(since, self.appended)
        socket, conn = connection()
        self.run(self.processes[process].hub.join(conn, self.room, since))
        self.members.append(Member(socket, conn, since))

    @rule(count=st.integers(1, 3))
    def drop(self, count: int) -> None:
        self.cluster.broker.drop += count

    @rule(count=st.integers(1, 3))
    def duplicate(self, count: int) -> None:
        self.cluster.broker.duplicate += count

    @rule()
    def hold(self) -> None:
        self.cluster.broker.holding = True

    @precondition(lambda self: self.cluster.broker.holding)
    @rule(seed=st.integers(0, 2**32 - 1))
    def release_shuffled(self, seed: int) -> None:
        self.cluster.broker.release(lambda held: random.Random(seed).sample(held, len(held)))
        self.run(asyncio.sleep(0))

    @rule(process=st.integers(0, 1))
    def reconnect(self, process: int) -> None:
        self.processes[process].relay.drop_connection()
        self.run(asyncio.sleep(0))

    @invariant()
    def each_connection_sees_consecutive_seqs_after_its_boundary(self) -> None:
        for member in self.members:
            frames = member.socket.frames
            assert frames and frames[0]["type"] == "joined", frames[:2]
            joined = frames[0]
            start = joined["last_seq"] if member.since is None or joined["reset"] else member.since
            seqs = member.socket.seqs("lobby")
            assert seqs == list(range(start + 1, start + 1 + len(seqs))), (start, seqs)
            assert member.conn.open

    def teardown(self) -> None:
        try:
            self.cluster.broker.drop = self.cluster.broker.duplicate = 0
            self.cluster.broker.release()
            for process in self.processes:
                process.relay.drop_connection()  # a resubscription repairs every room from the log
            self.run(asyncio.sleep(0))
            self.each_connection_sees_consecutive_seqs_after_its_boundary()
            for member in self.members:
                seqs = member.socket.seqs("lobby")
                joined = member.socket.frames[0]
                assert (seqs[-1] if seqs else joined["last_seq"]) == self.appended, (seqs, self.appended)
        finally:
            self.run(self.cluster.stop())
            self.runner.close()


RelayFaults.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,  # deterministic: the same 60 programs on every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.timeout(120)
def test_relay_faults_never_break_order_or_completeness() -> None:
    """Hypothesis drives appends, joins and relay faults: seqs after ``joined`` stay consecutive, and complete."""
    RelayFaults.TestCase().runTest()
