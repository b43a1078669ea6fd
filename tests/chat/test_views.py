"""The HTML pages: auth, room list, room page, members page, error pages, security headers."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.template.loader import render_to_string
from django.test import Client, override_settings

from chat import services
from chat.models import Membership, Room
from chat.views import avatar_colour
from tests.chat.factories import add_messages

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

PASSWORD = "correct horse battery"


def html_of(response) -> str:
    return response.content.decode()


def assert_strict_csp_page(response) -> None:
    """The page carries the CSP header and nothing the CSP would block."""
    assert "script-src 'self'" in response["Content-Security-Policy"]
    page = html_of(response)
    # A JSON data block (json_script) is not run; any other inline script would be.
    assert not re.search(r'<script(?![^>]*\b(?:src=|type="application/json"))', page), "inline <script> found"
    assert " style=" not in page and "<style" not in page, "inline style found"
    assert "//cdn" not in page and "https://" not in page, "external resource found"


# -- login required ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/rooms/lobby/", "/rooms/lobby/members/"])
def test_pages_require_login(client, alice, path):
    """Anonymous visitors are sent to the login page with ?next=."""
    services.room_create(name="Lobby", creator=alice)
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


# -- auth pages -----------------------------------------------------------------------


def test_login_page_renders_and_logs_in(client, alice):
    """The login page renders accessibly and a correct password logs in and goes to the rooms."""
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert_strict_csp_page(page)
    assert 'autocomplete="current-password"' in html_of(page)
    assert 'href="/accounts/signup/"' in html_of(page)
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_login_wrong_password_shows_an_error(client, alice):
    """A wrong password re-renders the form with an error, not logged in."""
    response = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "correct username and password" in html_of(response)
    assert client.get("/").status_code == 302


def test_login_honours_next(client, alice):
    """After logging in from a protected page, the user lands back on it."""
    services.room_create(name="Lobby", creator=alice)
    response = client.post(
        "/accounts/login/?next=/rooms/lobby/", {"username": "alice", "password": PASSWORD, "next": "/rooms/lobby/"}
    )
    assert response["Location"] == "/rooms/lobby/"


def test_signup_creates_the_account_and_logs_in(client):
    """Signing up creates the account, logs in, and lands on the room list."""
    page = client.get("/accounts/signup/")
    assert page.status_code == 200
    assert_strict_csp_page(page)
    response = client.post(
        "/accounts/signup/", {"username": "newbie", "password": PASSWORD, "password_confirm": PASSWORD}
    )
    assert response.status_code == 302 and response["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200
    assert "newbie" in html_of(home)
    assert get_user_model().objects.get(username="newbie").check_password(PASSWORD)


def test_signup_redirects_to_a_safe_next_only(client):
    """next is followed when it is on this site, ignored when it points elsewhere."""
    response = client.post(
        "/accounts/signup/",
        {"username": "one", "password": PASSWORD, "password_confirm": PASSWORD, "next": "https://evil.example/"},
    )
    assert response["Location"] == "/"
    client.post("/accounts/logout/")
    response = client.post(
        "/accounts/signup/",
        {"username": "two", "password": PASSWORD, "password_confirm": PASSWORD, "next": "/rooms/x/"},
    )
    assert response["Location"] == "/rooms/x/"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"username": "bob", "password": PASSWORD, "password_confirm": "other"}, "The two passwords differ"),
        ({"username": "bob", "password": "123", "password_confirm": "123"}, "too short"),
        ({"username": "alice", "password": PASSWORD, "password_confirm": PASSWORD}, "is taken"),
        ({"username": "bad name", "password": PASSWORD, "password_confirm": PASSWORD}, "Enter a valid username"),
        ({"username": "", "password": PASSWORD, "password_confirm": PASSWORD}, "This field is required"),
    ],
)
def test_signup_errors_are_shown(client, alice, data, fragment):
    """A bad sign-up re-renders the form (400) with a clear error and creates no account."""
    count = get_user_model().objects.count()
    response = client.post("/accounts/signup/", data)
    assert response.status_code == 400
    assert fragment in html_of(response)
    assert get_user_model().objects.count() == count
    assert client.get("/").status_code == 302


@override_settings(DEBUG=True)
def test_signup_page_says_the_first_account_is_admin_in_debug(client):
    """In DEBUG, before any account exists, the sign-up page says the first one becomes an admin."""
    assert "becomes an administrator" in html_of(client.get("/accounts/signup/"))
    client.post("/accounts/signup/", {"username": "dev", "password": PASSWORD, "password_confirm": PASSWORD})
    assert get_user_model().objects.get(username="dev").is_superuser
    assert client.get("/admin/").status_code == 200
    client.post("/accounts/logout/")
    assert "becomes an administrator" not in html_of(client.get("/accounts/signup/"))


def test_signup_page_says_nothing_about_admin_in_production(client):
    """Without DEBUG the sign-up page makes no admin promise."""
    assert "administrator" not in html_of(client.get("/accounts/signup/"))


def test_signup_when_logged_in_goes_to_the_rooms(client_alice):
    """A logged-in user visiting sign-up is sent to the room list."""
    response = client_alice.get("/accounts/signup/")
    assert response.status_code == 302 and response["Location"] == "/"


def test_logout_is_post_only(client_alice):
    """GET /accounts/logout/ does not log out (405); POST does and goes to the login page."""
    assert client_alice.get("/accounts/logout/").status_code == 405
    assert client_alice.get("/").status_code == 200
    response = client_alice.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert client_alice.get("/").status_code == 302


def test_nav_has_a_logout_form_with_csrf(client_alice):
    """The navigation logs out with a POST form carrying the CSRF token."""
    page = html_of(client_alice.get("/"))
    assert re.search(
        r'<form class="logout-form" method="post" action="/accounts/logout/">\s*'
        r'<input type="hidden" name="csrfmiddlewaretoken"',
        page,
    )


# -- room list -----------------------------------------------------------------------


def test_room_list_shows_visible_rooms_only(client_alice, alice, make_user):
    """The room list shows public rooms and the user's private rooms, never others' private rooms."""
    bob = make_user("bob")
    services.room_create(name="Lobby", creator=bob)
    services.room_create(name="Ours", private=True, creator=bob, members=[alice])
    services.room_create(name="Bobs secret", private=True, creator=bob)
    response = client_alice.get("/")
    assert response.status_code == 200
    assert_strict_csp_page(response)
    page = html_of(response)
    assert 'href="/rooms/lobby/"' in page and 'href="/rooms/ours/"' in page
    assert "Bobs secret" not in page and "/rooms/bobs-secret/" not in page


def test_room_list_empty_state(client_alice):
    """With no rooms, the list says so and offers the create form."""
    page = html_of(client_alice.get("/"))
    assert "No rooms yet." in page
    assert 'name="name"' in page


def test_create_public_room(client_alice, alice):
    """Creating a room from the list redirects to the new room's page."""
    response = client_alice.post("/", {"name": "Team chat"})
    assert response.status_code == 302 and response["Location"] == "/rooms/team-chat/"
    room = Room.objects.get(slug="team-chat")
    assert room.created_by == alice and not room.private
    assert "Room “Team chat” created." in html_of(client_alice.get(response["Location"]))


