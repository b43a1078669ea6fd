"""The login view: throttling (429 with a message), switching accounts, and the sign-up throttle."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis as redis_sync
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

PASSWORD = "correct horse battery"


def fail_logins(client: Client, username: str, times: int, **extra: Any) -> list[int]:
    return [
        client.post("/accounts/login/", {"username": username, "password": "wrong"}, **extra).status_code
        for _ in range(times)
    ]


def session_username(client: Client) -> str | None:
    user_id = client.session.get("_auth_user_id")
    if user_id is None:
        return None
    return str(get_user_model().objects.get(pk=user_id).username)


@override_settings(KAIWA_LOGIN_FAILURES=3)
def test_login_refused_with_429_after_the_failures_even_with_the_right_password(client, alice):
    """After KAIWA_LOGIN_FAILURES wrong passwords the right one gets 429, a message and Retry-After, no login."""
    assert fail_logins(client, "alice", 3) == [200, 200, 200]
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed login attempts for this account" in page
    assert "Wait 15 minutes" in page
    assert 0 < int(response["Retry-After"]) <= 900
    assert session_username(client) is None


@override_settings(KAIWA_LOGIN_FAILURES=3)
def test_login_refusal_is_per_account_and_per_address(client, make_user):
    """Failures against one account lock that account from every address; failures from one address lock it."""
    make_user("alice", password=PASSWORD)
    make_user("bob", password=PASSWORD)
    fail_logins(client, "alice", 3, REMOTE_ADDR="10.0.0.1")
    # The account is locked from another address too.
    other = Client(REMOTE_ADDR="10.0.0.2")
    assert other.post("/accounts/login/", {"username": "alice", "password": PASSWORD}).status_code == 429
    # The first address is locked for every account, with its own message.
    response = client.post("/accounts/login/", {"username": "bob", "password": PASSWORD}, REMOTE_ADDR="10.0.0.1")
    assert response.status_code == 429
    assert "from your network address" in response.content.decode()
    # bob from elsewhere is fine.
    assert other.post("/accounts/login/", {"username": "bob", "password": PASSWORD}).status_code == 302


@override_settings(KAIWA_LOGIN_FAILURES=3, KAIWA_LOGIN_WINDOW_SECONDS=1)
def test_login_allowed_again_when_the_window_passes(client, alice, redis_server_process):
    """The refusal lasts only as long as the window: once its keys expire, the right password logs in."""
    fail_logins(client, "alice", 3)
    assert client.post("/accounts/login/", {"username": "alice", "password": PASSWORD}).status_code == 429
    # Expiry is Redis's: wait for the window's keys to be gone rather than sleeping.
    r = redis_sync.Redis.from_url(redis_server_process.url)
    try:
        deadline_polls = 400
        while r.keys("*throttle*") and deadline_polls:
            deadline_polls -= 1
            # Polling Redis's own expiry of the 1 s window, not synchronising with the server.
            time.sleep(0.01)
        assert not r.keys("*throttle*"), "the throttle window never expired"
    finally:
        r.close()
    assert client.post("/accounts/login/", {"username": "alice", "password": PASSWORD}).status_code == 302


@override_settings(KAIWA_LOGIN_FAILURES=3)
def test_success_clears_the_account_count_but_not_the_address_count(client, make_user):
    """A right password resets the account's failures; an address's failures stay counted."""
    make_user("alice", password=PASSWORD)
    make_user("bob", password=PASSWORD)
    fail_logins(client, "alice", 2)
    assert client.post("/accounts/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    client.post("/accounts/logout/")
    # The account count restarted: two more failures from another address do not lock alice.
    elsewhere = Client(REMOTE_ADDR="10.9.9.9")
    fail_logins(elsewhere, "alice", 2)
    assert elsewhere.post("/accounts/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    # The first address still holds its two failures: one more locks it.
    fail_logins(client, "nobody", 1)
    assert client.post("/accounts/login/", {"username": "bob", "password": PASSWORD}).status_code == 429


@override_settings(KAIWA_LOGIN_FAILURES=3)
def test_admin_login_is_throttled_too(client, make_user):
    """The admin's login page counts failures and refuses a locked account (the throttle sits in authentication)."""
    make_user("root", password=PASSWORD, is_staff=True, is_superuser=True)
    for _ in range(3):
        client.post("/admin/login/", {"username": "root", "password": "wrong"})
    response = client.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD})
    assert response.status_code == 200  # the admin re-renders its form
    assert session_username(client) is None
    assert client.post("/accounts/login/", {"username": "root", "password": PASSWORD}).status_code == 429


