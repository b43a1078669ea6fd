"""The room page in real headless Chromium against a real server process (issue #5).

Every test starts ``uvicorn project.asgi:application`` (tests/conftest.py),
logs users in through the login page and drives the page like a person would.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from chat import services
from chat.models import Message, Room
from tests.browser.conftest import SCREENSHOTS, Browsers

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

COMPOSER = "#kaiwa-composer"
RECONNECT_TIMEOUT_MS = 40_000


def expect(*args: Any, **kwargs: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(*args, **kwargs)


def open_room(browsers: Browsers, login: Any, server: Any, username: str, slug: str, **ctx_options: Any) -> Any:
    ctx = browsers.context(**ctx_options)
    page = browsers.page(ctx)
    log_in_and_wait(page, login, server, username, slug)
    return page


def alice_and_bob_in_general(browsers: Browsers, login: Any, start_server: Any, make_user: Any) -> tuple[Any, Any, Any]:
    """alice's room General, a server, and both alice's and bob's pages connected to it: (server, a, b)."""
    alice, _bob = make_user("alice"), make_user("bob")
    services.room_create(name="General", slug="general", creator=alice)
    server = start_server()
    return (
        server,
        open_room(browsers, login, server, "alice", "general"),
        open_room(browsers, login, server, "bob", "general"),
    )


def log_in_and_wait(page: Any, login: Any, server: Any, username: str, slug: str) -> None:
    login(page, server.http, username, f"/rooms/{slug}/")
    wait_connected(page)


def wait_connected(page: Any, timeout: float = 15_000) -> None:
    expect(page.locator(".conn")).to_have_attribute("data-state", "connected", timeout=timeout)


def send(page: Any, body: str) -> None:
    page.fill(COMPOSER, body)
    page.press(COMPOSER, "Enter")


def shown(page: Any) -> list[dict[str, Any]]:
    """The messages in the list, top to bottom, as the page shows them."""
    return page.eval_on_selector_all(
        ".chat__list li.msg",
        """els => els.map(e => ({
            seq: e.dataset.seq ? Number(e.dataset.seq) : null,
            body: e.querySelector('.msg__body').textContent,
            author: e.querySelector('.msg__author').textContent,
            pending: e.classList.contains('msg--pending'),
            failed: e.classList.contains('msg--failed'),
            own: e.classList.contains('msg--own'),
        }))""",
    )


def wait_for_bodies(page: Any, bodies: list[str], timeout: float = 15_000) -> list[dict[str, Any]]:
    """Wait until the list shows exactly ``bodies`` (in order), all sent (none pending)."""
    try:
        page.wait_for_function(
            """expected => {
                const items = [...document.querySelectorAll('.chat__list li.msg')];
                if (items.some(e => !e.dataset.seq)) return false;
                const got = items.map(e => e.querySelector('.msg__body').textContent);
                return JSON.stringify(got) === JSON.stringify(expected);
            }""",
            arg=bodies,
            timeout=timeout,
        )
    except Exception as exc:
        raise AssertionError(f"expected {bodies!r}, the page shows {json.dumps(shown(page))}") from exc
    return shown(page)


def wait_for_body_set(page: Any, bodies: list[str], timeout: float = 15_000) -> list[dict[str, Any]]:
    """Wait until the list holds ``bodies`` in any order, all sent; returns what it shows."""
    try:
        page.wait_for_function(
            """expected => {
                const items = [...document.querySelectorAll('.chat__list li.msg')];
                if (items.some(e => !e.dataset.seq)) return false;
                const got = items.map(e => e.querySelector('.msg__body').textContent).sort();
                return JSON.stringify(got) === JSON.stringify([...expected].sort());
            }""",
            arg=bodies,
            timeout=timeout,
        )
    except Exception as exc:
        raise AssertionError(f"expected {sorted(bodies)!r}, the page shows {json.dumps(shown(page))}") from exc
    return shown(page)


