"""Sessions that end while a socket is open close it with 4401, on every process."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client as DjangoClient

from tests.wsapp.conftest import Peer, close_code, connect, join, recv_until, send, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def _logged_in(user):
    client = DjangoClient()
    assert client.login(username=user.get_username(), password="correct horse battery")
    return client, client.cookies[settings.SESSION_COOKIE_NAME].value


def test_logout_closes_the_socket_with_4401_on_every_process(start_server, make_user, room, aio):
    """POST /accounts/logout/ with the socket's session closes it (4401) on both processes; others stay."""
    s1, s2 = start_server(), start_server()
    alice, bob = make_user("alice"), make_user("bob")
    browser, cookie = _logged_in(alice)
    bob_cookie = session_cookie(bob)

    async def open_sockets():
        a1 = await connect(s1.ws, cookie)
        a2 = await connect(s2.ws, cookie)
        b = await connect(s2.ws, bob_cookie)
        for ws in (a1, a2, b):
            await join(ws, "lobby")
        return a1, a2, b

    a1, a2, b = aio(open_sockets())
    response = browser.post("/accounts/logout/")
    assert response.status_code in (200, 302)

    async def after_logout():
        assert await close_code(a1, 5) == 4401
        assert await close_code(a2, 5) == 4401
        await send(b, {"type": "ping"})
        await recv_until(b, lambda f: f["type"] == "pong")
        # The stolen cookie no longer opens a socket.
        again = await connect(s1.ws, cookie)
        assert await close_code(again, 5) == 4401
        await b.close()

    aio(after_logout())


def test_password_change_and_deactivation_close_sockets(start_server, make_user, room, aio):
    """A password change (old sessions' hash stops matching) or is_active=False closes with 4401."""
    server = start_server()
    alice, bob = make_user("alice"), make_user("bob")
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)
    a = aio(connect(server.ws, a_cookie))
    b = aio(connect(server.ws, b_cookie))
    # No wait for the server to register the sockets first: a revocation that
    # lands between the handshake's session check and the registration must
    # still close them (the hub re-checks such sockets).
    alice.set_password("a new long passphrase")
    alice.save()
    bob.is_active = False
    bob.save()
    # Generous bounds: a loaded 2-core machine can delay the 0.5 s re-check by seconds.
    assert aio(close_code(a, 30)) == 4401
    assert aio(close_code(b, 30)) == 4401


def test_periodic_recheck_catches_deleted_and_expired_sessions(start_server, make_user, room, aio):
    """Sessions deleted or expired behind Django's back (no signal) are caught by the periodic re-check."""
    server = start_server(env={"KAIWA_SESSION_RECHECK_SECONDS": "0.5"})
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    deleted, expired, fine = session_cookie(alice), session_cookie(bob), session_cookie(carol)
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.core.cache import cache
    from django.utils import timezone

    peers = [aio(Peer.open(server.ws, cookie)) for cookie in (deleted, expired, fine)]
    for peer in peers:
        aio(peer.join("lobby"))
    Session.objects.filter(session_key=deleted)._raw_delete(Session.objects.db)
    Session.objects.filter(session_key=expired).update(expire_date=timezone.now() - timedelta(seconds=1))
    cache.clear()  # the cached_db copies
    assert aio(peers[0].wait_closed(5)) == 4401
    assert aio(peers[1].wait_closed(5)) == 4401
    pongs = aio(_ping(peers[2]))
    assert pongs == [{"type": "pong"}]


async def _ping(peer: Peer) -> list[dict]:
    await peer.send({"type": "ping"})
    return await peer.wait_for(lambda f: f["type"] == "pong")


def test_revocation_published_while_pubsub_was_down_is_caught_on_reconnect(
    start_server, make_user, room, aio, redis_server_process
):
    """A password change while Redis is down publishes nothing; the reconnect re-checks every socket at once."""
    server = start_server()  # periodic re-check: 60 s, far beyond this test's bounds
    alice, bob = make_user("alice"), make_user("bob")
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)
    a, b = aio(Peer.open(server.ws, a_cookie)), aio(Peer.open(server.ws, b_cookie))
    aio(a.join("lobby"))
    aio(b.join("lobby"))
    redis_server_process.stop()
    alice.set_password("a new long passphrase")
    alice.save()  # the signal cannot publish: logged, not raised
    redis_server_process.start()
    assert aio(a.wait_closed(30)) == 4401
    assert aio(_ping(b)) == [{"type": "pong"}]
    server.wait_for_line("re-checking", timeout=5)