def test_create_private_room_with_members(client_alice, alice, make_user):
    """A private room is created with the named members plus the creator (usernames any case)."""
    make_user("bob"), make_user("carol")
    response = client_alice.post("/", {"name": "Secret", "private": "on", "members": "BOB, carol  bob"})
    assert response.status_code == 302
    room = Room.objects.get(slug="secret")
    assert room.private
    assert sorted(room.members.values_list("username", flat=True)) == ["alice", "bob", "carol"]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"name": ""}, "This field is required"),
        ({"name": "x" * 101}, "at most 100 characters"),
        ({"name": "Room", "slug": "Bad Slug"}, "lowercase letters, digits or hyphens"),
        ({"name": "Room", "slug": "taken"}, "already exists"),
        ({"name": "Room", "private": "on", "members": "ghost, bob"}, "No active account is named &#x27;ghost&#x27;"),
        ({"name": "Room", "members": "bob"}, "Only private rooms have members"),
    ],
)
def test_create_room_errors(client_alice, alice, make_user, data, fragment):
    """Bad room forms re-render with a clear message and create nothing."""
    make_user("bob")
    services.room_create(name="Taken", creator=alice)
    response = client_alice.post("/", data)
    assert response.status_code == 400
    assert fragment in html_of(response)
    assert Room.objects.count() == 1


# -- room page -----------------------------------------------------------------------


def client_config_of(page: str) -> dict:
    """The kaiwa-config JSON the room page embeds for room.js."""
    match = re.search(r'<script id="kaiwa-config" type="application/json">(.*?)</script>', page, re.S)
    assert match, "no kaiwa-config JSON in the page"
    return json.loads(match.group(1))


