"""Pictures in chat end to end on a real server: upload over HTTP, send the id over /ws, see it everywhere.

protocol.md 7.3: ``send`` with ``attachments``; ``message`` frames and the
history carry the ``A`` objects (an empty list when none).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings

from tests import samplefiles
from tests.wsapp.api.test_deps import new_token
from tests.wsapp.conftest import Peer, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def _upload(server: Any, session: str, data: bytes, name: str) -> dict[str, Any]:
    secret, masked = new_token()
    cookies = {settings.SESSION_COOKIE_NAME: session, settings.CSRF_COOKIE_NAME: secret}
    response = httpx.post(
        f"{server.http}/api/rooms/lobby/attachments",
        files={"file": (name, data, "application/octet-stream")},
        headers={"X-CSRFToken": masked},
        cookies=cookies,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return dict(response.json()["attachment"])


def _error_for(ref: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame["type"] == "error" and frame["ref"] == ref


def _history(server: Any, session: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.http}/api/rooms/lobby/messages", cookies={settings.SESSION_COOKIE_NAME: session}, timeout=10
    )
    assert response.status_code == 200, response.text
    return list(response.json()["messages"])


def test_photo_sent_in_a_message_reaches_everyone_and_the_history(
    start_server: Any, make_user: Any, room: Any, aio: Any, tmp_path: Path
) -> None:
    """alice uploads a photo and a PDF and sends them with an empty body; bob's message frame and the history
    carry both A objects; a plain message carries an empty list; reusing an id or taking bob's is bad_request."""
    server = start_server(env={"MEDIA_ROOT": str(tmp_path / "media")})
    alice, bob = make_user("alice"), make_user("bob")
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)
    photo = _upload(server, a_cookie, samplefiles.heic_with_gps(), "IMG_0001.HEIC")
    pdf = _upload(server, a_cookie, samplefiles.PDF, "plan.pdf")
    bobs = _upload(server, b_cookie, samplefiles.TEXT, "notes.txt")
    assert photo["content_type"] == "image/jpeg" and photo["name"] == "IMG_0001.jpg"

    async def scenario() -> None:
        a = await Peer.open(server.ws, a_cookie)
        b = await Peer.open(server.ws, b_cookie)
        await a.join("lobby")
        await b.join("lobby")
        await a.send(
            {"type": "send", "room": "lobby", "body": "", "attachments": [photo["id"], pdf["id"]], "client_id": "p1"}
        )
        (ack,) = await a.wait_for(lambda f: f["type"] == "ack" and f["client_id"] == "p1")
        (seen,) = await b.wait_for(lambda f: f["type"] == "message" and f["seq"] == ack["seq"])
        assert seen["body"] == "" and seen["attachments"] == [photo, pdf]
        await a.send({"type": "send", "room": "lobby", "body": "just text", "client_id": "t1"})
        (plain,) = await b.wait_for(lambda f: f["type"] == "message" and f["client_id"] == "t1")
        assert plain["attachments"] == []
        for bad, ref in (([photo["id"]], "r1"), ([bobs["id"]], "r2"), ([], "r3"), (["x"] * 11, "r4"), ("abc", "r5")):
            await a.send({"type": "send", "room": "lobby", "body": "again", "attachments": bad, "client_id": ref})
            (error,) = await a.wait_for(_error_for(ref))
            assert error["code"] == "bad_request", error
        await a.close()
        await b.close()

    aio(scenario())
    deadline = time.monotonic() + 30
    while True:  # an observation loop with a deadline: the worker stores the messages on its own schedule
        history = _history(server, b_cookie)
        if len(history) == 2:
            break
        assert time.monotonic() < deadline, history
        time.sleep(0.1)
    assert history[0]["attachments"] == [photo, pdf] and history[1]["attachments"] == []
    got = httpx.get(server.http + photo["url"], cookies={settings.SESSION_COOKIE_NAME: b_cookie}, timeout=10)
    assert got.status_code == 200 and got.content[:3] == b"\xff\xd8\xff"
    assert not any(secret in got.content for secret in samplefiles.SECRETS)
