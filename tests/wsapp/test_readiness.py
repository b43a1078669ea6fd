"""GET /readyz: 200 while a process can take new sockets, 503 with the reasons otherwise (protocol 7.7)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from chat.models import Room
from tests import redis_server
from tests.wsapp.conftest import TIMEOUT, connect, join, recv_until, send, session_cookie
from wsapp.readiness import Live, reasons

pytestmark = pytest.mark.django_db(transaction=True)


def acked(client_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame["type"] == "ack" and frame["client_id"] == client_id


def readyz(base: str) -> httpx.Response:
    return httpx.get(f"{base}/readyz", timeout=TIMEOUT)


def test_a_healthy_process_is_ready_and_says_what_it_checked(start_server: Any) -> None:
    """Redis, the database, the relay and the backlog all fine: 200, and /healthz still answers on its own."""
    server = start_server()
    response = readyz(server.http)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["reasons"] == []
    assert body["checks"]["redis"] is True
    assert body["checks"]["database"] is True
    assert body["checks"]["relay"] is True
    assert body["checks"]["backlog"] == 0
    assert response.headers["cache-control"] == "no-store"
    assert httpx.get(f"{server.http}/healthz", timeout=TIMEOUT).status_code == 200


def test_redis_unreachable_makes_it_not_ready(
    start_server: Any, redis_server_process: redis_server.RedisServer
) -> None:
    """With Redis stopped, /readyz is 503 and names Redis; the process itself stays alive (liveness is /healthz)."""
    server = start_server(env={"KAIWA_READY_TIMEOUT_SECONDS": "1"})
    assert readyz(server.http).status_code == 200
    redis_server_process.stop()
    try:
        response = readyz(server.http)
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] == "not_ready"
        assert "Redis unreachable" in body["reason"]
        assert body["checks"]["redis"] is False
        assert server.process.poll() is None
    finally:
        redis_server_process.start()


def test_database_unreachable_makes_it_not_ready(start_server: Any) -> None:
    """A database nobody answers for: 503 naming the database."""
    server = start_server(
        env={
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{redis_server.free_port()}/kaiwa_absent",
            "KAIWA_WORKER_EMBEDDED": "0",
            "KAIWA_READY_TIMEOUT_SECONDS": "5",
        }
    )
    response = readyz(server.http)
    assert response.status_code == 503, response.text
    body = response.json()
    assert "database unreachable" in body["reason"]
    assert body["checks"]["database"] is False
    assert body["checks"]["redis"] is True


def test_a_backlog_above_the_limit_makes_it_not_ready(start_server: Any, make_user: Any, aio: Any) -> None:
    """No worker stores anything: three acked messages over KAIWA_READY_MAX_BACKLOG=2 give 503 with the count."""
    Room.objects.create(slug="lobby", name="Lobby")
    cookie = session_cookie(make_user("alice"))
    server = start_server(env={"KAIWA_WORKER_EMBEDDED": "0", "KAIWA_READY_MAX_BACKLOG": "2"})

    async def three() -> None:
        ws = await connect(server.ws, cookie)
        await join(ws, "lobby")
        for i in range(3):
            await send(ws, {"type": "send", "room": "lobby", "body": f"m{i}", "client_id": f"c{i}"})
            await recv_until(ws, acked(f"c{i}"))

    aio(three())
    response = readyz(server.http)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["checks"]["backlog"] == 3
    assert "KAIWA_READY_MAX_BACKLOG=2" in body["reason"]
    assert body["checks"]["oldest_unstored_seconds"] is not None


def _live(**overrides: Any) -> Live:
    figures: dict[str, Any] = {
        "redis_ok": True,
        "database_ok": True,
        "backlog": 0,
        "oldest_seconds": None,
        "unstored": 0,
    }
    figures.update(overrides)
    return Live(**figures)


def test_the_rules_each_give_their_own_reason(settings: Any) -> None:
    """Every rule on its own: shutting down, relay down, backlog unknown or too high, lag past the optional limit."""
    settings.KAIWA_READY_MAX_BACKLOG = 10
    settings.KAIWA_READY_MAX_LAG_SECONDS = 0.0
    assert reasons(_live(), accepting=True, relay_connected=True) == []
    assert reasons(_live(backlog=10, oldest_seconds=999.0), accepting=True, relay_connected=True) == []
    assert "shutting down" in reasons(_live(), accepting=False, relay_connected=True)[0]
    assert "pub/sub" in reasons(_live(), accepting=True, relay_connected=False)[0]
    assert "backlog 11 messages" in reasons(_live(backlog=11), accepting=True, relay_connected=True)[0]
    unknown = reasons(_live(backlog=None, errors={"backlog": "boom"}), accepting=True, relay_connected=True)
    assert unknown == ["persistence backlog unknown (boom)"]
    down = reasons(
        _live(redis_ok=False, backlog=None, errors={"redis": "refused"}), accepting=True, relay_connected=False
    )
    assert down == ["Redis unreachable (refused)"]
    settings.KAIWA_READY_MAX_LAG_SECONDS = 30.0
    assert reasons(_live(backlog=1, oldest_seconds=29.0), accepting=True, relay_connected=True) == []
    lagging = reasons(_live(backlog=1, oldest_seconds=31.0), accepting=True, relay_connected=True)
    assert lagging and "KAIWA_READY_MAX_LAG_SECONDS=30" in lagging[0]