def test_room_page_renders_latest_history_and_client_hooks(client_alice, alice, settings):
    """The room page shows the latest KAIWA_HISTORY_PAGE_SIZE messages in the live client's own markup, each
    carrying its message frame's fields, plus the configuration the client needs."""
    settings.KAIWA_HISTORY_PAGE_SIZE = 20
    room = services.room_create(name="Lobby", creator=alice)
    add_messages(room, 45, author=alice)
    response = client_alice.get("/rooms/lobby/")
    assert response.status_code == 200
    assert_strict_csp_page(response)
    page = html_of(response)
    seqs = [int(s) for s in re.findall(r'<li class="msg msg--own" data-seq="(\d+)" data-user-id="\d+"', page)]
    assert seqs == list(range(26, 46))
    assert 'data-room="lobby"' in page and 'data-live="true"' in page
    assert f'data-seq="45" data-user-id="{alice.pk}" data-ts="2026-11-21T12:00:45.123Z"' in page
    assert 'datetime="2026-11-21T12:00:26.123Z"' in page
    assert 'href="?before=26"' in page
    assert '<script type="module" src="/static/chat/js/room.js"></script>' in page
    assert client_config_of(page) == {
        "room": {"slug": "lobby", "name": "Lobby", "private": False, "kind": "room"},
        "user": {"id": alice.pk, "username": "alice", "moderator": True, "can_manage": False},  # a public room's owner
        "members": [{"id": alice.pk, "username": "alice"}],
        "urls": {
            "ws": "/ws",
            "messages": "/api/rooms/lobby/messages",
            "login": "/accounts/login/",
            "dms": "/api/dms",
            "messages_template": "/api/rooms/{slug}/messages",
            "members_template": "/api/rooms/{slug}/members",
            "members_page_template": "/rooms/{slug}/members/",
            "rooms": "/rooms/",
        },
        "history": {"has_more": True, "page_size": 20},
        "limits": {
            "max_body_chars": 4000,
            "max_frame_bytes": 65536,
            "max_rooms_per_connection": 100,
            "dedup_seconds": 600,
            "typing_interval_ms": 1000,
        },
    }


def test_room_page_settings_reach_the_client(client_alice, alice, settings):
    """Every server limit the client obeys comes from the settings through the page, never a copy in JS:
    an operator who lowers KAIWA_DEDUP_SECONDS or the body limit changes what the page is told."""
    settings.KAIWA_DEDUP_SECONDS = 30
    settings.KAIWA_MAX_BODY_CHARS = 10
    settings.KAIWA_MAX_FRAME_BYTES = 2048
    settings.KAIWA_MAX_ROOMS_PER_CONNECTION = 2
    settings.KAIWA_TYPING_INTERVAL_MS = 5000
    settings.KAIWA_HISTORY_PAGE_SIZE = 7
    services.room_create(name="Lobby", creator=alice)
    config = client_config_of(html_of(client_alice.get("/rooms/lobby/")))
    assert config["limits"] == {
        "max_body_chars": 10,
        "max_frame_bytes": 2048,
        "max_rooms_per_connection": 2,
        "dedup_seconds": 30,
        "typing_interval_ms": 5000,
    }
    assert config["history"] == {"has_more": False, "page_size": 7}


def test_room_page_sidebar_lists_visible_rooms_with_their_last_seq(client_alice, alice, make_user):
    """The sidebar is server-rendered: every room the user may see, with the stored last seq the unread
    counts start from, and the current room marked."""
    bob = make_user("bob")
    lobby = services.room_create(name="Lobby", creator=alice)
    services.room_create(name="Ours", private=True, creator=alice)
    services.room_create(name="Bobs secret", private=True, creator=bob)
    add_messages(lobby, 3, author=alice)
    page = html_of(client_alice.get("/rooms/ours/"))
    assert re.findall(r'<li class="rooms__item" data-room="([^"]+)" data-last-seq="(\d+)"', page) == [
        ("lobby", "3"),
        ("ours", "0"),
    ]
    assert '<a class="rooms__link" href="/rooms/ours/" aria-current="page">' in page
    assert '<a class="rooms__link" href="/rooms/lobby/">' in page
    assert "bobs-secret" not in page


@pytest.mark.parametrize(("name", "colour"), [("alice", 0), ("bob", 5), ("Zoë", 6), ("?", 7)])
def test_avatar_colour_matches_render_js(name, colour):
    """Server-rendered and live messages give a name the same avatar colour (tests/js/test-render.mjs checks
    the same table against render.js)."""
    assert avatar_colour(name) == colour


