"""The user's own rooms, live (issue #16, protocol.md 7.5), in real Chromium with two users.

The sidebar follows rooms created or removed elsewhere, background rooms do
not make anyone "Online", and a direct conversation opened by one person
appears, live, for the other.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from chat import dms, services
from chat.models import Room
from tests.browser.conftest import SCREENSHOTS, Browsers
from tests.browser.test_room_page import (
    COMPOSER,
    alice_and_bob_in_general,
    expect,
    log_in_and_wait,
    open_room,
    send,
    wait_for_bodies,
)
from tests.chat.factories import add_messages

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run an ORM call off Playwright's thread (Django refuses the ORM next to a running event loop)."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(fn())
        finally:
            # The thread's connection goes back (to PostgreSQL's pool): one left open per
            # call exhausted the test process's pool (KAIWA_DB_POOL_MAX) in the CI pass.
            connection.close()

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=30)
    assert result, "the database call did not finish"
    return result[0]


def online(page: Any) -> list[str]:
    return page.eval_on_selector_all(".presence__list .presence__name", "els => els.map(e => e.textContent)")


def test_background_rooms_do_not_make_anyone_online(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """alice has General open and Random only in her sidebar: Random's Online list shows bob alone."""
    alice, _bob = make_user("alice"), make_user("bob")
    services.room_create(name="General", slug="general", creator=alice)
    services.room_create(name="Random", slug="random", creator=alice)
    server = start_server()
    a = open_room(browsers, login, server, "alice", "general")
    b = open_room(browsers, login, server, "bob", "random")
    expect(b.locator(".presence__list .presence__name")).to_have_text(["bob"])
    expect(a.locator(".presence__list .presence__name")).to_have_text(["alice"])
    # alice's page still counts Random's messages: she is listening, just not "here".
    send(b, "anyone?")
    expect(a.locator("li[data-room='random'] .badge")).to_have_text("1 unread message")
    assert online(b) == ["bob"]
    # Opening Random makes her present there, and no longer in General.
    a.get_by_role("navigation", name="Your rooms").get_by_role("link", name="Random").click()
    expect(b.locator(".presence__list .presence__name")).to_have_text(["alice", "bob"])
    # A person's name in the people list opens the conversation with them, from the keyboard too.
    b.get_by_role("button", name="Message alice").focus()
    b.keyboard.press("Enter")
    expect(b.locator("#room-title")).to_have_text("alice")
    expect(a.get_by_role("list", name="Direct messages").get_by_role("link", name="bob (online)")).to_be_visible()


