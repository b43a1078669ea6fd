"""The handshake's checks: the Origin rule (pure function) and the session check (cached in Redis, revocable)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import redis as redis_sync
import websockets
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client as DjangoClient
from django.test import override_settings
from django.utils import timezone

from chat import authcache
from tests.conftest import ROOT, server_env
from tests.wsapp.conftest import PASSWORD, TIMEOUT, connect, recv, send
from wsapp import sessioncheck
from wsapp.auth import origin_allowed, session_user


def scope(origin: str | None, host: str = "chat.example.com", scheme: str = "wss", **extra: str) -> dict:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    return {"type": "websocket", "scheme": scheme, "headers": headers}


@override_settings(ALLOWED_HOSTS=["chat.example.com", "localhost"], CSRF_TRUSTED_ORIGINS=[])
@pytest.mark.parametrize(
    ("origin", "host", "scheme", "allowed"),
    [
        (None, "chat.example.com", "wss", True),
        ("https://chat.example.com", "chat.example.com", "wss", True),
        ("https://chat.example.com:443", "chat.example.com", "wss", True),
        ("https://CHAT.example.com", "chat.example.com", "wss", True),
        ("http://chat.example.com", "chat.example.com", "wss", False),  # scheme differs
        ("https://chat.example.com:8443", "chat.example.com", "wss", False),  # port differs
        ("https://evil.example.com", "chat.example.com", "wss", False),
        ("https://chat.example.com.evil.net", "chat.example.com", "wss", False),
        ("null", "chat.example.com", "wss", False),
        ("https://chat.example.com/path", "chat.example.com", "wss", False),
        ("http://localhost:8000", "localhost:8000", "ws", True),
        ("http://localhost:8001", "localhost:8000", "ws", False),
        ("https://evil.net", "evil.net", "wss", False),  # Host not in ALLOWED_HOSTS
    ],
)
def test_origin_must_match_the_request_exactly(origin, host, scheme, allowed):
    """Scheme, host and port are compared exactly; the Host itself must be an allowed host."""
    assert origin_allowed(scope(origin, host, scheme)) is allowed


@override_settings(
    ALLOWED_HOSTS=["chat.example.com"],
    CSRF_TRUSTED_ORIGINS=["https://app.example.org", "https://*.partner.net"],
)
def test_csrf_trusted_origins_are_trusted_like_django_does():
    """Exact trusted origins and ``scheme://*.domain`` wildcards are accepted, nothing looser."""
    assert origin_allowed(scope("https://app.example.org"))
    assert origin_allowed(scope("https://a.partner.net"))
    assert not origin_allowed(scope("http://a.partner.net"))
    assert not origin_allowed(scope("https://app.example.org:444"))
    assert not origin_allowed(scope("https://partner.net.evil"))


