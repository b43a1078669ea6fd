"""Sessions that end while a socket is open close it with 4401, on every process."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client as DjangoClient

from tests.wsapp.conftest import close_code, connect, join, recv_until, send, session_cookie

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
    alice.set_password("a new long passphrase")
    alice.save()
    bob.is_active = False
    bob.save()
    assert aio(close_code(a, 5)) == 4401
    assert aio(close_code(b, 5)) == 4401


def test_periodic_recheck_catches_a_session_deleted_without_signal(start_server, make_user, room, aio):
    """A session removed behind Django's back (no signal) is caught by the periodic re-check."""
    server = start_server(env={"KAIWA_SESSION_RECHECK_SECONDS": "0.5"})
    alice = make_user("alice")
    cookie = session_cookie(alice)
    from django.contrib.sessions.models import Session
    from django.core.cache import cache

    ws = aio(connect(server.ws, cookie))
    aio(join(ws, "lobby"))
    Session.objects.filter(session_key=cookie)._raw_delete(Session.objects.db)
    cache.clear()
    assert aio(close_code(ws, 5)) == 4401