def assert_each_seq_once(items: list[dict[str, Any]], first: int = 1) -> None:
    seqs = [item["seq"] for item in items]
    assert seqs == list(range(first, first + len(items))), f"seqs not contiguous and unique: {seqs}"


def add_history(room: Room, author: Any, bodies: list[str], minutes_apart: float = 1.0) -> None:
    start = timezone.now() - timedelta(minutes=minutes_apart * len(bodies))
    Message.objects.bulk_create(
        Message(
            room=room,
            seq=i,
            author=author,
            author_username=author.username,
            body=body,
            created_at=start + timedelta(minutes=minutes_apart * i),
        )
        for i, body in enumerate(bodies, start=1)
    )


def test_two_users_see_each_others_messages_presence_and_typing(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """Two users in two browser contexts see each other arrive, type and talk; own messages are marked."""
    _server, a, b = alice_and_bob_in_general(browsers, login, start_server, make_user)

    expect(a.locator(".presence__list")).to_contain_text("bob")
    expect(b.locator(".presence__list")).to_contain_text("alice")
    expect(a.locator(".presence__list li")).to_have_count(2)

    # Typing shows on the other side, and clears when the message arrives.
    b.locator(COMPOSER).press_sequentially("hello al")
    expect(a.locator(".chat__typing")).to_have_text("bob is typing…")
    b.locator(COMPOSER).press_sequentially("ice")
    b.press(COMPOSER, "Enter")
    wait_for_bodies(a, ["hello alice"])
    expect(a.locator(".chat__typing")).to_have_text("")
    expect(b.locator(COMPOSER)).to_have_value("")

    # Shift+Enter is a newline, Enter sends.
    a.locator(COMPOSER).press_sequentially("line one")
    a.press(COMPOSER, "Shift+Enter")
    a.locator(COMPOSER).press_sequentially("line two")
    a.press(COMPOSER, "Enter")
    items = wait_for_bodies(b, ["hello alice", "line one\nline two"])
    assert_each_seq_once(items)
    assert [i["author"] for i in items] == ["bob", "alice"]
    assert [i["own"] for i in items] == [True, False]
    assert [i["own"] for i in wait_for_bodies(a, ["hello alice", "line one\nline two"])] == [False, True]

    # New messages from others are announced politely to screen readers.
    expect(a.locator("[aria-live='polite']", has_text="bob: hello alice")).to_have_count(1)
    # Timestamps carry the server's instant; the text is the local time.
    stamp = b.locator(".chat__list li.msg time").first
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp.get_attribute("datetime") or "")
    assert stamp.text_content()

    # Leaving the room (closing the tab) removes bob from alice's presence list.
    b.close()
    expect(a.locator(".presence__list")).not_to_contain_text("bob")
    expect(a.locator(".presence__list li")).to_have_count(1)