@override_settings(ALLOWED_HOSTS=["chat.example.com"], SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_behind_a_tls_proxy_the_forwarded_scheme_counts():
    """With SECURE_PROXY_SSL_HEADER, ws:// from the proxy with X-Forwarded-Proto: https matches https origins."""
    assert origin_allowed(scope("https://chat.example.com", scheme="ws", **{"x-forwarded-proto": "https"}))
    assert not origin_allowed(scope("https://chat.example.com", scheme="ws"))


# -- the session check: cached in Redis, revoked with the session ------------------------------


def _session_of(user: Any) -> tuple[DjangoClient, str]:
    client = DjangoClient()
    assert client.login(username=user.get_username(), password=PASSWORD)
    return client, client.cookies[settings.SESSION_COOKIE_NAME].value


def _check(session_key: str | None) -> Any:
    async def run() -> Any:
        async with asyncio.timeout(TIMEOUT):
            return await session_user(session_key)

    return asyncio.run(run())


def _record_keys() -> list[bytes]:
    client = redis_sync.Redis.from_url(settings.REDIS_URL)
    try:
        return [k if isinstance(k, bytes) else k.encode() for k in client.keys(authcache.KEY_PREFIX + "s:*")]
    finally:
        client.close()


@pytest.mark.django_db(transaction=True)
def test_a_checked_session_is_answered_from_redis_without_the_database(make_user, django_db_blocker):
    """The second check of a session reads one Redis record: it works with database access blocked."""
    alice = make_user("alice", email="alice@example.com", is_staff=True)
    _, key = _session_of(alice)
    first = _check(key)
    assert first.pk == alice.pk
    assert len(_record_keys()) == 1
    with django_db_blocker.block():
        cached = _check(key)
    assert (cached.pk, cached.username, cached.email, cached.is_staff) == (alice.pk, "alice", "alice@example.com", True)
    assert "password" in cached.get_deferred_fields()  # the password hash never goes to Redis
    assert key.encode() not in b"".join(_record_keys())  # nor the session key itself


@pytest.mark.django_db(transaction=True)
def test_checks_of_one_moment_cache_their_sessions_in_one_pipeline(make_user, monkeypatch):
    """Uncached sessions checked together (a reconnect storm) are all cached, their writes sent as one pipeline."""
    keys = [_session_of(make_user(f"user{i}"))[1] for i in range(12)]
    # The database's answers, ready at once: every check reaches its cache write in the same loop iteration.
    answers = {key: sessioncheck.check_in_db(key) for key in keys}

    async def from_db(state: Any, session_key: str) -> tuple[Any, float]:
        return answers[session_key]

    batches: list[int] = []
    execute = sessioncheck.ScriptBatch._execute

    async def counted(self: Any, calls: list[Any]) -> list[Any]:
        batches.append(len(calls))
        return await execute(self, calls)

    monkeypatch.setattr(sessioncheck, "_from_db", from_db)
    monkeypatch.setattr(sessioncheck.ScriptBatch, "_execute", counted)

    async def storm() -> list[Any]:
        async with asyncio.timeout(TIMEOUT):
            return await asyncio.gather(*(session_user(key) for key in keys))

    users = asyncio.run(storm())
    assert sorted(u.username for u in users) == sorted(f"user{i}" for i in range(12))
    assert len(_record_keys()) == 12
    assert set(batches) == {12}  # (twice when Redis had to load the script first)


@pytest.mark.django_db(transaction=True)
def test_no_cookie_an_unknown_key_or_an_expired_session_is_refused_and_not_cached(make_user):
    """Django's rules still decide: no key, a key Django never issued, an expired row: None, nothing cached."""
    alice = make_user("alice")
    _, key = _session_of(alice)
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    assert _check(None) is None
    assert _check("nosuchsessionkey0123456789abcdef") is None
    assert _check(key) is None
    assert _record_keys() == []


@pytest.mark.django_db(transaction=True)
def test_the_record_never_outlives_the_session(make_user):
    """A session that ends in 30 s is cached for at most 30 s, whatever KAIWA_AUTH_CACHE_SECONDS says."""
    alice = make_user("alice")
    _, key = _session_of(alice)
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() + timedelta(seconds=30))
    assert _check(key).pk == alice.pk
    client = redis_sync.Redis.from_url(settings.REDIS_URL)
    try:
        ttl = client.ttl(_record_keys()[0])
    finally:
        client.close()
    assert 0 < ttl <= 30


@pytest.mark.django_db(transaction=True)
def test_logout_ends_a_cached_session(make_user):
    """POST /accounts/logout/ drops the record: the same cookie is refused at the next check."""
    alice = make_user("alice")
    browser, key = _session_of(alice)
    assert _check(key).pk == alice.pk
    assert browser.post("/accounts/logout/").status_code in (200, 302)
    assert _check(key) is None


@pytest.mark.django_db(transaction=True)
def test_a_password_change_ends_every_cached_session_of_the_user(make_user):
    """set_password + save drops the records of all the user's sessions; another user's stays."""
    alice, bob = make_user("alice"), make_user("bob")
    _, a1 = _session_of(alice)
    _, a2 = _session_of(alice)
    _, b1 = _session_of(bob)
    for key in (a1, a2, b1):
        assert _check(key) is not None
    alice.set_password("a whole new password")
    alice.save()
    assert _check(a1) is None
    assert _check(a2) is None
    assert _check(b1).pk == bob.pk