@override_settings(KAIWA_LOGIN_FAILURES=2, KAIWA_TRUSTED_PROXY_HOPS=1)
def test_trusted_proxy_hops_take_the_address_from_x_forwarded_for(client, alice):
    """With one trusted proxy, the rightmost X-Forwarded-For entry is the address; a forged left part is ignored."""
    fail_logins(client, "ghost", 2, HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.7")
    locked = client.post(
        "/accounts/login/", {"username": "alice", "password": PASSWORD}, HTTP_X_FORWARDED_FOR="9.9.9.9, 203.0.113.7"
    )
    assert locked.status_code == 429
    fine = client.post(
        "/accounts/login/", {"username": "alice", "password": PASSWORD}, HTTP_X_FORWARDED_FOR="203.0.113.8"
    )
    assert fine.status_code == 302


@override_settings(KAIWA_LOGIN_FAILURES=2)
def test_x_forwarded_for_is_ignored_by_default(client, alice):
    """Without KAIWA_TRUSTED_PROXY_HOPS a client cannot dodge the address count by sending X-Forwarded-For."""
    client.post("/accounts/login/", {"username": "ghost", "password": "x"}, HTTP_X_FORWARDED_FOR="1.1.1.1")
    client.post("/accounts/login/", {"username": "ghost2", "password": "x"}, HTTP_X_FORWARDED_FOR="2.2.2.2")
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": PASSWORD}, HTTP_X_FORWARDED_FOR="3.3.3.3"
    )
    assert response.status_code == 429


@override_settings(KAIWA_LOGIN_FAILURES=2)
def test_ipv6_addresses_count_per_64(client, alice):
    """Two addresses in one IPv6 /64 share a count; another /64 does not."""
    fail_logins(client, "ghost", 2, REMOTE_ADDR="2001:db8:1:2::1")
    near = client.post(
        "/accounts/login/", {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="2001:db8:1:2:ffff::9"
    )
    assert near.status_code == 429
    far = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="2001:db8:1:3::1")
    assert far.status_code == 302


def test_login_while_logged_in_switches_to_the_account_whose_password_was_given(client, make_user):
    """A browser holding alice's session that submits bob's password ends up logged in as bob."""
    alice = make_user("alice", password=PASSWORD)
    make_user("bob", password=PASSWORD)
    client.force_login(alice)
    old_key = client.session.session_key
    response = client.post("/accounts/login/", {"username": "bob", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    assert session_username(client) == "bob"
    assert client.session.session_key != old_key


def test_login_while_logged_in_with_a_wrong_password_keeps_the_session(client_alice):
    """A wrong password while logged in shows the error and leaves the current session alone."""
    response = client_alice.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()
    assert session_username(client_alice) == "alice"


def test_login_page_get_while_logged_in_redirects(client_alice):
    """Opening the login page while logged in still goes to the rooms (or ?next=)."""
    assert client_alice.get("/accounts/login/")["Location"] == "/"
    assert client_alice.get("/accounts/login/?next=/rooms/x/")["Location"] == "/rooms/x/"


@override_settings(KAIWA_SIGNUP_PER_ADDRESS=2)
def test_signup_is_throttled_per_address(client):
    """Past KAIWA_SIGNUP_PER_ADDRESS sign-up posts from one address, the next gets 429 with a message; others pass."""
    for name in ("one", "two"):
        client.post("/accounts/signup/", {"username": name, "password": PASSWORD, "password_confirm": PASSWORD})
        client.post("/accounts/logout/")
    response = client.post(
        "/accounts/signup/", {"username": "three", "password": PASSWORD, "password_confirm": PASSWORD}
    )
    assert response.status_code == 429
    assert "Too many sign-ups from your network address" in response.content.decode()
    assert int(response["Retry-After"]) > 0
    assert not get_user_model().objects.filter(username="three").exists()
    other = Client(REMOTE_ADDR="10.1.1.1")
    ok = other.post("/accounts/signup/", {"username": "three", "password": PASSWORD, "password_confirm": PASSWORD})
    assert ok.status_code == 302
    # Reading the page is never throttled.
    assert client.get("/accounts/signup/").status_code == 200
