"""The servers under test and how the bench starts each of them.

* ``kaiwa``: ``uvicorn project.asgi:application`` the way operators run it
  (production settings from the environment, ``manage.py migrate`` first).
* ``channels``: the Django Channels reference (``bench/channels_peer``).
* ``relay``: the bare Starlette + Redis pub/sub relay (``bench/bare_relay.py``).
* ``echo``: the calibration server (``bench/loadgen-node/echo.js``), no Redis, no DB.
* ``kaiwa-websockets``, ``kaiwa-wsproto``: Kaiwa on uvicorn's other WebSocket
  implementations (every other server runs on ``WS_IMPL``, uvicorn's default).

Each gets its own fresh Redis and a fresh database, real users and sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.nodefleet import ECHO_JS, node
from bench.procs import (
    Env,
    HarnessError,
    Pinning,
    RedisProcess,
    Sampler,
    ServerProcess,
    free_port,
    python,
    run_checked,
    start_process,
)

LARGE_FRAME = 16 * 1024 * 1024
POSTGRES_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    app: str | None  # uvicorn app, or None for a non-ASGI server
    settings: str | None  # Django settings module
    message_model: str | None
    room_field: str | None
    room_model: str | None
    redis: bool
    authenticates: bool
    resumes: bool  # honours join.since
    ws: str = "websockets-sansio"  # uvicorn --ws

    @property
    def kaiwa(self) -> bool:
        return self.app == "project.asgi:application"


# uvicorn 0.54's default WebSocket implementation: every peer runs on it, so the
# comparison is like with like; Kaiwa is also measured on the others.
WS_IMPL = "websockets-sansio"

KINDS: dict[str, Kind] = {
    "kaiwa": Kind(
        "kaiwa",
        "Kaiwa",
        "project.asgi:application",
        "project.settings",
        "chat.Message",
        "room__slug",
        "chat.Room",
        True,
        True,
        True,
    ),
    "channels": Kind(
        "channels",
        "Django Channels",
        "bench.channels_peer.asgi:application",
        "bench.channels_peer.settings",
        "channels_peer.ChatMessage",
        "room",
        None,
        True,
        True,
        False,
    ),
    "relay": Kind("relay", "bare relay", "bench.bare_relay:app", None, None, None, None, True, False, False),
    "echo": Kind("echo", "echo (calibration)", None, None, None, None, None, False, False, False),
}
for _impl in ("websockets", "wsproto"):
    KINDS[f"kaiwa-{_impl}"] = Kind(
        f"kaiwa-{_impl}",
        f"Kaiwa (--ws {_impl})",
        "project.asgi:application",
        "project.settings",
        "chat.Message",
        "room__slug",
        "chat.Room",
        True,
        True,
        True,
        ws=_impl,
    )


@dataclass
class Profile:
    """How a server is configured for a group of scenarios."""

    name: str  # "default" | "large"
    db: str = "sqlite"  # "sqlite" | "postgres"


def postgres_available() -> str | None:
    """None if PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip()[:200]}"


def _fresh_postgres_db(name: str) -> str:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def _drop_postgres_db(name: str) -> None:
    import psycopg

    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception:
        pass