@pytest.mark.django_db(transaction=True)
def test_deactivating_or_deleting_the_user_ends_the_cached_session(make_user):
    """is_active=False (saved) and a deleted user both end a session answered from the cache before."""
    alice, bob = make_user("alice"), make_user("bob")
    _, a = _session_of(alice)
    _, b = _session_of(bob)
    assert _check(a).pk == alice.pk
    assert _check(b).pk == bob.pk
    alice.is_active = False
    alice.save()
    assert _check(a) is None
    bob.delete()
    assert _check(b) is None


@pytest.mark.django_db(transaction=True)
def test_a_check_that_read_the_database_before_a_revocation_does_not_cache_it(make_user):
    """The write after a database check is refused when a revocation happened since the check began."""
    alice = make_user("alice")
    _, key = _session_of(alice)

    async def race() -> int:
        state = await sessioncheck._state()
        _, rev = await sessioncheck._cached(state, authcache.session_record_key(key))
        user, expires = await asyncio.to_thread(sessioncheck.check_in_db, key)  # the old, valid answer
        assert user is not None
        await asyncio.to_thread(_change_password, alice)  # revoked while that answer was on its way
        async with asyncio.timeout(TIMEOUT):
            return int(
                await state.writes.call(
                    state.write,
                    [authcache.REV_KEY, authcache.session_record_key(key), authcache.user_set_key(alice.pk)],
                    [(rev or b"0").decode(), sessioncheck.encode_record(user, expires), 60],
                )
            )

    assert asyncio.run(race()) == 0
    assert _record_keys() == []
    assert _check(key) is None


def _change_password(user: Any) -> None:
    user.set_password("changed meanwhile")
    user.save()


@pytest.mark.django_db(transaction=True)
def test_a_session_signed_under_a_fallback_secret_is_trusted_only_while_the_fallback_is(make_user):
    """SECRET_KEY rotated with the old key in SECRET_KEY_FALLBACKS: valid; fallback dropped: refused, cache or not."""
    old = settings.SECRET_KEY
    alice = make_user("alice")
    _, key = _session_of(alice)
    with override_settings(SECRET_KEY="a-brand-new-secret-" + "y" * 40, SECRET_KEY_FALLBACKS=[old]):
        assert _check(key).pk == alice.pk
        assert _check(key).pk == alice.pk  # from the cache
    with override_settings(SECRET_KEY="a-brand-new-secret-" + "y" * 40, SECRET_KEY_FALLBACKS=[]):
        assert _check(key) is None


@pytest.mark.django_db(transaction=True)
def test_during_a_database_outage_a_cached_session_still_connects(make_user, start_server, aio, tmp_path):
    """Database cannot be opened: a session checked before connects; an uncached one is closed 1013 within a second.

    The refused socket gets the documented reason, the log one WARNING line and
    no traceback (the ``start_server`` fixture fails on any traceback).
    """
    alice, bob = make_user("alice"), make_user("bob")
    _, cached = _session_of(alice)
    _, uncached = _session_of(bob)
    assert _check(cached).pk == alice.pk  # cached in the suite's Redis, which the server shares
    broken = tmp_path / "no-such-dir" / "db.sqlite3"
    server = start_server(env={"DATABASE_URL": f"sqlite:///{broken}", "KAIWA_WORKER_EMBEDDED": "0"})

    async def outage() -> None:
        ws = await connect(server.ws, cached)
        await send(ws, {"type": "ping"})
        assert (await recv(ws))["type"] == "pong"
        for _ in range(2):  # the second one is refused at once, without asking the database again
            started = time.monotonic()
            refused = await connect(server.ws, uncached)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(refused.recv(), TIMEOUT)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "try again later: database unavailable")
            assert time.monotonic() - started < 1.0
        await send(ws, {"type": "ping"})
        assert (await recv(ws))["type"] == "pong"
        # no room access remembered by this fresh process: the join needs the database
        started = time.monotonic()
        await send(ws, {"type": "join", "room": "lobby"})
        answer = await recv(ws)
        assert (answer["type"], answer["code"], answer["room"]) == ("error", "unavailable", "lobby"), answer
        assert time.monotonic() - started < 1.0

    aio(outage())
    warnings = [line for line in server.lines if "closing 1013" in line]
    assert len(warnings) == 2 and all("WARNING" in line for line in warnings), "".join(server.lines)


