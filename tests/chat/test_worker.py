"""The persistence worker as operators run it: ``manage.py chatworker`` processes and uvicorn servers.

Messages are appended with ``MessageLog`` directly, as the WebSocket path
does: once ``append`` returns, the message is acked and must end up in the
database exactly once, whatever happens to the worker or the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import redis as redis_sync
import redis.asyncio as aioredis
from django.db import connection

from chat import services
from chat.epochs import MemoryEpochs
from chat.messagelog import GROUP, Entry, FloorNeeded, MessageLog, stream_key
from chat.models import Message, Room
from tests import redis_server
from tests.conftest import ROOT, ServerProcess, database_url, server_env
from tests.wsapp.conftest import Peer, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


# -- helpers ------------------------------------------------------------------------


def append(room: Room, user: Any, count: int, *, prefix: str = "m") -> None:
    """Append ``count`` messages to ``room``: each is acked once this returns."""

    async def main() -> None:
        assert redis_server.SERVER is not None
        client = aioredis.Redis.from_url(redis_server.SERVER.url)
        try:
            log = MessageLog(client, dedup_seconds=600, stream_keep=10000)
            # The epoch make_room settled: no database query per append, so appends go on during an outage.
            log.adopt(room.pk, ROOM_EPOCHS[room.pk])
            for i in range(count):
                fields: dict[str, Any] = {
                    "room_id": room.pk, "slug": room.slug, "user_id": user.pk, "username": user.username,
                    "body": f"{prefix}{i}", "client_id": None, "token": f"{prefix}-{i}",
                }  # fmt: skip
                try:
                    await asyncio.wait_for(log.append(**fields), timeout=10)
                except FloorNeeded:
                    # Redis lost the room (a test restarted it empty): settle a new epoch, as the server does.
                    await asyncio.wait_for(log.append(**fields, floor=0), timeout=10)
                    ROOM_EPOCHS[room.pk] = str((await log.room_state(room.pk))[0])
        finally:
            await client.aclose()

    asyncio.run(main())


def redis_client() -> redis_sync.Redis:
    assert redis_server.SERVER is not None
    return redis_sync.Redis.from_url(redis_server.SERVER.url)


def pending_count(room: Room) -> int:
    client = redis_client()
    try:
        return int(client.xpending(stream_key(room.pk), GROUP)["pending"])
    finally:
        client.close()


def unacknowledged(*rooms: Room) -> int:
    """Entries of ``rooms`` the persist group has not acknowledged (pending or not read yet)."""

    async def main() -> int:
        assert redis_server.SERVER is not None
        client = aioredis.Redis.from_url(redis_server.SERVER.url)
        try:
            log = MessageLog(client, dedup_seconds=600, stream_keep=10000, epoch_store=MemoryEpochs())
            total, _ = await log.backlog([room.pk for room in rooms])
            return total
        finally:
            await client.aclose()

    return asyncio.run(main())


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Observe the database until ``predicate`` holds (an observation loop, with a deadline)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def assert_exactly_once(room: Room, count: int, *, prefix: str = "m") -> None:
    rows = list(Message.objects.filter(room=room).order_by("seq").values_list("seq", "body"))
    assert [seq for seq, _ in rows] == list(range(1, count + 1))
    assert [body for _, body in rows] == [f"{prefix}{i}" for i in range(count)]


def all_stored(*expected: tuple[Room, int]) -> Callable[[], bool]:
    return lambda: all(Message.objects.filter(room=room).count() == n for room, n in expected)


ROOM_EPOCHS: dict[int, str] = {}


def make_room(slug: str) -> Room:
    """A room whose Redis state is settled (its epoch issued by the database), as a server's first join does."""
    room = Room.objects.create(slug=slug, name=slug.title())

    async def settle() -> str:
        assert redis_server.SERVER is not None
        client = aioredis.Redis.from_url(redis_server.SERVER.url)
        try:
            log = MessageLog(client, dedup_seconds=600, stream_keep=10000)
            return (await log.settle(room_id=room.pk, slug=room.slug, floor=0)).epoch
        finally:
            await client.aclose()

    ROOM_EPOCHS[room.pk] = asyncio.run(asyncio.wait_for(settle(), 10))
    return room


