"""uvicorn --workers 2: every process answers /metrics with the whole server's figures (protocol 7.7)."""

from __future__ import annotations

import queue
import time
from typing import Any

import httpx
import pytest

from chat.models import Room
from tests.wsapp.conftest import TIMEOUT, connect, join, recv_until, send, session_cookie
from tests.wsapp.test_metricsroute import AUTH, TOKEN, get, scrape

pytestmark = pytest.mark.django_db(transaction=True)

SOCKETS = 6


def _wait_for_workers(server: Any, count: int, timeout: float = 30.0) -> None:
    """Every worker ran its lifespan (the fixture returns after the first one): read the log as it comes."""
    deadline = time.monotonic() + timeout
    while sum("Application startup complete" in line for line in server.lines) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "".join(server.lines)
        try:
            line = server._queue.get(timeout=remaining)
        except queue.Empty:
            continue
        assert line is not None, "".join(server.lines)


def test_each_worker_reports_every_workers_figures(start_server: Any, make_user: Any, aio: Any) -> None:
    """Sockets spread over two processes: every scrape, whichever process answers it, counts all of them."""
    Room.objects.create(slug="lobby", name="Lobby")
    cookies = [session_cookie(make_user(f"user{i}")) for i in range(3)]
    server = start_server(
        env={"KAIWA_METRICS_TOKEN": TOKEN, "KAIWA_METRICS_SAMPLE_SECONDS": "0.2"}, args=["--workers", "2"]
    )
    _wait_for_workers(server, 2)

    async def open_sockets() -> list[Any]:
        sockets = []
        for i in range(SOCKETS):
            ws = await connect(server.ws, cookies[i % len(cookies)])
            await join(ws, "lobby")
            sockets.append(ws)
        await send(sockets[0], {"type": "send", "room": "lobby", "body": "hello all", "client_id": "c1"})
        for ws in sockets:
            await recv_until(ws, lambda f: f["type"] == "message" and f["body"] == "hello all")
        return sockets

    aio(open_sockets())
    answered_by: set[int] = set()
    for _ in range(40):
        # A new TCP connection each time, so the kernel hands it to either worker.
        with httpx.Client(timeout=TIMEOUT) as client:
            pid = client.get(f"{server.http}/healthz").json()["pid"]
        answered_by.add(pid)
        samples = scrape(server.http)
        assert get(samples, "kaiwa_server_processes") == 2
        assert get(samples, "kaiwa_connections_open") == SOCKETS
        assert get(samples, "kaiwa_connections_opened_total") == SOCKETS
        assert get(samples, "kaiwa_joins_total", kind="fresh") == SOCKETS
        assert get(samples, "kaiwa_messages_accepted_total") == 1
        if len(answered_by) == 2:
            break
    assert len(answered_by) == 2, "every request went to one worker; the test proves nothing"
    # The deliveries of one message, counted in the process of each member's socket (and
    # flushed by each process's sampler): all of them, whichever process answers.
    deadline = time.monotonic() + TIMEOUT
    while get(samples, "kaiwa_deliveries_total") != SOCKETS and time.monotonic() < deadline:
        samples = scrape(server.http)
    assert get(samples, "kaiwa_deliveries_total") == SOCKETS
    assert httpx.get(f"{server.http}/metrics", timeout=TIMEOUT).status_code == 401
    assert httpx.get(f"{server.http}/metrics", headers=AUTH, timeout=TIMEOUT).status_code == 200
