"""Shared fixtures: the suite's Redis, a file-backed test database, real server processes."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from django.conf import settings
from django.db import connection

from tests import redis_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    """SQLite tests use a file, so server processes started by a test share the database."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


@pytest.fixture(scope="session", autouse=True)
def _end_stray_database_sessions(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Before the PostgreSQL test database is dropped, end the sessions still open on it.

    Long-lived threads of the apps the tests build in this process (session
    checks, readiness probes) keep a connection each; PostgreSQL refuses to
    drop a database anyone is connected to. Runs before pytest-django's
    teardown because it depends on ``django_db_setup``.
    """
    yield
    from django.db import connection as main

    if main.vendor != "postgresql":
        return
    with django_db_blocker.unblock():
        with main.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        main.close()


@pytest.fixture(scope="session")
def redis_server_process() -> redis_server.RedisServer:
    assert redis_server.SERVER is not None, "the tests.redis_server plugin did not start Redis"
    return redis_server.SERVER


@pytest.fixture(autouse=True)
def _clean_redis(redis_server_process: redis_server.RedisServer) -> Iterator[None]:
    """Each test starts with an empty Redis (and a running one, if a test stopped it)."""
    if redis_server_process.process is None:
        redis_server_process.start()
    client = redis_sync.Redis.from_url(redis_server_process.url)
    client.flushall()
    client.close()
    yield


def database_url() -> str:
    """The URL of the database the tests use, for child server processes."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host: str = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{host}{port}/{db['NAME']}"


@dataclass
class ServerProcess:
    """``uvicorn project.asgi:application`` as a child process."""

    port: int
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def wait_for_line(self, needle: str, timeout: float = 20.0) -> str:
        """Block until the server logs a line containing ``needle``."""
        for line in self.lines:
            if needle in line:
                return line
        while True:
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"server did not log {needle!r} within {timeout} s; it logged:\n" + "".join(self.lines)
                ) from None
            if item is None:
                raise AssertionError(f"server exited before logging {needle!r}:\n" + "".join(self.lines))
            if needle in item:
                return item

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    @classmethod
    def spawn(cls, cmd: list[str], env: dict[str, str], port: int = 0) -> ServerProcess:
        """Run ``cmd`` in the project directory, collecting its output line by line."""
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        server = cls(port=port, process=proc)
        server.reader = threading.Thread(target=_pump, args=(proc, server), daemon=True)
        server.reader.start()
        return server

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (SIGKILL if it does not exit in time), then release the output pipe."""
        try:
            self.terminate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.reader is not None:
            self.reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _pump(proc: subprocess.Popen[str], server: ServerProcess) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        server.lines.append(line)
        server._queue.put(line)
    server._queue.put(None)


def server_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url(),
            "REDIS_URL": redis_server.SERVER.url if redis_server.SERVER else env["REDIS_URL"],
            "PYTHONUNBUFFERED": "1",
            "KAIWA_LOG_LEVEL": "INFO",
        }
    )
    env.update(overrides)
    return env


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start real uvicorn server processes; all are stopped after the test.

    ``start_server(env={...}, args=[...])`` returns once uvicorn logged
    "Uvicorn running on", i.e. after the lifespan startup ran AND the port is
    bound (uvicorn binds only after "Application startup complete").
    """
    started: list[ServerProcess] = []

    def start(
        env: dict[str, str] | None = None, args: list[str] | None = None, port: int | None = None
    ) -> ServerProcess:
        port = port or redis_server.free_port()
        cmd = [
            sys.executable, "-m", "uvicorn", "project.asgi:application",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            *(args or []),
        ]  # fmt: skip
        server = ServerProcess.spawn(cmd, server_env(**(env or {})), port=port)
        started.append(server)
        server.wait_for_line("Application startup complete")
        server.wait_for_line("Uvicorn running on")
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def make_user(django_user_model: Any) -> Callable[..., Any]:
    counter = iter(range(1, 1_000_000))

    def make(username: str | None = None, password: str = "correct horse battery", **extra: Any) -> Any:
        name = username or f"user{next(counter)}"
        return django_user_model.objects.create_user(username=name, password=password, **extra)

    return make