@dataclass
class Target:
    """A running server under test."""

    kind: Kind
    profile: Profile
    port: int
    process: ServerProcess
    redis: RedisProcess | None
    sampler: Sampler
    env: dict[str, str]
    database_url: str | None
    cookie_name: str = "sessionid"
    sessions: list[str] = field(default_factory=list)
    workdir: Path = Path()
    pg_db: str | None = None
    cmd: list[str] = field(default_factory=list)
    pinning: Pinning | None = None
    _next: int = 0

    host = "127.0.0.1"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cookies(self, n: int) -> list[str | None]:
        """``n`` session cookies never handed out before in this server session."""
        if not self.kind.authenticates:
            return [None] * n
        if self._next + n > len(self.sessions):
            raise HarnessError(f"{self.kind.name}: only {len(self.sessions)} sessions were provisioned")
        keys = self.sessions[self._next : self._next + n]
        self._next += n
        return [f"{self.cookie_name}={k}" for k in keys]

    def reuse_cookies(self, n: int) -> list[str | None]:
        """``n`` cookies, reusing sessions from the start (for scenarios after the fresh ones)."""
        if not self.kind.authenticates:
            return [None] * n
        keys = (self.sessions * (n // max(1, len(self.sessions)) + 1))[:n]
        return [f"{self.cookie_name}={k}" for k in keys]

    def alive(self) -> bool:
        return self.process.alive()

    def restart(self) -> float:
        """Stop the server (SIGTERM: a graceful shutdown) and start it again on the same port.

        Returns when it listens again; the sampler follows the new process.
        Returns the seconds it took.
        """
        assert self.pinning is not None
        t0 = time.monotonic()
        self.sampler.stop()
        self.process.stop()
        self.process = start_process(
            self.kind.name, self.cmd, env=self.env, port=self.port, log_path=self.workdir / "server-restarted.log",
            pinning=self.pinning,
        )  # fmt: skip
        self.sampler = Sampler(
            self.process.process.pid,
            self.redis.process.pid if self.redis and self.redis.process else None,
            self.redis.port if self.redis else None,
            self.port,
            self.pinning,
        )
        self.sampler.start()
        return time.monotonic() - t0

    def dbstats(self, room: str, expect: int, timeout: float) -> dict[str, Any]:
        kind = self.kind
        assert kind.message_model and kind.room_field
        out = run_checked(
            [
                python(), "-m", "bench.provision", "dbstats",
                "--model", kind.message_model, "--room-field", kind.room_field,
                "--room", room, "--expect", str(expect), "--timeout", str(timeout),
            ],
            env=self.env,
            what=f"{kind.name}: reading persisted messages",
            timeout=timeout + 60,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(out)
        return result

    def stop(self) -> None:
        self.sampler.stop()
        self.process.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.pg_db:
            _drop_postgres_db(self.pg_db)


def _server_env(kind: Kind, profile: Profile, redis_url: str | None, db_url: str | None) -> dict[str, str]:
    env: dict[str, str] = {
        "SECRET_KEY": "bench-" + secrets.token_urlsafe(40),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "SECURE_HSTS_SECONDS": "0",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    if db_url:
        env["DATABASE_URL"] = db_url
    if kind.settings:
        env["DJANGO_SETTINGS_MODULE"] = kind.settings
    if kind.kaiwa:
        env.update(BENCH_KAIWA_ENV)
        if profile.name == "large":
            env.update(BENCH_KAIWA_LARGE_ENV)
    return env


# The bench's senders are a handful of users offering thousands of messages per
# second, which the per-user rate limits (made for people) would refuse. Every
# other limit keeps its default.
BENCH_KAIWA_ENV = {
    "KAIWA_RATE_BURST": "1000000",
    "KAIWA_RATE_PER_SECOND": "1000000",
    "KAIWA_FRAME_RATE_BURST": "1000000",
    "KAIWA_FRAME_RATE_PER_SECOND": "1000000",
    "KAIWA_LOG_LEVEL": "WARNING",
}
# The payload sweep's large messages need the frame, body and queue limits raised.
BENCH_KAIWA_LARGE_ENV = {
    "KAIWA_MAX_FRAME_BYTES": str(LARGE_FRAME),
    "KAIWA_MAX_BODY_CHARS": str(LARGE_FRAME),
    # A connection's queue must hold at least one of the largest frames, or every
    # receiver of an 8 MB message is closed with 1013 at once: 20 MiB holds two.
    "KAIWA_SEND_QUEUE_MAX_BYTES": str(20 * 1024 * 1024),
}


def uvicorn_args(kind: Kind, profile: Profile, port: int) -> list[str]:
    assert kind.app
    args = [
        python(), "-m", "uvicorn", kind.app,
        "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning",
        "--ws", kind.ws,
        "--ws-per-message-deflate", "false",
        "--backlog", "4096",
    ]  # fmt: skip
    if profile.name == "large":
        args += ["--ws-max-size", str(LARGE_FRAME)]
    if kind.kaiwa or kind.name == "relay":
        args += ["--lifespan", "on"]
    return args


def _migrate(kind: Kind, env: dict[str, str], workdir: Path, sqlite_file: Path | None) -> None:
    """``migrate`` the server's fresh database.

    SQLite databases are migrated once per run into a template file and copied:
    an identical fresh database, without paying for ``migrate`` on every start.
    """
    if kind.kaiwa:
        cmd, what = [python(), "manage.py", "migrate", "--noinput"], "kaiwa: manage.py migrate"
    else:
        cmd, what = [python(), "-m", "django", "migrate", "--noinput"], f"{kind.name}: migrate"
    if sqlite_file is None:
        run_checked(cmd, env=env, what=what)
        return
    template = workdir / f"template-{kind.settings}.sqlite3"
    if not template.exists():
        run_checked(cmd, env={**env, "DATABASE_URL": f"sqlite:///{template}"}, what=what)
        with contextlib.closing(sqlite3.connect(template)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode=DELETE")
    shutil.copyfile(template, sqlite_file)


def start_target(
    kind_name: str,
    profile: Profile,
    *,
    workdir: Path,
    pinning: Pinning,
    sessions: int,
    rooms: list[str],
    extra_env: dict[str, str] | None = None,
) -> Target:
    kind = KINDS[kind_name]
    tag = f"{kind.name}-{profile.name}-{profile.db}"
    wd = workdir / tag
    if wd.exists():
        shutil.rmtree(wd)
    wd.mkdir(parents=True)
    redis_proc: RedisProcess | None = None
    pg_db: str | None = None
    server: ServerProcess | None = None
    try:
        if kind.redis:
            redis_proc = RedisProcess(wd / "redis", pinning)
            redis_proc.start()
        db_url: str | None = None
        if kind.settings:
            if profile.db == "postgres":
                pg_db = f"kaiwa_bench_{kind.name}"
                db_url = _fresh_postgres_db(pg_db)
            else:
                db_url = f"sqlite:///{wd / 'db.sqlite3'}"
        base = _server_env(kind, profile, redis_proc.url if redis_proc else None, db_url)
        if kind.kaiwa:
            # Uploaded attachments (bench.uploads) stay in the run's directory, never the checkout's .kaiwa/.
            base["MEDIA_ROOT"] = str(wd / "media")
        env = Env({**base, **(extra_env or {})}).build()
        cookie_name = "sessionid"
        keys: list[str] = []
        if kind.settings:
            _migrate(kind, env, workdir, wd / "db.sqlite3" if profile.db == "sqlite" else None)
            out = run_checked(
                [
                    python(), "-m", "bench.provision", "sessions",
                    "--count", str(sessions), "--prefix", f"bench-{tag}",
                    "--rooms", ",".join(rooms), "--room-model", kind.room_model or "",
                ],
                env=env,
                what=f"{kind.name}: creating users and sessions",
            )  # fmt: skip
            data = json.loads(out)
            cookie_name = data["cookie_name"]
            keys = data["sessions"]
        port = free_port()
        if kind.app:
            cmd = uvicorn_args(kind, profile, port)
        else:
            max_size = LARGE_FRAME if profile.name == "large" else 1024 * 1024
            cmd = [node(), str(ECHO_JS), "--port", str(port), "--max-size", str(max_size)]
        server = start_process(kind.name, cmd, env=env, port=port, log_path=wd / "server.log", pinning=pinning)
        sampler = Sampler(
            server.process.pid,
            redis_proc.process.pid if redis_proc and redis_proc.process else None,
            redis_proc.port if redis_proc else None,
            port,
            pinning,
        )
        sampler.start()
        return Target(
            cmd=cmd,
            pinning=pinning,
            kind=kind,
            profile=profile,
            port=port,
            process=server,
            redis=redis_proc,
            sampler=sampler,
            env=env,
            database_url=db_url,
            cookie_name=cookie_name,
            sessions=keys,
            workdir=wd,
            pg_db=pg_db,
        )
    except BaseException:
        if server is not None:
            server.stop()
        if redis_proc is not None:
            redis_proc.stop()
        if pg_db:
            _drop_postgres_db(pg_db)
        raise


async def settled(target: Target, *, busy_cpu_per_s: float = 0.0, maximum_s: float = 60.0) -> float:
    """Wait until the server used under a tenth of a core (beyond ``busy_cpu_per_s``) for a second; returns the wait.

    For a measurement that must not pay for work an earlier step left behind.
    Gives up after ``maximum_s`` (the wait is in the results either way).
    """
    began = time.monotonic()
    while time.monotonic() - began < maximum_s:
        cpu0 = target.sampler.cpu_seconds_now()
        await asyncio.sleep(1.0)  # the measuring window, not a synchronisation
        if target.sampler.cpu_seconds_now() - cpu0 < 0.1 + busy_cpu_per_s:
            break
    return round(time.monotonic() - began, 1)