def test_room_page_escapes_bodies(client_alice, alice):
    """Message bodies are shown as text, never as HTML."""
    room = services.room_create(name="Lobby", creator=alice)
    add_messages(room, 1, author=alice, body="<img src=x onerror=alert(1)>")
    page = html_of(client_alice.get("/rooms/lobby/"))
    assert "<img src=x" not in page
    assert '<div class="msg__body">&lt;img src=x onerror=alert(1)&gt;</div>' in page


def test_room_page_empty_room(client_alice, alice):
    """An empty room shows an invitation to write, no link to older messages, and last seq 0."""
    services.room_create(name="Quiet", creator=alice)
    page = html_of(client_alice.get("/rooms/quiet/"))
    assert 'data-room="quiet" data-last-seq="0"' in page and "No messages yet." in page
    assert re.search(r'<a class="[^"]*chat__older" hidden>', page)
    assert client_config_of(page)["history"]["has_more"] is False


def test_room_page_older_history_archive(client_alice, alice, settings):
    """?before= shows an older page without the live client, with a way back to the latest."""
    settings.KAIWA_HISTORY_PAGE_SIZE = 10
    room = services.room_create(name="Lobby", creator=alice)
    add_messages(room, 25, author=alice)
    page = html_of(client_alice.get("/rooms/lobby/?before=16"))
    assert re.findall(r'data-seq="(\d+)"', page) == [str(s) for s in range(6, 16)]
    assert 'data-live="false"' in page and 'href="?before=6"' in page
    assert "Back to the latest messages" in page and 'id="kaiwa-composer"' not in page
    assert "kaiwa-config" not in page and "room.js" not in page


@pytest.mark.parametrize("query", ["before=abc", "before=0", "before=1&before=2"])
def test_room_page_bad_before_is_a_friendly_400(client_alice, alice, query):
    """A malformed ?before= on the room page gets the 400 page with the reason."""
    services.room_create(name="Lobby", creator=alice)
    response = client_alice.get(f"/rooms/lobby/?{query}")
    assert response.status_code == 400
    assert "&#x27;before&#x27;" in html_of(response) and "Go to the rooms" in html_of(response)


def test_private_room_page_hidden_from_non_members(client_alice, make_user):
    """A private room the user does not belong to is a 404, like an unknown room."""
    bob = make_user("bob")
    services.room_create(name="Secret", private=True, creator=bob)
    hidden, unknown = client_alice.get("/rooms/secret/"), client_alice.get("/rooms/unknown/")
    assert hidden.status_code == unknown.status_code == 404
    assert "This page does not exist" in html_of(hidden)


def test_manage_link_only_for_the_creator(client_alice, alice, make_user):
    """The Members link shows on a private room's page for its creator only."""
    bob = make_user("bob")
    services.room_create(name="Mine", private=True, creator=alice)
    services.room_create(name="Bobs", private=True, creator=bob, members=[alice])
    assert 'href="/rooms/mine/members/"' in html_of(client_alice.get("/rooms/mine/"))
    assert 'href="/rooms/bobs/members/"' not in html_of(client_alice.get("/rooms/bobs/"))


# -- members page -----------------------------------------------------------------------


def test_members_page_add_and_remove(client_alice, alice, make_user):
    """The creator adds a member by username and removes them again."""
    bob = make_user("bob")
    room = services.room_create(name="Mine", private=True, creator=alice)
    page = client_alice.get("/rooms/mine/members/")
    assert page.status_code == 200
    assert_strict_csp_page(page)
    response = client_alice.post("/rooms/mine/members/", {"username": "Bob", "add": "1"})
    assert response.status_code == 302
    assert room.members.filter(pk=bob.pk).exists()
    assert "bob is now a member." in html_of(client_alice.get("/rooms/mine/members/"))
    response = client_alice.post("/rooms/mine/members/", {"remove": str(bob.pk)})
    assert response.status_code == 302
    assert not room.members.filter(pk=bob.pk).exists()


def test_members_page_errors(client_alice, alice):
    """Unknown usernames and bad remove ids are refused clearly; the creator cannot be removed."""
    room = services.room_create(name="Mine", private=True, creator=alice)
    response = client_alice.post("/rooms/mine/members/", {"username": "ghost", "add": "1"})
    assert response.status_code == 400 and "No active account is named" in html_of(response)
    for bad in ("abc", "999999", "9" * 40, ""):
        assert client_alice.post("/rooms/mine/members/", {"remove": bad}).status_code == 400
    response = client_alice.post("/rooms/mine/members/", {"remove": str(alice.pk)}, follow=True)
    assert "cannot be removed" in html_of(response)
    assert Membership.objects.filter(room=room, user=alice).exists()


