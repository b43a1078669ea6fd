"""Every refusal row and close code of the contract, with the exact answer, and others keep being served."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from chat.models import Membership, Room
from tests.wsapp.conftest import close_code, connect, join, recv, recv_until, send, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def still_serving(url: str, cookie: str) -> None:
    """A fresh connection joins, sends and gets its ack and message."""
    ws = await connect(url, cookie)
    await join(ws, "lobby")
    await send(ws, {"type": "send", "room": "lobby", "body": "still here", "client_id": "alive"})
    ack, _ = await recv_until(ws, lambda f: f["type"] == "ack" and f["client_id"] == "alive")
    assert ack["room"] == "lobby"
    await ws.close()


def _error(frame, code, ref, room=None):
    assert frame["type"] == "error", frame
    assert frame["code"] == code, frame
    assert frame["ref"] == ref, frame
    assert isinstance(frame["message"], str) and frame["message"]
    if room is None:
        assert "room" not in frame, frame
    else:
        assert frame["room"] == room, frame


def test_bad_requests_get_bad_request_with_the_right_ref(start_server, make_user, room, aio):
    """Binary, invalid JSON, non-objects, bad fields: bad_request, ref per the contract; socket stays open."""
    server = start_server()
    cookie = session_cookie(make_user("alice"))

    async def scenario():
        ws = await connect(server.ws, cookie)
        await join(ws, "lobby")
        await asyncio.wait_for(ws.send(b"\x00\x01binary"), 5)
        _error(await recv(ws), "bad_request", None)
        cases = [
            ("{not json", None, None),
            ("[1, 2]", None, None),
            ('"ping"', None, None),
            ("NaN", None, None),
            ("{}", None, None),
            ('{"type": 5}', None, None),
            ('{"type": "dance"}', "dance", None),
            ('{"type": "join"}', "join", None),
            ('{"type": "join", "room": 5}', "join", None),
            ('{"type": "join", "room": "Not A Slug"}', "join", None),
            ('{"type": "join", "room": "lobby", "since": "3"}', "join", "lobby"),
            ('{"type": "join", "room": "lobby", "since": 1.5}', "join", "lobby"),
            ('{"type": "join", "room": "lobby", "since": true}', "join", "lobby"),
            ('{"type": "join", "room": "lobby", "since": -1}', "join", "lobby"),
            ('{"type": "send", "room": "lobby", "body": 5, "client_id": "c1"}', "c1", "lobby"),
            ('{"type": "send", "room": "lobby", "client_id": "c2"}', "c2", "lobby"),
            ('{"type": "send", "room": "lobby", "body": "x", "client_id": ""}', "send", "lobby"),
            ('{"type": "send", "room": "lobby", "body": "x", "client_id": 7}', "send", "lobby"),
            ('{"type": "send", "room": "lobby", "body": "x", "client_id": "' + "k" * 65 + '"}', "send", "lobby"),
            ('{"type": "send", "room": "lobby", "body": "bad \\ud800 surrogate", "client_id": "c3"}', "c3", "lobby"),
            ('{"type": "send", "room": "lobby", "body": "", "client_id": "c4"}', "c4", "lobby"),
            ('{"type": "send", "room": "lobby", "body": " \\n\\t ", "client_id": "c5"}', "c5", "lobby"),
            ('{"type": "leave", "room": ["lobby"]}', "leave", None),
            ('{"type": "typing"}', "typing", None),
        ]
        for text, ref, room_slug in cases:
            await send_raw(ws, text)
            _error(await recv(ws), "bad_request", ref, room_slug)
        await send(ws, {"type": "ping", "extra": "ignored"})
        assert await recv(ws) == {"type": "pong"}
        await ws.close()

    async def send_raw(ws, text):
        await asyncio.wait_for(ws.send(text), 5)

    aio(scenario())


def test_room_and_message_refusals(start_server, make_user, room, aio):
    """not_found (unknown and others' private room alike), not_joined, too_long, limit, rate_limited."""
    server = start_server(
        env={"KAIWA_MAX_ROOMS_PER_CONNECTION": "2", "KAIWA_RATE_BURST": "3", "KAIWA_RATE_PER_SECOND": "0.5"}
    )
    alice, bob = make_user("alice"), make_user("bob")
    secret = Room.objects.create(slug="secret", name="Secret", private=True)
    Membership.objects.create(room=secret, user=bob)
    Room.objects.create(slug="second", name="Second")
    Room.objects.create(slug="third", name="Third")
    cookie, bob_cookie = session_cookie(alice), session_cookie(bob)

    async def scenario():
        ws = await connect(server.ws, cookie)
        await send(ws, {"type": "join", "room": "nowhere"})
        unknown = await recv(ws)
        await send(ws, {"type": "join", "room": "secret"})
        private = await recv(ws)
        _error(unknown, "not_found", "join", "nowhere")
        _error(private, "not_found", "join", "secret")
        assert unknown["message"].replace("nowhere", "X") == private["message"].replace("secret", "X")

        await send(ws, {"type": "send", "room": "lobby", "body": "hi", "client_id": "n1"})
        _error(await recv(ws), "not_joined", "n1", "lobby")
        await send(ws, {"type": "typing", "room": "lobby"})
        _error(await recv(ws), "not_joined", "typing", "lobby")

        await join(ws, "lobby")
        await join(ws, "second")
        await send(ws, {"type": "join", "room": "third"})
        _error(await recv(ws), "limit", "join", "third")
        await send(ws, {"type": "leave", "room": "second"})
        assert await recv(ws) == {"type": "left", "room": "second"}
        await join(ws, "third")

        await send(ws, {"type": "send", "room": "lobby", "body": "x" * 4001, "client_id": "long"})
        _error(await recv(ws), "too_long", "long", "lobby")
        await send(ws, {"type": "send", "room": "lobby", "body": "é" * 4000, "client_id": "max"})
        ack, _ = await recv_until(ws, lambda f: f["type"] in ("ack", "error"))
        assert ack["type"] == "ack" and ack["client_id"] == "max"

        for i in range(2):
            await send(ws, {"type": "send", "room": "lobby", "body": f"m{i}", "client_id": f"r{i}"})
            ok, _ = await recv_until(ws, lambda f: f["type"] in ("ack", "error"))
            assert ok["type"] == "ack", ok
        await send(ws, {"type": "send", "room": "lobby", "body": "one too many", "client_id": "r9"})
        limited, _ = await recv_until(ws, lambda f: f["type"] in ("ack", "error"))
        _error(limited, "rate_limited", "r9", "lobby")
        assert 0 < limited["retry_after_ms"] <= 2000
        # The limit is per user across connections and processes, not per socket.
        other = await connect(server.ws, cookie)
        await join(other, "lobby")
        await send(other, {"type": "send", "room": "lobby", "body": "again", "client_id": "r10"})
        limited, _ = await recv_until(other, lambda f: f["type"] in ("ack", "error"))
        _error(limited, "rate_limited", "r10", "lobby")
        # Bob is not affected.
        await still_serving(server.ws, bob_cookie)
        await ws.close()
        await other.close()

    aio(scenario())


def test_oversized_frame_closes_1009_and_others_are_served(start_server, make_user, room, aio):
    """A 1 MB frame closes that connection with 1009 (the app's limit, whatever uvicorn allows)."""
    server = start_server()
    cookie, other = session_cookie(make_user("alice")), session_cookie(make_user("bob"))

    async def scenario():
        ws = await connect(server.ws, cookie, max_size=None)
        await join(ws, "lobby")
        await asyncio.wait_for(ws.send(json.dumps({"type": "send", "room": "lobby", "body": "x" * 1_000_000})), 10)
        assert await close_code(ws) == 1009
        big_binary = await connect(server.ws, cookie)
        await asyncio.wait_for(big_binary.send(b"x" * 70_000), 10)
        assert await close_code(big_binary) == 1009
        await still_serving(server.ws, other)

    aio(scenario())


def test_frame_flood_closes_the_flooder_only(start_server, make_user, room, aio):
    """10,000 frames per second from one client: closed with 1008 (or 1013 if its replies pile up)."""
    server = start_server()
    cookie, other = session_cookie(make_user("alice")), session_cookie(make_user("bob"))

    async def scenario():
        ws = await connect(server.ws, cookie)
        ping = json.dumps({"type": "ping"})

        async def flood():
            try:
                for _ in range(10_000):
                    await ws.send(ping)
            except websockets.ConnectionClosed:
                pass

        await asyncio.wait_for(flood(), 20)
        assert await close_code(ws) in (1008, 1013)
        await still_serving(server.ws, other)

    aio(scenario())


def test_bad_frame_flood_closes_1008(start_server, make_user, room, aio):
    """More bad frames than KAIWA_BAD_FRAMES_PER_MINUTE: each answered, then the connection closes 1008."""
    server = start_server(env={"KAIWA_BAD_FRAMES_PER_MINUTE": "5"})
    cookie, other = session_cookie(make_user("alice")), session_cookie(make_user("bob"))

    async def scenario():
        ws = await connect(server.ws, cookie)
        for _ in range(5):
            await asyncio.wait_for(ws.send("nonsense"), 5)
            _error(await recv(ws), "bad_request", None)
        await asyncio.wait_for(ws.send("nonsense"), 5)
        assert await close_code(ws) == 1008
        await still_serving(server.ws, other)

    aio(scenario())


def test_origin_check(start_server, make_user, room, aio):
    """Foreign Origin -> HTTP 403 at the handshake; same origin, trusted origin and no Origin are accepted."""
    server = start_server(env={"CSRF_TRUSTED_ORIGINS": "https://chat.example.com"})
    cookie = session_cookie(make_user("alice"))

    async def scenario():
        for origin in (
            "https://evil.example",
            f"http://127.0.0.1:{server.port + 1}",
            f"https://127.0.0.1:{server.port}",
            f"http://localhost.evil:{server.port}",
            "null",
        ):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await connect(server.ws, cookie, origin=origin)
            assert refused.value.response.status_code == 403, origin
        accepted: list[str | None] = [f"http://127.0.0.1:{server.port}", "https://chat.example.com", None]
        for good in accepted:
            ws = await connect(server.ws, cookie, origin=good)
            await join(ws, "lobby")
            await ws.close()

    aio(scenario())


def test_no_or_bad_session_closes_4401_without_data(start_server, make_user, room, aio):
    """No cookie, or an unknown session key: accepted, then closed 4401 'unauthenticated' before any frame."""
    server = start_server()
    make_user("alice")

    async def scenario():
        cookies: list[str | None] = [None, "not-a-real-session-key-000000000000"]
        for cookie in cookies:
            ws = await connect(server.ws, cookie)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4401
            assert closed.value.rcvd.reason == "unauthenticated"

    aio(scenario())


def test_ping_leave_typing(start_server, make_user, room, aio):
    """ping -> pong; typing reaches other users only, throttled; leave -> left, then not_joined."""
    server = start_server(env={"KAIWA_TYPING_INTERVAL_MS": "60000"})
    alice, bob = make_user("alice"), make_user("bob")
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)

    async def scenario():
        a = await connect(server.ws, a_cookie)
        a2 = await connect(server.ws, a_cookie)
        b = await connect(server.ws, b_cookie)
        for ws in (a, a2, b):
            await join(ws, "lobby")
        await send(a, {"type": "typing", "room": "lobby"})
        await send(a, {"type": "typing", "room": "lobby"})  # coalesced
        typing, _ = await recv_until(b, lambda f: f["type"] == "typing")
        assert typing == {"type": "typing", "room": "lobby", "user": {"id": alice.pk, "username": "alice"}}
        # A marker message: whatever arrives before it on b and a2 is checked.
        await send(b, {"type": "send", "room": "lobby", "body": "marker", "client_id": "mk"})
        _, before_b = await recv_until(b, lambda f: f["type"] == "message")
        _, before_a2 = await recv_until(a2, lambda f: f["type"] == "message")
        assert not [f for f in before_b if f["type"] == "typing"], before_b
        assert not [f for f in before_a2 if f["type"] == "typing"], before_a2
        await send(a, {"type": "ping"})
        await recv_until(a, lambda f: f["type"] == "pong")
        await send(a, {"type": "leave", "room": "lobby"})
        left, _ = await recv_until(a, lambda f: f["type"] == "left")
        assert left == {"type": "left", "room": "lobby"}
        await send(a, {"type": "send", "room": "lobby", "body": "gone", "client_id": "g"})
        err, _ = await recv_until(a, lambda f: f["type"] == "error")
        _error(err, "not_joined", "g", "lobby")
        for ws in (a, a2, b):
            await ws.close()

    aio(scenario())