def test_reload_mid_conversation_shows_every_message_once(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """A reload rebuilds the room from HTTP history plus `join since`: nothing missing, nothing doubled."""
    _server, a, b = alice_and_bob_in_general(browsers, login, start_server, make_user)

    expected = []
    for i in range(3):
        send(a, f"a{i}")
        expected.append(f"a{i}")
        wait_for_bodies(b, expected)
    # Alice goes on talking while bob's page reloads.
    b.reload(wait_until="commit")
    for i in range(3, 6):
        send(a, f"a{i}")
        expected.append(f"a{i}")
    wait_connected(b)
    assert_each_seq_once(wait_for_bodies(b, expected))
    send(b, "back")
    expected.append("back")
    assert_each_seq_once(wait_for_bodies(a, expected))
    assert_each_seq_once(wait_for_bodies(b, expected))


def test_server_restart_resumes_without_loss_and_delivers_pending_once(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """The server process restarts mid-conversation: both pages reconnect, resume with `since`,
    and what was typed while it was down is delivered exactly once."""
    server, a, b = alice_and_bob_in_general(browsers, login, start_server, make_user)

    send(a, "before 1")
    wait_for_bodies(b, ["before 1"])
    send(b, "before 2")
    wait_for_bodies(a, ["before 1", "before 2"])

    server.terminate()
    for page in (a, b):
        expect(page.locator(".conn")).not_to_have_attribute("data-state", "connected")

    # Typed while the server is down: shown at once as pending.
    send(a, "while down 1")
    send(a, "while down 2")
    send(b, "bob while down")
    expect(a.locator(".chat__list li.msg--pending")).to_have_count(2)
    expect(b.locator(".chat__list li.msg--pending")).to_have_count(1)
    expect(a.locator(".chat__list li.msg--pending .msg__status").first).to_contain_text("will send when back online")
    assert [i["body"] for i in shown(a)][-2:] == ["while down 1", "while down 2"]

    start_server(port=server.port)
    everything = ["before 1", "before 2", "while down 1", "while down 2", "bob while down"]
    for page in (a, b):
        wait_connected(page, timeout=RECONNECT_TIMEOUT_MS)
    for page in (a, b):
        items = wait_for_body_set(page, everything, timeout=RECONNECT_TIMEOUT_MS)
        assert_each_seq_once(items)
        bodies = [i["body"] for i in items]
        assert bodies[:2] == ["before 1", "before 2"]
        # Alice's two sends keep their order.
        assert bodies.index("while down 1") < bodies.index("while down 2")

    # The conversation goes on after the restart, and a reload agrees with the live view.
    everything_after = [i["body"] for i in shown(a)] + ["after"]
    send(b, "after")
    wait_for_bodies(a, everything_after)
    a.reload()
    wait_connected(a)
    assert_each_seq_once(wait_for_bodies(a, everything_after))


def test_markup_in_a_body_is_shown_as_text_and_links_are_safe(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """A body of HTML is shown as those characters and runs nothing; only http(s) URLs become links."""
    server, a, b = alice_and_bob_in_general(browsers, login, start_server, make_user)

    evil = "<img src=x onerror=alert(1)>"
    send(a, evil)
    link_body = "docs: https://example.com/a?b=1. not a link: javascript:alert(2)"
    send(a, link_body)
    for page in (a, b):
        wait_for_bodies(page, [evil, link_body])
        assert page.locator(".chat__list img").count() == 0
        links = page.locator(".chat__list .msg__body a")
        expect(links).to_have_count(1)
        assert links.get_attribute("href") == "https://example.com/a?b=1"
        assert links.get_attribute("rel") == "noopener noreferrer"
        assert links.get_attribute("target") == "_blank"
    # Reloading renders the same body from HTTP history: still text.
    b.reload()
    wait_connected(b)
    wait_for_bodies(b, [evil, link_body])
    assert b.locator(".chat__list img").count() == 0
    assert browsers.dialogs == []
    # The page is served with the strict policy that would block an inline script anyway.
    response = b.request.get(f"{server.http}/rooms/general/")
    assert "script-src 'self'" in response.headers["content-security-policy"]


def test_logging_out_in_one_tab_sends_the_other_tab_to_the_login_page(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """Logout in tab 1 ends the session: the server closes tab 2's socket with 4401 and tab 2 goes to log in."""
    alice = make_user("alice")
    services.room_create(name="General", slug="general", creator=alice)
    server = start_server()
    ctx = browsers.context()
    first = browsers.page(ctx)
    log_in_and_wait(first, login, server, "alice", "general")
    second = browsers.page(ctx)
    second.goto(f"{server.http}/rooms/general/")
    wait_connected(second)

    first.get_by_role("button", name="Log out").click()
    # The logout signal fires just before Django flushes the session, so the tab may get to the login page
    # while the session still exists, be sent back to the room by the login view, and then land on the
    # login page through Django's own redirect (next=/rooms/general/ unencoded): the same page either way.
    expect(second).to_have_url(re.compile(r"/accounts/login/\?next=(%2F|/)rooms(%2F|/)general(%2F|/)$"), timeout=20_000)
    expect(second.locator("#id_username")).to_be_visible()


def test_scrolling_up_loads_older_pages_and_new_messages_wait_below(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """The latest page loads first; scrolling up fetches older pages down to the first message; a message
    arriving while scrolled up does not move the view but shows a "new messages" button."""
    alice, bob = make_user("alice"), make_user("bob")
    room = services.room_create(name="General", slug="general", creator=alice)
    add_history(room, bob, [f"old {i}" for i in range(1, 121)], minutes_apart=0.1)
    server = start_server()
    a = open_room(browsers, login, server, "alice", "general")
    b = open_room(browsers, login, server, "bob", "general")

    items = wait_for_bodies(a, [f"old {i}" for i in range(71, 121)])
    assert_each_seq_once(items, first=71)
    # At the bottom to start with.
    assert (
        a.evaluate("s => s.scrollHeight - s.scrollTop - s.clientHeight", a.locator(".chat__scroll").element_handle())
        < 50
    )

    scroller = a.locator(".chat__scroll")
    expect(a.locator(".chat__beginning")).to_be_hidden()
    scroller.evaluate("s => { s.scrollTop = 0; }")
    expect(a.locator(".chat__list li.msg").first).to_have_attribute("data-seq", "21")
    # The message that was at the top stays in view while the older page lands above it.
    assert scroller.evaluate("s => s.scrollTop") > 100
    scroller.evaluate("s => { s.scrollTop = 0; }")
    expect(a.locator(".chat__list li.msg").first).to_have_attribute("data-seq", "1")
    expect(a.locator(".chat__beginning")).to_be_visible()
    assert_each_seq_once(wait_for_bodies(a, [f"old {i}" for i in range(1, 121)]))

    # Scrolled to the top: a new message does not pull the view down.
    scroller.evaluate("s => { s.scrollTop = 0; }")
    send(b, "fresh")
    expect(a.locator(".chat__jump")).to_have_text("1 new message ↓")
    expect(a.locator(".chat__divider")).to_have_count(1)
    assert scroller.evaluate("s => s.scrollTop") < 50
    a.locator(".chat__jump").click()
    expect(a.locator(".chat__jump")).to_be_hidden()
    assert scroller.evaluate("s => s.scrollHeight - s.scrollTop - s.clientHeight") < 50
    # At the bottom, the next message keeps the view at the bottom.
    send(b, "fresher")
    wait_for_bodies(a, [f"old {i}" for i in range(1, 121)] + ["fresh", "fresher"])
    expect(a.locator(".chat__jump")).to_be_hidden()
    assert scroller.evaluate("s => s.scrollHeight - s.scrollTop - s.clientHeight") < 50


def test_a_refused_send_shows_the_error_and_is_retried(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """A send refused as rate_limited shows the server's message on the message itself, then goes out
    once retry_after_ms has passed; nothing is posted twice."""
    alice = make_user("alice")
    services.room_create(name="General", slug="general", creator=alice)
    server = start_server(env={"KAIWA_RATE_BURST": "1", "KAIWA_RATE_PER_SECOND": "0.5"})
    a = open_room(browsers, login, server, "alice", "general")

    send(a, "first")
    send(a, "second")
    failed = a.locator(".chat__list li.msg--failed")
    expect(failed).to_have_count(1)
    expect(failed.locator(".msg__error")).not_to_be_empty()
    expect(failed.get_by_role("button", name="Retry")).to_be_visible()
    assert_each_seq_once(wait_for_bodies(a, ["first", "second"], timeout=20_000))
    a.reload()
    wait_connected(a)
    assert_each_seq_once(wait_for_bodies(a, ["first", "second"]))


def test_sidebar_lists_rooms_with_unread_counts(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """Messages in another of the user's rooms raise its unread count in the sidebar; opening it clears it."""
    alice, _bob = make_user("alice"), make_user("bob")
    services.room_create(name="General", slug="general", creator=alice)
    services.room_create(name="Random", slug="random", creator=alice)
    server = start_server()
    a = open_room(browsers, login, server, "alice", "general")
    b = open_room(browsers, login, server, "bob", "random")

    rooms = a.get_by_role("navigation", name="Your rooms")
    expect(rooms.get_by_role("link")).to_have_count(2)
    expect(rooms.get_by_role("link", name="General")).to_have_attribute("aria-current", "page")
    send(b, "psst")
    send(b, "over here")
    expect(a.locator("li[data-room='random'] .badge")).to_have_text("2 unread messages")
    # The title counts only what needs alice (mentions, direct messages: tests/browser/test_rooms_live.py).
    expect(a).to_have_title("#General · Kaiwa")

    rooms.get_by_role("link", name=re.compile("Random")).click()
    a.wait_for_url(f"{server.http}/rooms/random/")
    wait_connected(a)
    wait_for_bodies(a, ["psst", "over here"])
    # Where alice left off is marked.
    expect(a.locator(".chat__list li:not(.chat__day)").first).to_have_class("chat__divider")
    expect(a.locator("li[data-room='random'] .badge")).to_be_hidden()
    expect(a.locator("li[data-room='general'] .badge")).to_be_hidden()


def test_room_page_screenshots_at_desktop_and_phone_widths(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """Writes docs/screenshots/room-desktop.png (1280x800) and room-phone.png (390x844); on a phone the
    rooms sidebar is collapsed behind a labelled button."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    room = services.room_create(name="Product launch", slug="launch", creator=alice)
    services.room_create(name="General", slug="general", creator=alice)
    random = services.room_create(name="Random", slug="random", creator=alice)
    services.room_create(name="Design reviews", slug="design", private=True, creator=alice, members=[bob])
    conversation = [
        (alice, "Morning all! The launch checklist is in the usual place."),
        (bob, "Thanks. I went through the release notes last night, two small fixes pushed."),
        (bob, "Also: the status page copy needs a final look."),
        (carol, "I can take the status page. What time is the go/no-go?"),
        (alice, "14:00 UTC. Dashboard: https://example.com/launch/dashboard"),
        (carol, "Perfect, I'll have it done by then."),
        (bob, "I re-ran the load test from this morning; the report is in the usual folder."),
    ]
    start = timezone.now() - timedelta(minutes=30)
    Message.objects.bulk_create(
        Message(
            room=room,
            seq=i,
            author=user,
            author_username=user.username,
            body=body,
            created_at=start + timedelta(minutes=3 * i),
        )
        for i, (user, body) in enumerate(conversation, start=1)
    )
    add_history(random, carol, ["lunch?", "the new café opened", "anyone?"])
    server = start_server()

    # Random's history is unread for alice: her read marker says she saw nothing there.
    a_ctx = browsers.context(viewport={"width": 1280, "height": 800})
    a_ctx.add_init_script(f"localStorage.setItem('kaiwa:lastread:{alice.pk}:random', '0')")
    a = browsers.page(a_ctx)
    log_in_and_wait(a, login, server, "alice", "launch")
    b = open_room(browsers, login, server, "bob", "launch", viewport={"width": 390, "height": 844}, is_mobile=True)
    c = open_room(browsers, login, server, "carol", "launch")
    expect(a.locator(".presence__list li")).to_have_count(3)

    send(c, "Status page is updated, have a look when you can.")
    wait_for_bodies(a, [body for _, body in conversation] + ["Status page is updated, have a look when you can."])
    expect(a.locator("li[data-room='random'] .badge")).to_have_text("3 unread messages")
    b.locator(COMPOSER).press_sequentially("Looks great")
    expect(a.locator(".chat__typing")).to_have_text("bob is typing…")

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    a.screenshot(path=str(SCREENSHOTS / "room-desktop.png"))

    # Phone: the sidebar is collapsed; the Rooms button opens it.
    wait_for_bodies(b, [body for _, body in conversation] + ["Status page is updated, have a look when you can."])
    expect(b.locator(".rooms")).to_be_hidden()
    toggle = b.get_by_role("button", name="Rooms")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    b.screenshot(path=str(SCREENSHOTS / "room-phone.png"))
    toggle.click()
    expect(b.locator(".rooms")).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(b.get_by_role("link", name="Product launch")).to_be_focused()
    b.keyboard.press("Escape")
    expect(b.locator(".rooms")).to_be_hidden()
    expect(toggle).to_be_focused()
    # The people panel is behind its own button, labelled with the count.
    people = b.get_by_role("button", name="People online: 3")
    expect(b.locator(".presence")).to_be_hidden()
    people.click()
    expect(b.locator(".presence__list li")).to_have_count(3)
    expect(b.locator(".presence")).to_be_visible()
    b.keyboard.press("Escape")
    expect(b.locator(".presence")).to_be_hidden()
    assert (SCREENSHOTS / "room-desktop.png").stat().st_size > 10_000
    assert (SCREENSHOTS / "room-phone.png").stat().st_size > 10_000


def test_a_refused_send_offers_retry_and_discard(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """The operator lowers the body limit while the page is open: a send refused as too_long shows the
    server's reason with Retry and Discard; Discard drops it, Retry re-sends it (once) when it can pass."""
    alice = make_user("alice")
    services.room_create(name="General", slug="general", creator=alice)
    server = start_server()
    a = open_room(browsers, login, server, "alice", "general")

    # The page's own limit (4000) is checked before anything is sent.
    a.fill(COMPOSER, "x" * 4001)
    a.press(COMPOSER, "Enter")
    expect(a.locator(".chat-composer__error")).to_have_text("1 character over the limit of 4000.")
    expect(a.locator(".chat__list li.msg")).to_have_count(0)
    a.fill(COMPOSER, "")

    server.terminate()
    expect(a.locator(".conn")).not_to_have_attribute("data-state", "connected")
    server = start_server(port=server.port, env={"KAIWA_MAX_BODY_CHARS": "10"})
    wait_connected(a, timeout=RECONNECT_TIMEOUT_MS)

    send(a, "short")
    send(a, "far too long for ten")
    send(a, "also much too long")
    failed = a.locator(".chat__list li.msg--failed")
    expect(failed).to_have_count(2)
    expect(failed.first.locator(".msg__error")).to_contain_text("10")
    failed.first.get_by_role("button", name="Discard").click()
    expect(failed).to_have_count(1)
    expect(a.locator(".chat__list li.msg")).to_have_count(2)

    server.terminate()
    expect(a.locator(".conn")).not_to_have_attribute("data-state", "connected")
    start_server(port=server.port)
    wait_connected(a, timeout=RECONNECT_TIMEOUT_MS)
    # Still failed after the reconnect: a refused send waits for the user.
    expect(failed).to_have_count(1)
    failed.get_by_role("button", name="Retry").click()
    assert_each_seq_once(wait_for_bodies(a, ["short", "also much too long"]))
    a.reload()
    wait_connected(a)
    assert_each_seq_once(wait_for_bodies(a, ["short", "also much too long"]))


def test_sends_pending_when_the_page_reloads_are_delivered_once(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """Messages typed while the server is down survive a reload of the tab (kept in sessionStorage) and are
    delivered exactly once, whether the old page or the reloaded one gets them through."""
    server, a, b = alice_and_bob_in_general(browsers, login, start_server, make_user)
    send(a, "hello")
    wait_for_bodies(b, ["hello"])

    server.terminate()
    expect(a.locator(".conn")).not_to_have_attribute("data-state", "connected")
    send(a, "typed offline 1")
    send(a, "typed offline 2")
    expect(a.locator(".chat__list li.msg--pending")).to_have_count(2)
    restarted = start_server(port=server.port)
    # uvicorn logs "startup complete" before it binds the port.
    restarted.wait_for_line("Uvicorn running on")
    a.reload()
    wait_connected(a)
    expected = ["hello", "typed offline 1", "typed offline 2"]
    assert_each_seq_once(wait_for_bodies(a, expected))
    wait_connected(b, timeout=RECONNECT_TIMEOUT_MS)
    assert_each_seq_once(wait_for_bodies(b, expected, timeout=RECONNECT_TIMEOUT_MS))
    # Nothing is left to re-send on the next reload.
    assert a.evaluate("() => Object.keys(sessionStorage).map(k => JSON.parse(sessionStorage.getItem(k)).length)") == [0]


def test_a_long_absence_reloads_history_when_the_server_resets_the_join(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """The browser goes offline (status says so) while more messages arrive than the server replays: the
    `joined` answer has `reset: true` and the page reloads the history over HTTP, missing and doubling nothing."""
    alice, _bob = make_user("alice"), make_user("bob")
    services.room_create(name="General", slug="general", creator=alice)
    server = start_server(env={"KAIWA_BACKLOG_LIMIT": "3"})
    a_ctx = browsers.context()
    a = browsers.page(a_ctx)
    frames: list[dict[str, Any]] = []
    a.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload))))
    log_in_and_wait(a, login, server, "alice", "general")
    b = open_room(browsers, login, server, "bob", "general")
    send(b, "m0")
    wait_for_bodies(a, ["m0"])

    a_ctx.set_offline(True)
    expect(a.locator(".conn")).to_have_attribute("data-state", "offline")
    expect(a.locator(".conn")).to_contain_text("Offline")
    expect(b.locator(".presence__list li")).to_have_count(1)
    expected = ["m0"] + [f"m{i}" for i in range(1, 7)]
    for body in expected[1:]:
        send(b, body)
    wait_for_bodies(b, expected)

    a_ctx.set_offline(False)
    wait_connected(a)
    assert_each_seq_once(wait_for_bodies(a, expected))
    joins = [f for f in frames if f.get("type") == "joined" and f.get("room") == "general"]
    assert [j["reset"] for j in joins] == [False, True], joins
    send(b, "after")
    assert_each_seq_once(wait_for_bodies(a, [*expected, "after"]))


def test_concurrent_senders_see_the_same_order(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """Two users sending bursts at the same time end up with the same list on both pages: every seq once,
    in seq order, each user's messages in the order typed, nothing left pending."""
    _server, a, b = alice_and_bob_in_general(browsers, login, start_server, make_user)

    burst = 15
    for i in range(burst):
        send(a, f"a{i}")
        send(b, f"b{i}")
    everything = [f"a{i}" for i in range(burst)] + [f"b{i}" for i in range(burst)]
    seen = [wait_for_body_set(page, everything) for page in (a, b)]
    assert seen[0] == [{**item, "own": not item["own"]} for item in seen[1]]
    for items in seen:
        assert_each_seq_once(items)
        bodies = [i["body"] for i in items]
        assert [x for x in bodies if x.startswith("a")] == [f"a{i}" for i in range(burst)]
        assert [x for x in bodies if x.startswith("b")] == [f"b{i}" for i in range(burst)]


def seed_pending_send(ctx: Any, user_id: int, client_id: str, body: str, age_ms: int) -> None:
    """Put an unacked send typed ``age_ms`` ago in the tab's sessionStorage, as a closed page would leave it."""
    item = {"clientId": client_id, "room": "general", "body": body, "state": "pending"}
    ctx.add_init_script(
        f"sessionStorage.setItem('kaiwa:pending:{user_id}', "
        f"JSON.stringify([Object.assign({json.dumps(item)}, {{createdAt: Date.now() - {age_ms}}})]))"
    )


def test_the_page_obeys_a_lowered_dedup_window(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """An operator lowers KAIWA_DEDUP_SECONDS to 5: a send left unacked 10 s ago is past the server's
    window, so the page does not re-send it by itself (that could post it twice); it shows it as failed
    with Retry, and Retry sends it once. With the default window the same send goes out on its own."""
    alice = make_user("alice")
    services.room_create(name="General", slug="general", creator=alice)
    server = start_server(env={"KAIWA_DEDUP_SECONDS": "5"})

    ctx = browsers.context()
    seed_pending_send(ctx, alice.pk, "seed-1", "typed 10 s ago", age_ms=10_000)
    a = browsers.page(ctx)
    sent: list[dict[str, Any]] = []
    a.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(json.loads(payload))))
    log_in_and_wait(a, login, server, "alice", "general")
    # `joined` has been handled (presence is drawn from it, and pending sends go out in the same step).
    expect(a.locator(".presence__list li")).to_have_count(1)
    assert json.loads(a.locator("#kaiwa-config").text_content() or "{}")["limits"]["dedup_seconds"] == 5
    failed = a.locator(".chat__list li.msg--failed")
    expect(failed).to_have_count(1)
    expect(failed.locator(".msg__error")).to_contain_text("Retry")
    assert [f for f in sent if f.get("type") == "send"] == []

    failed.get_by_role("button", name="Retry").click()
    assert_each_seq_once(wait_for_bodies(a, ["typed 10 s ago"]))
    assert len([f for f in sent if f.get("type") == "send"]) == 1

    server.terminate()
    server = start_server(port=server.port)
    ctx = browsers.context()
    seed_pending_send(ctx, alice.pk, "seed-2", "also typed 10 s ago", age_ms=10_000)
    b = browsers.page(ctx)
    log_in_and_wait(b, login, server, "alice", "general")
    assert_each_seq_once(wait_for_bodies(b, ["typed 10 s ago", "also typed 10 s ago"]))


def test_the_first_page_comes_from_the_page_not_a_second_fetch(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """Opening a room makes no API request: the history, the sidebar and the settings are in the page the
    server rendered, and the client binds to that markup (local times, grouping) instead of rebuilding it."""
    alice = make_user("alice")
    room = services.room_create(name="General", slug="general", creator=alice)
    services.room_create(name="Random", slug="random", creator=alice)
    add_history(room, alice, ["one", "two", "see https://example.com/x"])
    server = start_server()
    ctx = browsers.context()
    a = browsers.page(ctx)
    api_requests: list[str] = []
    a.on("request", lambda request: api_requests.append(request.url) if "/api/" in request.url else None)
    log_in_and_wait(a, login, server, "alice", "general")
    items = wait_for_bodies(a, ["one", "two", "see https://example.com/x"])
    assert_each_seq_once(items)
    assert api_requests == []
    # The server's <li>s are the ones on screen, enhanced in place: grouped under one header, a link made.
    expect(a.locator(".chat__list li.msg.msg--continued")).to_have_count(2)
    expect(a.locator(".chat__list .msg__body a")).to_have_attribute("href", "https://example.com/x")
    expect(a.get_by_role("navigation", name="Your rooms").get_by_role("link")).to_have_count(2)
    expect(a.locator(".chat__beginning")).to_be_visible()
    # A live message is drawn with exactly the structure the server renders, so a reload looks the same.
    send(a, "live")
    wait_for_bodies(a, ["one", "two", "see https://example.com/x", "live"])
    structure = """li => [li.tagName, ...[...li.querySelectorAll('*')]
        .map(e => `${e.tagName}.${e.getAttribute('class')}`)]"""
    assert a.locator("li[data-seq='4']").evaluate(structure) == a.locator("li[data-seq='1']").evaluate(structure)