def test_members_page_is_for_the_creator_of_a_private_room(client_alice, alice, make_user):
    """Members who did not create the room get 403; public rooms and non-members get 404."""
    bob = make_user("bob")
    services.room_create(name="Bobs", private=True, creator=bob, members=[alice])
    services.room_create(name="Hidden", private=True, creator=bob)
    services.room_create(name="Public", creator=alice)
    forbidden = client_alice.get("/rooms/bobs/members/")
    assert forbidden.status_code == 403
    assert "Only the room&#x27;s creator can manage its members." in html_of(forbidden)
    assert client_alice.post("/rooms/bobs/members/", {"username": "alice", "add": "1"}).status_code == 403
    assert client_alice.get("/rooms/hidden/members/").status_code == 404
    assert client_alice.get("/rooms/public/members/").status_code == 404


# -- error pages and headers ------------------------------------------------------------------


def test_friendly_404(client_alice):
    """Unknown pages get the site's own 404 page with navigation."""
    response = client_alice.get("/no/such/page/")
    assert response.status_code == 404
    assert_strict_csp_page(response)
    page = html_of(response)
    assert "This page does not exist" in page and "/no/such/page/" in page and "Log out" in page


def test_friendly_csrf_failure_page(alice):
    """A form posted without a valid CSRF token gets a friendly 403 that says what to do."""
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert "This form has expired" in html_of(response)
    assert "reload the page" in html_of(response)


def test_500_page_renders_without_a_request():
    """The 500 template renders with no context at all, as Django's handler does."""
    page = render_to_string("500.html")
    assert "Something went wrong on our side" in page and 'href="/"' in page


def test_security_headers_on_pages(client_alice):
    """Pages carry CSP, nosniff, a referrer policy and frame denial."""
    response = client_alice.get("/")
    assert response["Content-Security-Policy"].startswith("default-src 'self'")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"


def test_stylesheet_is_served_locally(client):
    """The page's stylesheet is our own file under /static/ (served by the ASGI app in production)."""
    page = html_of(client.get("/accounts/login/"))
    assert '<link rel="stylesheet" href="/static/chat/css/site.css">' in page


# -- the whole first-time flow on a real server ------------------------------------------------------


def _csrf_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


@pytest.mark.django_db(transaction=True)
def test_first_time_user_flow_under_uvicorn(start_server):
    """Under `uvicorn project.asgi:application` with DEBUG: sign up, create a room, chat page, API, admin, log out."""
    server = start_server(env={"DEBUG": "1"})
    with httpx.Client(base_url=server.http, timeout=20) as browser:
        signup = browser.get("/accounts/signup/")
        assert "becomes an administrator" in signup.text
        response = browser.post(
            "/accounts/signup/",
            data={
                "username": "first",
                "password": PASSWORD,
                "password_confirm": PASSWORD,
                "csrfmiddlewaretoken": _csrf_token(signup.text),
            },
        )
        assert response.status_code == 302 and response.headers["location"] == "/"
        rooms = browser.get("/")
        assert rooms.status_code == 200 and "first" in rooms.text
        response = browser.post("/", data={"name": "Kaiwa lounge", "csrfmiddlewaretoken": _csrf_token(rooms.text)})
        assert response.status_code == 302 and response.headers["location"] == "/rooms/kaiwa-lounge/"
        room = browser.get("/rooms/kaiwa-lounge/")
        assert room.status_code == 200 and 'data-room="kaiwa-lounge"' in room.text
        assert "script-src 'self'" in room.headers["content-security-policy"]
        css = browser.get("/static/chat/css/site.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        api = browser.get("/api/rooms/")
        assert api.json() == {
            "rooms": [{"slug": "kaiwa-lounge", "name": "Kaiwa lounge", "private": False, "last_seq": 0, "kind": "room"}]
        }
        admin = browser.get("/admin/chat/room/")
        assert admin.status_code == 200 and "Kaiwa lounge" in admin.text
        response = browser.post("/accounts/logout/", data={"csrfmiddlewaretoken": _csrf_token(room.text)})
        assert response.status_code == 302
        assert browser.get("/api/rooms/").status_code == 403