@pytest.fixture
def start_worker() -> Iterator[Callable[..., ServerProcess]]:
    """Start ``python manage.py chatworker`` processes; each is stopped (or killed) after the test."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None) -> ServerProcess:
        worker = ServerProcess.spawn(
            [sys.executable, "manage.py", "chatworker", *(args or [])],
            server_env(KAIWA_LOG_LEVEL="DEBUG", **(env or {})),
        )
        started.append(worker)
        if not args:
            worker.wait_for_line("persistence worker started")
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=30)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@contextlib.contextmanager
def database_locked() -> Iterator[None]:
    """Hold a lock that blocks every write to the messages table until the block ends."""
    if is_postgres():
        with psycopg.connect(database_url(), autocommit=False) as conn:
            conn.execute("LOCK TABLE chat_message IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                conn.rollback()
    else:
        lite = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, timeout=5)
        try:
            lite.execute("BEGIN EXCLUSIVE")
            yield
            lite.execute("ROLLBACK")
        finally:
            lite.close()


class TcpProxy:
    """A TCP forwarder between the worker and PostgreSQL that the test can cut and restore."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.enabled = True
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.enabled:
                client.close()  # the database is "down": refuse at once
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pipe, args=(src, dst), daemon=True)
                thread.start()
                self.threads.append(thread)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(src)
            self._close(dst)

    def _close(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones, as a stopped server would."""
        self.enabled = False
        with self.lock:
            victims = list(self.sockets)
        for sock in victims:
            self._close(sock)

    def restore(self) -> None:
        self.enabled = True

    def close(self) -> None:
        self.cut()
        self.listener.close()
        self.accepter.join(timeout=5)
        for thread in self.threads:
            thread.join(timeout=5)


@contextlib.contextmanager
def database_outage_control() -> Iterator[tuple[dict[str, str], Callable[[], contextlib.AbstractContextManager[None]]]]:
    """(worker env, outage()) for this database: a cut TCP proxy for PostgreSQL, a held lock for SQLite.

    On SQLite a held exclusive lock makes every write wait its 5 s busy
    timeout and then fail with "database is locked", which is what the
    worker sees of an unreachable database.
    """
    if not is_postgres():
        yield {}, database_locked
        return
    parts = urlsplit(database_url())
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    netloc = parts.netloc.rsplit("@", 1)
    auth = netloc[0] + "@" if len(netloc) == 2 else ""
    url = urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{proxy.port}"))

    @contextlib.contextmanager
    def outage() -> Iterator[None]:
        proxy.cut()
        try:
            yield
        finally:
            proxy.restore()

    try:
        yield {"DATABASE_URL": url}, outage
    finally:
        proxy.close()


def lines_with(process: ServerProcess, needle: str) -> int:
    return sum(needle in line for line in list(process.lines))


def stopped_stats(worker: ServerProcess) -> int:
    line = worker.wait_for_line("persistence worker stopped")
    found = re.search(r"(\d+) entries persisted", line)
    assert found, line
    return int(found.group(1))


# -- tests -------------------------------------------------------------------------


def test_worker_persists_appended_messages_and_trims_streams(start_worker, make_user):
    """Appended messages reach the database once, in order, with author and time; streams keep only the tail."""
    ann = make_user("ann")
    lobby, dev = make_room("lobby"), make_room("dev")
    start_worker(env={"KAIWA_STREAM_KEEP": "5"})
    append(lobby, ann, 120)
    append(dev, ann, 30)
    wait_until(all_stored((lobby, 120), (dev, 30)), "150 rows")
    assert_exactly_once(lobby, 120)
    assert_exactly_once(dev, 30)
    first = Message.objects.get(room=lobby, seq=1)
    assert (first.author_id, first.author_username, first.client_id) == (ann.pk, "ann", "")
    assert first.created_at <= first.persisted_at
    wait_until(lambda: pending_count(lobby) == 0 and pending_count(dev) == 0, "acknowledgements")
    client = redis_client()
    try:
        # Trimmed after the acknowledgement, down to KAIWA_STREAM_KEEP entries.
        wait_until(lambda: client.xlen(stream_key(lobby.pk)) == 5, "trim")
        rows: Any = client.xrange(stream_key(lobby.pk))
        assert [eid.decode() for eid, _ in rows] == [f"0-{n}" for n in range(116, 121)]
    finally:
        client.close()


def test_deleted_author_keeps_the_username(start_worker, make_user):
    """A message whose author was deleted before it was persisted is stored with no author and its username."""
    ann, bob = make_user("ann"), make_user("bob")
    lobby = make_room("lobby")
    append(lobby, ann, 2, prefix="a")
    append(lobby, bob, 1, prefix="b")  # seq 3
    bob.delete()
    start_worker()
    wait_until(all_stored((lobby, 3)), "3 rows")
    row = Message.objects.get(room=lobby, seq=3)
    assert (row.author_id, row.author_username, row.body) == (None, "bob", "b0")


def test_kill_9_in_the_middle_of_a_batch_then_restart(start_worker, make_user):
    """A worker killed while writing a batch loses nothing: a new worker claims the entries, writes each once.

    Part of the batch is already in the database (as after a crash between
    the commit and the acknowledgement): the replay must not duplicate it.
    """
    ann = make_user("ann")
    lobby, dev = make_room("lobby"), make_room("dev")
    append(lobby, ann, 1000)
    append(dev, ann, 500)
    # What a worker that committed seq 1-100 of lobby but died before XACK leaves behind.
    services.message_bulk_persist(
        entries=[
            Entry(room_id=lobby.pk, room="lobby", seq=seq, ts_ms=1_700_000_000_000, user_id=ann.pk,
                  username="ann", body=f"m{seq - 1}", client_id=None)
            for seq in range(1, 101)
        ]
    )  # fmt: skip
    with database_locked():
        doomed = start_worker(env={"KAIWA_WORKER_BATCH_SIZE": "5000", "KAIWA_WORKER_BATCH_MS": "200"})
        doomed.wait_for_line("writing a batch of 1500 entries")
        # The worker is now inside the transaction, waiting for the lock.
        doomed.process.send_signal(signal.SIGKILL)
        assert doomed.process.wait(timeout=10) == -signal.SIGKILL
    assert pending_count(lobby) == 1000 and pending_count(dev) == 500
    assert Message.objects.filter(room=lobby).count() == 100
    rescuer = start_worker(env={"KAIWA_WORKER_CLAIM_IDLE_MS": "1000"})
    rescuer.wait_for_line("claimed")
    wait_until(all_stored((lobby, 1000), (dev, 500)), "1500 rows")
    assert_exactly_once(lobby, 1000)
    assert_exactly_once(dev, 500)
    wait_until(lambda: pending_count(lobby) == 0 and pending_count(dev) == 0, "acknowledgements")


def test_two_workers_share_the_queue(start_worker, make_user):
    """Two workers on one group: each entry is written by exactly one of them, and none is missed."""
    ann = make_user("ann")
    rooms = [make_room(f"room-{i}") for i in range(4)]
    env = {"KAIWA_WORKER_BATCH_SIZE": "20", "KAIWA_WORKER_BATCH_MS": "20"}
    one, two = start_worker(env=env), start_worker(env=env)
    for room in rooms:
        append(room, ann, 500)
    wait_until(all_stored(*((room, 500) for room in rooms)), "2000 rows")
    for room in rooms:
        assert_exactly_once(room, 500)
    assert one.terminate() == 0 and two.terminate() == 0
    counts = stopped_stats(one), stopped_stats(two)
    # Each entry went to one worker: the two workers' counts add up exactly.
    assert sum(counts) == 2000, counts
    assert min(counts) > 0, f"one worker did all the work: {counts}"


def test_database_outage_under_load(start_worker, make_user):
    """While the database is unreachable, appended messages wait in Redis; when it returns each is stored once.

    PostgreSQL: its connections are cut by a TCP proxy and new ones refused.
    SQLite: the file is locked. The outage is logged once, not per retry.
    """
    ann = make_user("ann")
    lobby, dev = make_room("lobby"), make_room("dev")
    with database_outage_control() as (env, outage):
        worker = start_worker(env=env)
        append(lobby, ann, 100)
        wait_until(all_stored((lobby, 100)), "100 rows before the outage")
        with outage():
            append(lobby, ann, 200, prefix="x")
            worker.wait_for_line("database unavailable", timeout=60)
            append(dev, ann, 300)
            # The outage lasts while the worker retries (and fails) once more.
            wait_until(lambda: lines_with(worker, "database still unavailable") >= 1, "a failed retry")
            assert Message.objects.filter(room=dev).count() == 0
            # Acked messages wait in Redis, none acknowledged to the group.
            client = redis_client()
            try:
                assert client.xlen(stream_key(dev.pk)) == 300
            finally:
                client.close()
        worker.wait_for_line("database is back", timeout=60)
        wait_until(all_stored((lobby, 300), (dev, 300)), "600 rows after the outage")
    rows = list(Message.objects.filter(room=lobby).order_by("seq").values_list("seq", "body"))
    assert [seq for seq, _ in rows] == list(range(1, 301))
    assert [body for _, body in rows] == [f"m{i}" for i in range(100)] + [f"x{i}" for i in range(200)]
    assert_exactly_once(dev, 300)
    assert lines_with(worker, "database unavailable") == 1
    assert lines_with(worker, "database is back") == 1
    wait_until(lambda: pending_count(lobby) == 0 and pending_count(dev) == 0, "acknowledgements")


def test_sigterm_flushes_the_current_batch_and_exits_0(start_worker, make_user):
    """SIGTERM while a batch is being gathered: it is written and acknowledged, then the process exits 0."""
    ann = make_user("ann")
    lobby = make_room("lobby")
    append(lobby, ann, 300)
    worker = start_worker(env={"KAIWA_WORKER_BATCH_SIZE": "100000", "KAIWA_WORKER_BATCH_MS": "600000"})
    worker.wait_for_line("batch now 300")
    assert Message.objects.filter(room=lobby).count() == 0
    assert worker.terminate(timeout=30) == 0
    assert_exactly_once(lobby, 300)
    assert pending_count(lobby) == 0
    assert stopped_stats(worker) == 300


def test_status_prints_the_backlog(start_worker, make_user):
    """``chatworker --status [--rooms]`` prints entries not yet persisted and the oldest one's age, then exits."""
    ann = make_user("ann")
    lobby, dev = make_room("lobby"), make_room("dev")
    append(lobby, ann, 5)
    append(dev, ann, 3)

    def status(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", "chatworker", "--status", *args],
            cwd=ROOT,
            env=server_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = status("--rooms")
    assert re.search(r"^backlog: 8 entries not yet in the database .* oldest \d+\.\d s old$", out, re.M), out
    assert re.search(r"^room lobby \(id \d+\): 5 entries \(0 pending, 5 not read\), oldest \d+\.\d s old$", out, re.M)
    assert re.search(r"^room dev \(id \d+\): 3 entries", out, re.M), out
    worker = start_worker()
    wait_until(all_stored((lobby, 5), (dev, 3)), "8 rows")
    wait_until(lambda: pending_count(lobby) == 0 and pending_count(dev) == 0, "acknowledgements")
    worker.terminate()
    assert status() == "backlog: 0 entries not yet in the database\n"


def test_embedded_worker_in_the_server_process(start_server, make_user):
    """A plain uvicorn server persists appended messages itself, and /healthz lists its worker."""
    ann = make_user("ann")
    lobby = make_room("lobby")
    server = start_server()
    server.wait_for_line("Uvicorn running on")  # logged once the socket is bound
    assert "worker" in httpx.get(server.http + "/healthz", timeout=10).json()["components"]
    append(lobby, ann, 50)
    wait_until(all_stored((lobby, 50)), "50 rows", timeout=30)
    assert_exactly_once(lobby, 50)


def test_embedded_worker_can_be_turned_off(start_server):
    """KAIWA_WORKER_EMBEDDED=0: the server runs no worker (a chatworker process does the job)."""
    server = start_server(env={"KAIWA_WORKER_EMBEDDED": "0"})
    server.wait_for_line("Uvicorn running on")
    assert "worker" not in httpx.get(server.http + "/healthz", timeout=10).json()["components"]
    assert not any("persistence worker started" in line for line in server.lines)


def test_redis_outage_then_recovery(start_worker, make_user, redis_server_process):
    """The worker survives Redis going away: it logs the outage once, and persists again when Redis is back."""
    ann = make_user("ann")
    before, after = make_room("before"), make_room("after")
    worker = start_worker()
    append(before, ann, 20)
    wait_until(all_stored((before, 20)), "20 rows")
    redis_server_process.stop()
    try:
        worker.wait_for_line("Redis unavailable")
    finally:
        redis_server_process.start()
    worker.wait_for_line("Redis is back", timeout=60)
    append(after, ann, 30)
    wait_until(all_stored((after, 30)), "30 rows after the outage")
    assert_exactly_once(after, 30)
    assert lines_with(worker, "Redis unavailable") == 1
    assert worker.terminate() == 0


def test_stop_during_a_database_outage_acknowledges_nothing(start_worker, make_user):
    """Stopped while the database is away, the worker exits 0 without acking; a later worker writes all."""
    ann = make_user("ann")
    lobby = make_room("lobby")
    with database_outage_control() as (env, outage):
        worker = start_worker(env={"KAIWA_SHUTDOWN_GRACE_SECONDS": "1", "KAIWA_WORKER_BATCH_MS": "10", **env})
        with outage():
            append(lobby, ann, 40)
            worker.wait_for_line("database unavailable", timeout=60)
            assert worker.terminate(timeout=60) == 0
            line = worker.wait_for_line("persistence worker stopping with")
            assert re.search(r"stopping with [1-9]\d* entries not written", line), line
            # Nothing acknowledged: every entry is still pending or unread in Redis.
            assert unacknowledged(lobby) == 40
    assert Message.objects.filter(room=lobby).count() == 0
    start_worker(env={"KAIWA_WORKER_CLAIM_IDLE_MS": "200"})
    wait_until(all_stored((lobby, 40)), "40 rows")
    assert_exactly_once(lobby, 40)


def test_server_shutdown_flushes_the_embedded_worker_batch(start_server, make_user):
    """SIGTERM to uvicorn: the lifespan stops the embedded worker, which writes its batch before the exit."""
    ann = make_user("ann")
    lobby = make_room("lobby")
    server = start_server(env={"KAIWA_LOG_LEVEL": "DEBUG", "KAIWA_WORKER_BATCH_MS": "600000"})
    append(lobby, ann, 25)
    server.wait_for_line("batch now 25")
    assert Message.objects.filter(room=lobby).count() == 0
    # uvicorn shuts down gracefully, then re-raises SIGTERM so its exit status reports it.
    assert server.terminate(timeout=60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in "".join(server.lines)
    assert stopped_stats(server) == 25
    assert_exactly_once(lobby, 25)
    assert pending_count(lobby) == 0


def test_a_full_batch_is_written_without_waiting_for_a_long_window(start_worker, make_user):
    """Batches are KAIWA_WORKER_BATCH_SIZE entries or KAIWA_WORKER_BATCH_MS, whichever comes first.

    Entries arriving while a batch is open are read during its window (not only
    when it ends), so a batch that fills up is written at once.
    """
    ann = make_user("ann")
    lobby = make_room("lobby")
    worker = start_worker(env={"KAIWA_WORKER_BATCH_SIZE": "20", "KAIWA_WORKER_BATCH_MS": "600000"})
    worker.wait_for_line("persistence worker started")
    append(lobby, ann, 10)
    worker.wait_for_line("batch now 10")
    append(lobby, ann, 10, prefix="n")
    worker.wait_for_line("writing a batch of 20 entries")
    wait_until(all_stored((lobby, 20)), "20 rows")
    seqs = list(Message.objects.filter(room=lobby).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 21))


def test_backlog_above_the_warning_level_is_logged(start_worker, make_user):
    """A backlog larger than KAIWA_WORKER_BACKLOG_WARN is logged with its size and the oldest entry's age."""
    ann = make_user("ann")
    lobby = make_room("lobby")
    append(lobby, ann, 50)
    worker = start_worker(env={"KAIWA_WORKER_BACKLOG_WARN": "10"})
    line = worker.wait_for_line("persistence backlog:")
    assert re.search(r"persistence backlog: 50 entries not yet in the database, oldest \d+\.\d s old", line), line
    wait_until(all_stored((lobby, 50)), "50 rows")


def test_message_sent_over_the_websocket_is_in_the_database_and_the_admin(start_server, make_user, admin_client):
    """End to end: a message acked on /ws is stored by the server's embedded worker and listed in the admin."""
    ann = make_user("ann")
    make_room("lobby")
    server = start_server()
    server.wait_for_line("Uvicorn running on")
    cookie = session_cookie(ann)

    async def scenario() -> dict[str, Any]:
        peer = await Peer.open(server.ws, cookie)
        try:
            await peer.join("lobby")
            return await peer.send_message("lobby", "hello database", "c-1")
        finally:
            await peer.close()

    ack = asyncio.run(scenario())
    assert ack["type"] == "ack", ack
    wait_until(lambda: Message.objects.filter(room__slug="lobby").exists(), "the row", timeout=10)
    row = Message.objects.get(room__slug="lobby")
    assert (row.seq, row.body, row.client_id, row.author_id) == (ack["seq"], "hello database", "c-1", ann.pk)
    assert row.created_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") == ack["ts"]
    assert "hello database" in admin_client.get("/admin/chat/message/").content.decode()


def test_chatworker_refuses_a_database_without_tables(tmp_path):
    """Started against an unmigrated database, chatworker exits 1 and says to run migrate (not retry forever)."""
    done = subprocess.run(
        [sys.executable, "manage.py", "chatworker"],
        cwd=ROOT,
        env=server_env(DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "has no chat_message table: run python manage.py migrate first" in done.stderr