def test_sidebar_follows_rooms_added_renamed_and_removed(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """A public room created elsewhere appears in bob's sidebar with its unread count; a rename and removal follow."""
    alice, bob = make_user("alice"), make_user("bob")
    services.room_create(name="General", slug="general", creator=alice)
    server = start_server()
    b = open_room(browsers, login, server, "bob", "general")
    nav = b.get_by_role("navigation", name="Your rooms")
    expect(nav.get_by_role("link")).to_have_count(1)

    garden = in_thread(lambda: services.room_create(name="Garden", slug="garden", creator=alice))
    expect(nav.get_by_role("link", name="Garden")).to_be_visible()
    a = open_room(browsers, login, server, "alice", "garden")
    send(a, "the tomatoes are in")
    expect(b.locator("li[data-room='garden'] .badge")).to_have_text("1 unread message")
    secret = in_thread(lambda: services.room_create(name="Plans", slug="plans", private=True, creator=alice))
    in_thread(lambda: services.room_member_add(room=secret, user=bob))
    expect(nav.get_by_role("link", name="Plans")).to_be_visible()
    b.screenshot(path=str(SCREENSHOTS / "sidebar-live.png"))

    def rename() -> None:
        garden.name = "Roof garden"
        garden.save()

    in_thread(rename)
    expect(nav.get_by_role("link", name="Roof garden")).to_be_visible()
    # alice has it open: its header and title follow, the messages stay.
    expect(a.locator("#room-title")).to_have_text("#Roof garden")
    expect(a).to_have_title("#Roof garden · Kaiwa")
    wait_for_bodies(a, ["the tomatoes are in"])
    in_thread(lambda: services.room_member_remove(room=secret, user=bob))
    expect(nav.get_by_role("link", name="Plans")).to_have_count(0)
    in_thread(lambda: Room.objects.filter(slug="garden").delete())
    expect(nav.get_by_role("link")).to_have_count(1)


def test_a_dm_started_by_one_user_appears_live_for_the_other(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """alice opens a conversation with bob from "Message someone"; bob sees "alice" appear, online, and they talk."""
    server, a, b = alice_and_bob_in_general(browsers, login, start_server, make_user)
    dms = b.get_by_role("list", name="Direct messages")
    expect(dms.get_by_role("link")).to_have_count(0)

    a.get_by_label("Message someone").fill("nobody")
    a.get_by_label("Message someone").press("Enter")
    expect(a.locator(".dm-start__error")).to_contain_text("no user named 'nobody'")
    a.get_by_label("Message someone").fill("bob")
    a.get_by_role("button", name="Open").click()
    a.wait_for_url(f"{server.http}/rooms/dm-*/")
    expect(a.locator(".conn")).to_have_attribute("data-state", "connected")
    expect(a.locator("#room-title")).to_have_text("bob")

    link = dms.get_by_role("link", name="alice (online)")
    expect(link).to_be_visible()
    expect(b.locator("li[data-kind='dm'] .rooms__dot")).to_have_attribute("data-online", "true")
    send(a, "psst, bob")
    expect(b.locator("li[data-kind='dm'] .badge")).to_have_text("1 unread message")
    b.screenshot(path=str(SCREENSHOTS / "dm-appears.png"))
    link.click()
    wait_for_bodies(b, ["psst, bob"])
    send(b, "hi alice")
    wait_for_bodies(a, ["psst, bob", "hi alice"])
    a.screenshot(path=str(SCREENSHOTS / "dm-conversation.png"))
    # bob asking for a conversation with alice gets the same one, not a second.
    b.get_by_label("Message someone").fill("alice")
    b.get_by_label("Message someone").press("Enter")
    b.wait_for_url(a.url)
    assert in_thread(lambda: Room.objects.filter(kind="dm").count()) == 1


COUNT_SOCKETS = """
window.__kaiwaSockets = 0;
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) { super(...args); window.__kaiwaSockets += 1; }
};
"""


def test_switching_rooms_in_place_with_back_and_forward(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """A sidebar click changes the URL without a page load or a new socket; back/forward work; scroll is kept."""
    alice, _bob = make_user("alice"), make_user("bob")
    general = services.room_create(name="General", slug="general", creator=alice)
    random = services.room_create(name="Random", slug="random", creator=alice)
    add_messages(general, 60, author=alice, body="general {seq}")
    add_messages(random, 3, author=alice, body="random {seq}")
    server = start_server()
    b = open_room(browsers, login, server, "bob", "random")
    ctx = browsers.context(locale="en-US", timezone_id="Europe/Paris")
    ctx.add_init_script(COUNT_SOCKETS)
    a = browsers.page(ctx)

    log_in_and_wait(a, login, server, "alice", "general")
    a.evaluate("window.__samePage = true")
    scroller = a.locator(".chat__scroll")
    scroller.evaluate("el => { el.scrollTop = 200; }")
    kept = scroller.evaluate("el => el.scrollHeight - el.scrollTop")
    expect(b.locator(".presence__list .presence__name")).to_have_text(["bob"])

    nav = a.get_by_role("navigation", name="Your rooms")
    nav.get_by_role("link", name="Random").click()
    a.wait_for_url(f"{server.http}/rooms/random/")
    wait_for_bodies(a, ["random 1", "random 2", "random 3"])
    expect(a.locator("#room-title")).to_have_text("#Random")
    expect(nav.get_by_role("link", name="Random")).to_have_attribute("aria-current", "page")
    expect(a).to_have_title("#Random · Kaiwa")
    # alice is now here for bob, and can talk.
    expect(b.locator(".presence__list .presence__name")).to_have_text(["alice", "bob"])
    send(a, "switched without a reload")
    wait_for_bodies(b, ["random 1", "random 2", "random 3", "switched without a reload"])

    a.go_back()
    a.wait_for_url(f"{server.http}/rooms/general/")
    expect(a.locator("#room-title")).to_have_text("#General")
    expect(a.locator(".chat__list li.msg")).to_have_count(60)
    assert abs(scroller.evaluate("el => el.scrollHeight - el.scrollTop") - kept) <= 2
    expect(b.locator(".presence__list .presence__name")).to_have_text(["bob"])
    a.go_forward()
    a.wait_for_url(f"{server.http}/rooms/random/")
    wait_for_bodies(a, ["random 1", "random 2", "random 3", "switched without a reload"])
    # Date separators, in the viewer's time zone: the stored messages' day, then today's.
    expect(a.locator(".chat__day")).to_have_text(["Saturday, November 21", "Today"])
    assert a.evaluate("window.__samePage") is True
    assert a.evaluate("window.__kaiwaSockets") == 1
    a.screenshot(path=str(SCREENSHOTS / "room-switched.png"))


RECORD_NOTIFICATIONS = """
window.__notes = [];
window.__permissionAsked = 0;
const NativeNotification = window.Notification;
window.Notification = class extends NativeNotification {
  constructor(title, options) { super(title, options); window.__notes.push({ title, body: options && options.body }); }
  static get permission() { return NativeNotification.permission; }
  static requestPermission(...args) {
    window.__permissionAsked += 1;
    return NativeNotification.requestPermission(...args);
  }
};
// The test hides the tab the way a browser does when another tab is in front.
window.__hidden = false;
Object.defineProperty(document, "visibilityState", { get: () => (window.__hidden ? "hidden" : "visible") });
Object.defineProperty(document, "hidden", { get: () => window.__hidden });
window.__setHidden = (hidden) => { window.__hidden = hidden; document.dispatchEvent(new Event("visibilitychange")); };
"""


def test_notifications_for_dms_and_mentions_while_hidden_or_elsewhere(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """Permission is never asked on load; with it granted, a mention while hidden and a DM while another room is
    open notify, count in the title and the favicon; a muted room does not notify."""
    alice, bob = make_user("alice"), make_user("bob")
    services.room_create(name="General", slug="general", creator=alice)
    dm, _ = dms.dm_open(user=bob, username="alice")
    server = start_server()

    asking = browsers.context()
    asking.add_init_script(RECORD_NOTIFICATIONS)
    first = browsers.page(asking)
    log_in_and_wait(first, login, server, "alice", "general")
    assert first.evaluate("window.__permissionAsked") == 0
    expect(first.get_by_role("button", name="Enable notifications")).to_be_visible()
    first.get_by_role("button", name="Enable notifications").click()
    assert first.evaluate("window.__permissionAsked") == 1
    asking.close()

    granted = browsers.context(permissions=["notifications"])
    granted.add_init_script(RECORD_NOTIFICATIONS)
    a = browsers.page(granted)
    log_in_and_wait(a, login, server, "alice", "general")
    expect(a.get_by_role("button", name="Enable notifications")).to_be_hidden()
    expect(a.locator(".notify-state")).to_have_text("Notifications are on for direct messages and mentions.")
    b = open_room(browsers, login, server, "bob", "general")

    # A mention while alice's tab is hidden.
    a.evaluate("window.__setHidden(true)")
    send(b, "@alice can you look at this?")
    a.wait_for_function("() => window.__notes.length === 1")
    assert a.evaluate("window.__notes[0]") == {"title": "bob in #General", "body": "@alice can you look at this?"}
    expect(a).to_have_title(re.compile(r"^\(1\) #General"))
    assert a.evaluate("document.querySelector(\"link[rel='icon']\").href").startswith("data:image/svg+xml")
    a.evaluate("window.__setHidden(false)")
    expect(a).to_have_title("#General · Kaiwa")

    # A direct message while General is open (the tab visible): notified too.
    b.locator(f"li[data-room='{dm.slug}'] a").click()
    expect(b.locator("#room-title")).to_have_text("alice")
    send(b, "a word in private")
    a.wait_for_function("() => window.__notes.length === 2")
    assert a.evaluate("window.__notes[1]") == {"title": "bob", "body": "a word in private"}
    expect(a.locator(f"li[data-room='{dm.slug}'] .badge")).to_have_text("1 unread message")
    a.screenshot(path=str(SCREENSHOTS / "notification-badge.png"))

    # Muting the conversation stops its notifications.
    a.locator(f"li[data-room='{dm.slug}'] a").click()
    expect(a.locator("#room-title")).to_have_text("bob")
    a.get_by_role("button", name="Mute").click()
    expect(a.locator(".chat__mute")).to_have_attribute("aria-pressed", "true")
    a.get_by_role("navigation", name="Your rooms").get_by_role("link", name="General").click()
    send(b, "muted now")
    expect(a.locator(f"li[data-room='{dm.slug}'] .badge")).to_have_text("1 unread message")
    assert a.evaluate("window.__notes.length") == 2


def test_success_message_floats_can_be_dismissed_and_fades(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """'Room “Garden” created.' floats over the chat with a Dismiss button, and fades by itself."""
    make_user("alice")
    server = start_server()
    ctx = browsers.context()
    a = browsers.page(ctx)
    login(a, server.http, "alice", "/")
    for attempt in range(2):
        name = f"Garden {attempt}"
        a.get_by_label("Name").fill(name)
        a.get_by_role("button", name="Create room").click()
        a.wait_for_url(re.compile(r"/rooms/garden-\d/$"))
        flash = a.locator(".flash-success")
        expect(flash.locator(".flash__text")).to_have_text(f"Room “{name}” created.")
        expect(a.locator(".flash-area")).to_have_css("position", "fixed")
        if attempt == 0:
            a.get_by_role("button", name="Dismiss this message").click()
            expect(flash).to_have_count(0)
            a.goto(f"{server.http}/")
        else:
            expect(flash).to_have_count(0, timeout=10_000)


def test_quick_switcher_by_keyboard_only(browsers: Browsers, login: Any, start_server: Any, make_user: Any) -> None:
    """Ctrl+K, a few letters, Enter: a room opens in place; a person's name opens the conversation with them."""
    alice, _bob = make_user("alice"), make_user("bob")
    services.room_create(name="General", slug="general", creator=alice)
    services.room_create(name="Product launch", slug="launch", creator=alice)
    server = start_server()
    a = open_room(browsers, login, server, "alice", "general")
    a.keyboard.press("Control+k")
    dialog = a.get_by_role("dialog", name="Jump to a room or person")
    expect(dialog).to_be_visible()
    expect(a.get_by_role("combobox", name="Jump to a room or person")).to_be_focused()
    a.keyboard.type("lau")
    expect(dialog.get_by_role("option").first).to_have_attribute("aria-selected", "true")
    expect(dialog.get_by_role("option").first).to_contain_text("Product launch")
    a.screenshot(path=str(SCREENSHOTS / "quick-switcher.png"))
    a.keyboard.press("Enter")
    a.wait_for_url(f"{server.http}/rooms/launch/")
    expect(dialog).to_be_hidden()
    expect(a.locator("#room-title")).to_have_text("#Product launch")

    a.keyboard.press("Control+k")
    a.keyboard.type("@bob")
    expect(dialog.get_by_role("option")).to_have_text(["@Message @bob (person)"])
    a.keyboard.press("Enter")
    expect(a.locator("#room-title")).to_have_text("bob")
    expect(a.locator("li[data-kind='dm'] .rooms__name")).to_have_text(["bob"])
    # Escape closes without doing anything, and focus goes back where it was.
    a.locator("#kaiwa-composer").focus()
    a.keyboard.press("Control+k")
    a.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(a.locator("#kaiwa-composer")).to_be_focused()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_phone_rooms_panel_shows_conversations_live(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any, scheme: str
) -> None:
    """On a phone, the Rooms panel holds the conversations too; one opened by alice appears there live."""
    alice, _bob = make_user("alice"), make_user("bob")
    services.room_create(name="General", slug="general", creator=alice)
    server = start_server()
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "color_scheme": scheme}
    b = open_room(browsers, login, server, "bob", "general", **phone)
    a = open_room(browsers, login, server, "alice", "general")
    a.get_by_label("Message someone").fill("bob")
    a.get_by_label("Message someone").press("Enter")
    expect(a.locator("#room-title")).to_have_text("bob")
    send(a, "on your phone?")
    expect(b.locator(".badge--toggle")).to_have_text("1")
    b.get_by_role("button", name="Rooms").click()
    link = b.get_by_role("list", name="Direct messages").get_by_role("link", name="alice (online)")
    expect(link).to_be_visible()
    expect(b.locator(".rooms")).to_be_in_viewport(ratio=1)  # the panel has finished sliding in
    b.wait_for_function("() => document.getAnimations().every(a => a.playState !== 'running')")
    b.screenshot(path=str(SCREENSHOTS / f"dm-phone-{scheme}.png"))
    link.click()
    wait_for_bodies(b, ["on your phone?"])
    expect(b.locator(".rooms")).not_to_be_in_viewport()


def test_people_panel_lists_members_and_who_is_here(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """A private room's panel: who has it open under Online, the other members under 'Members not here'."""
    alice, bob, _carol = make_user("alice"), make_user("bob"), make_user("carol")
    plans = services.room_create(name="Plans", slug="plans", private=True, creator=alice)
    services.room_member_add(room=plans, user=bob)
    services.room_member_add(room=plans, user=_carol)
    services.room_create(name="General", slug="general", creator=alice)
    server = start_server()
    a = open_room(browsers, login, server, "alice", "plans")
    b = open_room(browsers, login, server, "bob", "general")
    expect(a.locator(".presence__list .presence__name")).to_have_text(["alice"])
    expect(a.locator(".presence__title--away")).to_have_text("Members not here — 2")
    expect(a.locator(".presence__away .presence__name")).to_have_text(["bob", "carol"])
    b.get_by_role("navigation", name="Your rooms").get_by_role("link", name="Plans").click()
    expect(a.locator(".presence__list .presence__name")).to_have_text(["alice", "bob"])
    expect(a.locator(".presence__away .presence__name")).to_have_text(["carol"])
    # A public room has no member list: anyone may join it.
    a.get_by_role("navigation", name="Your rooms").get_by_role("link", name="General").click()
    expect(a.locator(".presence__title--away")).to_be_hidden()


def test_a_room_opened_in_place_brings_its_own_mentions_rights_and_empty_state(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """Opened in place, a room offers its own people for "@", its own moderation and "Members" link (for its
    creator), and a room with no messages says so; going back restores the first room's."""
    alice, bob, carol, dave = make_user("alice"), make_user("bob"), make_user("carol"), make_user("dave")
    general = services.room_create(name="General", slug="general", creator=bob)
    add_messages(general, 1, author=bob, body="bob in general")
    add_messages(general, 1, author=carol, start=2, body="carol in general")
    plans = services.room_create(name="Plans", slug="plans", private=True, creator=alice)
    services.room_member_add(room=plans, user=dave)
    add_messages(plans, 1, author=dave, body="dave in plans")
    services.room_create(name="Quiet", slug="quiet", creator=bob)
    server = start_server()
    a = open_room(browsers, login, server, "alice", "general")
    nav = a.get_by_role("navigation", name="Your rooms")
    tools = a.locator(".chat__tools")
    mentions = a.locator(".chat-composer__mentions [role='option']")

    def offered() -> None:
        a.locator(COMPOSER).press_sequentially("@")
        expect(mentions.first).to_be_visible()

    offered()
    expect(mentions).to_have_text(["@bob", "@carol"])
    a.press(COMPOSER, "Escape")
    a.fill(COMPOSER, "")
    expect(tools.get_by_role("link", name="Members")).to_have_count(0)
    a.locator(".chat__list li.msg").first.hover()
    expect(a.locator(".chat__list li.msg").first.get_by_role("button", name="Delete")).to_have_count(0)

    # Plans is alice's private room: its members for "@", its "Members" page, and she moderates it.
    nav.get_by_role("link", name="Plans").click()
    wait_for_bodies(a, ["dave in plans"])
    expect(tools.get_by_role("link", name="Members")).to_have_attribute("href", "/rooms/plans/members/")
    offered()
    expect(mentions).to_have_text(["@dave"])
    a.press(COMPOSER, "Escape")
    a.fill(COMPOSER, "")
    a.locator(".chat__list li.msg").first.hover()
    expect(a.locator(".chat__list li.msg").first.get_by_role("button", name="Delete")).to_be_visible()

    # Quiet was never opened and has no messages: it says it is loading (its history is held back
    # here), then that it is empty; it is bob's, so no "Members" link.
    held: list[Any] = []
    a.route("**/api/rooms/quiet/messages*", lambda route: held.append(route))
    nav.get_by_role("link", name="Quiet").click()
    a.wait_for_url(f"{server.http}/rooms/quiet/")
    expect(a.locator(".chat__empty")).to_have_text("Loading messages…")
    expect(a.locator(".chat__list")).to_have_attribute("aria-busy", "true")
    a.wait_for_function("() => true")  # let Playwright dispatch the held request to the handler
    assert len(held) == 1
    held[0].continue_()
    expect(a.locator(".chat__empty")).to_have_text("No messages yet. Say hello!")
    expect(a.locator(".chat__empty")).to_be_visible()
    expect(a.locator(".chat__list")).not_to_have_attribute("aria-busy", "true")
    expect(tools.get_by_role("link", name="Members")).to_have_count(0)

    a.go_back()
    a.go_back()
    a.wait_for_url(f"{server.http}/rooms/general/")
    expect(a.locator(".chat__empty")).to_be_hidden()
    expect(tools.get_by_role("link", name="Members")).to_have_count(0)
    offered()
    expect(mentions).to_have_text(["@bob", "@carol"])
    a.locator(".chat__list li.msg").first.hover()
    expect(a.locator(".chat__list li.msg").first.get_by_role("button", name="Delete")).to_have_count(0)


def test_rooms_changed_while_disconnected_appear_after_the_reconnect(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """Room events sent while the server was down are lost; the page reads the room list again on reconnect."""
    alice, bob = make_user("alice"), make_user("bob")
    services.room_create(name="General", slug="general", creator=alice)
    gone = services.room_create(name="Old plans", slug="old-plans", private=True, creator=alice, members=[bob])
    server = start_server()
    b = open_room(browsers, login, server, "bob", "general")
    nav = b.get_by_role("navigation", name="Your rooms")
    expect(nav.get_by_role("link", name="Old plans")).to_be_visible()
    server.terminate()
    expect(b.locator(".conn")).not_to_have_attribute("data-state", "connected")
    in_thread(lambda: services.room_create(name="Garden", slug="garden", creator=alice))
    in_thread(lambda: services.room_member_remove(room=gone, user=bob))
    start_server(port=server.port)
    expect(b.locator(".conn")).to_have_attribute("data-state", "connected", timeout=40_000)
    expect(nav.get_by_role("link", name="Garden")).to_be_visible()
    expect(nav.get_by_role("link", name="Old plans")).to_have_count(0)
