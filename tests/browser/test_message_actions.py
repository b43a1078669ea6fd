"""Edit, delete, reply and mention from the room page, in real Chromium against a real server (issue #15)."""

from __future__ import annotations

from typing import Any

import pytest

from chat import services
from tests.browser.conftest import Browsers
from tests.browser.test_room_page import COMPOSER, expect, open_room, send, wait_for_bodies

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def message(page: Any, seq: int) -> Any:
    return page.locator(f".chat__list li.msg[data-seq='{seq}']")


def test_edit_reply_mention_and_delete_from_the_page(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """alice fixes a typo with ArrowUp; bob replies from the hover menu and picks @alice from the autocomplete;
    alice sees the quote (which jumps to her message) and her mention highlighted; carol, in another room,
    sees the mention counted apart; alice deletes her message after confirming, and it is gone for everyone."""
    owner = make_user("owner")
    for name in ("alice", "bob", "carol"):
        make_user(name)
    services.room_create(name="General", slug="general", creator=owner)
    services.room_create(name="Random", slug="random", creator=owner)
    server = start_server()
    a = open_room(browsers, login, server, "alice", "general")
    b = open_room(browsers, login, server, "bob", "general")
    c = open_room(browsers, login, server, "carol", "random")

    send(a, "helo wrold")
    wait_for_bodies(b, ["helo wrold"])
    # ArrowUp in the empty composer edits alice's last message.
    a.press(COMPOSER, "ArrowUp")
    expect(a.locator(COMPOSER)).to_have_value("helo wrold")
    expect(a.locator(".chat-composer__context")).to_contain_text("Editing your message")
    a.fill(COMPOSER, "hello world")
    a.press(COMPOSER, "Enter")
    wait_for_bodies(b, ["hello world"])
    expect(message(b, 1).locator(".msg__edited")).to_have_text("(edited)")
    assert (message(b, 1).locator(".msg__edited").get_attribute("title") or "").startswith("Edited ")

    # bob: hovering alice's message offers Reply only (not his message, not a moderator).
    message(b, 1).hover()
    actions = message(b, 1).locator(".msg__actions")
    expect(actions.get_by_role("button", name="Reply")).to_be_visible()
    expect(actions.get_by_role("button", name="Edit")).to_have_count(0)
    expect(actions.get_by_role("button", name="Delete")).to_have_count(0)
    actions.get_by_role("button", name="Reply").click()
    expect(b.locator(".chat-composer__context")).to_contain_text("Replying to alice: hello world")
    b.locator(COMPOSER).press_sequentially("@al")
    expect(b.locator(".chat-composer__mentions [role='option']")).to_have_text(["@alice"])
    b.press(COMPOSER, "Tab")
    b.locator(COMPOSER).press_sequentially("thanks, and @carol too")
    b.press(COMPOSER, "Enter")
    wait_for_bodies(a, ["hello world", "@alice thanks, and @carol too"])
    expect(message(a, 3).locator(".msg__quote")).to_have_text("alice: hello world")
    expect(message(a, 3)).to_have_class(lambda_has("msg--mention"))
    message(a, 3).locator(".msg__quote").click()
    expect(message(a, 1)).to_have_class(lambda_has("msg--flash"))

    # carol reads #random: #general counts one unread message, and one mention apart.
    general = c.locator(".rooms__item[data-room='general']")
    expect(general.locator(".badge--mention")).to_contain_text("@1")
    expect(general.locator(".badge:not(.badge--mention)")).to_contain_text("2")

    # alice deletes her message, after confirming on the message itself.
    message(a, 1).hover()
    message(a, 1).get_by_role("button", name="Delete").click()
    expect(message(a, 1).locator(".msg__confirm")).to_contain_text("Delete this message for everyone?")
    message(a, 1).locator("[data-action='confirm-delete']").click()
    for page in (a, b):
        expect(message(page, 1)).to_have_class(lambda_has("msg--deleted"))
        expect(message(page, 1).locator(".msg__body")).to_have_text("")
        expect(message(page, 3).locator(".msg__quote")).to_have_text("Reply to a deleted message")


def lambda_has(cls: str) -> Any:
    import re

    return re.compile(rf"(^|\s){re.escape(cls)}(\s|$)")


def test_an_edit_and_a_delete_made_while_offline_are_seen_after_resuming(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """bob's browser goes offline; alice edits one message and deletes another; when bob is back online his
    page resumes with `since` and shows the edit (marked "(edited)") and the deletion, with nothing doubled."""
    alice, _ = make_user("alice"), make_user("bob")
    services.room_create(name="General", slug="general", creator=alice)
    server = start_server()
    a = open_room(browsers, login, server, "alice", "general")
    b_ctx = browsers.context()
    b = browsers.page(b_ctx)
    login(b, server.http, "bob", "/rooms/general/")
    expect(b.locator(".conn")).to_have_attribute("data-state", "connected")
    send(a, "first")
    send(a, "second, to be deleted")
    wait_for_bodies(b, ["first", "second, to be deleted"])

    b_ctx.set_offline(True)
    expect(b.locator(".conn")).to_have_attribute("data-state", "offline", timeout=40_000)
    a.press(COMPOSER, "ArrowUp")  # the last one: "second"
    a.keyboard.press("Escape")
    message(a, 1).hover()
    message(a, 1).get_by_role("button", name="Edit").click()
    a.fill(COMPOSER, "first, edited")
    a.press(COMPOSER, "Enter")
    message(a, 2).hover()
    message(a, 2).get_by_role("button", name="Delete").click()
    message(a, 2).locator("[data-action='confirm-delete']").click()
    expect(message(a, 2)).to_have_class(lambda_has("msg--deleted"))
    expect(message(b, 1).locator(".msg__body")).to_have_text("first")  # bob has not heard yet

    b_ctx.set_offline(False)
    expect(b.locator(".conn")).to_have_attribute("data-state", "connected", timeout=40_000)
    expect(message(b, 1).locator(".msg__body")).to_have_text("first, edited")
    expect(message(b, 1).locator(".msg__edited")).to_have_count(1)
    expect(message(b, 2)).to_have_class(lambda_has("msg--deleted"))
    expect(message(b, 2).locator(".msg__body")).to_have_text("")
    expect(b.locator(".chat__list li.msg")).to_have_count(2)
    # A reload draws the same from the server's history (the current state).
    b.reload()
    expect(b.locator(".conn")).to_have_attribute("data-state", "connected")
    expect(message(b, 1).locator(".msg__body")).to_have_text("first, edited")
    expect(message(b, 1).locator(".msg__edited")).to_have_count(1)
    expect(message(b, 2)).to_have_class(lambda_has("msg--deleted"))


def test_the_admin_link_to_a_message_opens_its_room_at_it(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any
) -> None:
    """The admin's "open in room" link (chat.moderationadmin.room_url) opens the room's page that ends with
    the message, scrolled to it (the element is #m<seq>, live or server-rendered)."""
    from chat.models import Message
    from chat.moderationadmin import room_url
    from tests.browser.test_room_page import add_history

    alice = make_user("alice")
    room = services.room_create(name="General", slug="general", creator=alice)
    add_history(room, alice, [f"message {i}" for i in range(1, 121)])
    url = room_url(Message.objects.select_related("room").get(room=room, seq=37))
    server = start_server()
    page = browsers.page(browsers.context())
    login(page, server.http, "alice", "/rooms/general/")
    page.goto(f"{server.http}{url}")
    target = page.locator(".chat__list li#m37")
    expect(target.locator(".msg__body")).to_have_text("message 37")
    expect(target).to_be_in_viewport()
