"""GET /metrics on a real uvicorn process: who may read it, and the figures real traffic leaves in it (protocol 7.7)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chat.models import Room
from tests.wsapp.conftest import TIMEOUT, close_code, connect, join, recv_until, send, session_cookie
from wsapp.metricsroute import token_accepted

pytestmark = pytest.mark.django_db(transaction=True)


def acked(client_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame["type"] == "ack" and frame["client_id"] == client_id


TOKEN = "s3cret-metrics-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def scrape(base: str, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, keyed by (name, sorted labels)."""
    response = httpx.get(f"{base}/metrics", headers=AUTH if headers is None else headers, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def get(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_token_is_compared_whole_and_only_as_a_bearer_token() -> None:
    """Only "Bearer <token>" (scheme in any case) is accepted; a prefix, a longer value or another scheme is not."""
    assert token_accepted(f"Bearer {TOKEN}", TOKEN)
    assert token_accepted(f"bearer {TOKEN}", TOKEN)
    assert not token_accepted(None, TOKEN)
    assert not token_accepted("", TOKEN)
    assert not token_accepted(f"Bearer {TOKEN[:-1]}", TOKEN)
    assert not token_accepted(f"Bearer {TOKEN}x", TOKEN)
    assert not token_accepted(f"Basic {TOKEN}", TOKEN)
    assert not token_accepted(TOKEN, TOKEN)
    assert not token_accepted("Bearer \udcff", TOKEN)


def test_without_a_token_configured_metrics_do_not_exist(start_server: Any) -> None:
    """No KAIWA_METRICS_TOKEN: /metrics is 404 whatever is sent."""
    server = start_server(env={"KAIWA_METRICS_TOKEN": ""})
    for headers in ({}, {"Authorization": "Bearer x"}, AUTH):
        response = httpx.get(f"{server.http}/metrics", headers=headers, timeout=TIMEOUT)
        assert response.status_code == 404
        assert "kaiwa_" not in response.text


def test_a_missing_or_wrong_token_is_401_and_says_how_to_authenticate(start_server: Any) -> None:
    """With a token set: no header or a wrong one is 401 with WWW-Authenticate; the right one is 200."""
    server = start_server(env={"KAIWA_METRICS_TOKEN": TOKEN})
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        response = httpx.get(f"{server.http}/metrics", headers=headers, timeout=TIMEOUT)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "KAIWA_METRICS_TOKEN" in response.text
        assert "kaiwa_" not in response.text.replace("KAIWA_METRICS_TOKEN", "")
    samples = scrape(server.http)
    assert get(samples, "kaiwa_server_processes") == 1
    assert get(samples, "kaiwa_dependency_up", dependency="redis") == 1
    assert get(samples, "kaiwa_dependency_up", dependency="database") == 1
    assert get(samples, "kaiwa_worker_backlog_messages") == 0
    assert get(samples, "kaiwa_unstored_messages") == 0


def test_real_traffic_shows_in_the_figures(start_server: Any, make_user: Any, aio: Any) -> None:
    """Two members, three sends, one refusal, one close: connections, joins, acks, deliveries and closes add up."""
    Room.objects.create(slug="lobby", name="Lobby")
    alice, bob = make_user("alice"), make_user("bob")
    cookies = session_cookie(alice), session_cookie(bob)
    server = start_server(env={"KAIWA_METRICS_TOKEN": TOKEN})

    async def traffic() -> None:
        a = await connect(server.ws, cookies[0])
        b = await connect(server.ws, cookies[1])
        await join(a, "lobby")
        await join(b, "lobby")
        for i in range(3):
            await send(a, {"type": "send", "room": "lobby", "body": f"m{i}", "client_id": f"c{i}"})
            await recv_until(a, acked(f"c{i}"))
        await recv_until(b, lambda f: f["type"] == "message" and f["body"] == "m2")
        await send(a, {"type": "send", "room": "elsewhere", "body": "x", "client_id": "nope"})
        await recv_until(a, lambda f: f["type"] == "error" and f["code"] == "not_joined")
        refused = await connect(server.ws, None)
        assert await close_code(refused) == 4401
        await b.close()
        await asyncio.wait_for(b.wait_closed(), TIMEOUT)

    aio(traffic())
    wanted = {
        ("kaiwa_connections_opened_total", ()): 2,
        ("kaiwa_connections_open", ()): 1,
        ("kaiwa_connections_closed_total", (("code", "client"),)): 1,
        ("kaiwa_handshakes_total", (("result", "accepted"),)): 2,
        ("kaiwa_handshakes_total", (("result", "refused"),)): 1,
        ("kaiwa_handshake_seconds_count", ()): 3,
        ("kaiwa_joins_total", (("kind", "fresh"),)): 2,
        ("kaiwa_messages_accepted_total", ()): 3,
        ("kaiwa_ack_seconds_count", ()): 3,
        ("kaiwa_fanouts_total", ()): 3,
        ("kaiwa_deliveries_total", ()): 6,
        ("kaiwa_refusals_total", (("code", "not_joined"), ("frame", "send"))): 1,
        ("kaiwa_worker_persisted_total", ()): 3,
        ("kaiwa_worker_persist_lag_seconds_count", ()): 3,
    }

    async def settled() -> dict[Any, float]:
        # The socket's close and the worker's batch are reported by the server when they happen.
        async with asyncio.timeout(TIMEOUT):
            while True:
                samples = await asyncio.to_thread(scrape, server.http)
                if all(samples.get(key, 0.0) == count for key, count in wanted.items()):
                    return samples
                await asyncio.sleep(0.1)

    try:
        samples = aio(settled())
    except TimeoutError:
        samples = scrape(server.http)
        assert {key: samples.get(key, 0.0) for key in wanted} == wanted
    # Read from Redis at scrape time (kept a few seconds): present, whichever value it had then.
    assert ("kaiwa_worker_backlog_messages", ()) in samples
    assert get(samples, "kaiwa_ack_seconds_bucket", le="+Inf") == 3