# Runs in a child process whose DATABASE_URL is broken: prints what the check of
# an uncached session answered and how long it took (os._exit: a thread still
# stuck on the silent database must not hold the process open).
_OUTAGE_PROBE = """
import asyncio, os, sys, time
import django
django.setup()
from wsapp.auth import AuthUnavailable, session_user

async def probe():
    for _ in range(2):
        t0 = time.monotonic()
        try:
            user = await session_user(sys.argv[1])
            print("user", user, flush=True)
        except AuthUnavailable:
            print(f"unavailable {time.monotonic() - t0:.3f}", flush=True)

asyncio.run(probe())
os._exit(0)
"""


def _probe_outage(database_url: str, session_key: str) -> list[str]:
    env = server_env(DATABASE_URL=database_url, KAIWA_AUTH_DB_TIMEOUT_SECONDS="0.5")
    done = subprocess.run(
        [sys.executable, "-c", _OUTAGE_PROBE, session_key],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout.split()


def test_an_uncached_session_gets_a_clear_answer_within_a_second_when_the_database_cannot_be_opened(tmp_path):
    """SQLite file that cannot be opened: AuthUnavailable at once, then at once again (no retry storm on the DB)."""
    out = _probe_outage(f"sqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite3'}", "a" * 32)
    assert out[0::2] == ["unavailable", "unavailable"]
    assert all(float(t) < 1.0 for t in out[1::2])


def test_an_uncached_session_gets_a_clear_answer_within_a_second_when_the_database_does_not_answer():
    """A PostgreSQL address that accepts TCP and never answers: AuthUnavailable within a second, twice."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        out = _probe_outage(f"postgres://nobody@127.0.0.1:{port}/kaiwa", "b" * 32)
    assert out[0::2] == ["unavailable", "unavailable"]
    assert all(float(t) < 1.0 for t in out[1::2])


def test_a_check_starved_with_its_event_loop_is_waited_for_not_called_an_outage(monkeypatch, settings):
    """The loop blocked past the limit while a check runs (a connect storm holds the GIL): once the loop runs
    again the check gets a whole limit of responsive time, and its answer is used; no "database unavailable"."""
    settings.KAIWA_AUTH_DB_TIMEOUT_SECONDS = 0.4
    started, release = threading.Event(), threading.Event()

    def slow_check(session_key: str) -> tuple[Any, float]:
        started.set()
        release.wait(TIMEOUT)
        return None, 0.0

    monkeypatch.setattr(sessioncheck, "check_in_db", slow_check)

    async def starved() -> Any:
        async with asyncio.timeout(TIMEOUT):
            check = asyncio.ensure_future(session_user("s" * 32))
            await asyncio.to_thread(started.wait, TIMEOUT)
            time.sleep(3 * 0.4)  # noqa: ASYNC251 - the load under test: a loop that runs nothing else
            await asyncio.sleep(0.4 / 2)  # the watchdog wakes late, then runs on time
            release.set()
            return await check

    assert asyncio.run(starved()) is None


@pytest.mark.django_db(transaction=True)
def test_a_renamed_user_is_not_answered_with_the_old_name(make_user):
    """Any save of the user drops the cached record: the next check returns the new username."""
    alice = make_user("alice")
    _, key = _session_of(alice)
    assert _check(key).username == "alice"
    alice.username = "alicia"
    alice.save()
    assert _check(key).username == "alicia"
