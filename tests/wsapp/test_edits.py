"""Edits, deletions, replies and mentions end to end on a real server (protocol.md 7.4).

Every edit and deletion is an event with its own seq in the room's sequence:
acked, deduplicated by ``client_id``, replayed by a resume with ``since``,
stored once, and the history shows messages in their current state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.conf import settings

from chat import dms, services
from chat.models import Message, MessageKind, MessageVersion
from tests.wsapp.conftest import TIMEOUT, UNLIMITED_RATES, Peer, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def answer(peer: Peer, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a frame with a client_id and wait for its ack or error."""
    ref = frame["client_id"]
    await peer.send(frame)
    found = await peer.wait_for(lambda f: f["type"] in ("ack", "error") and f.get("client_id", f.get("ref")) == ref)
    return found[0]


async def until(check: Callable[[], Any], what: str) -> Any:
    """Poll the database (the worker writes on its own schedule) until ``check`` gives a truthy value."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            value = await asyncio.to_thread(check)
            if value:
                return value
            await asyncio.sleep(0.05)
    raise AssertionError(what)


def _history(server: Any, session: str, slug: str = "lobby") -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.http}/api/rooms/{slug}/messages", cookies={settings.SESSION_COOKIE_NAME: session}, timeout=10
    )
    assert response.status_code == 200, response.text
    return list(response.json()["messages"])


def test_edit_delete_reply_mention_and_every_refusal(start_server: Any, make_user: Any, room: Any, aio: Any) -> None:
    """alice and bob talk; a reply carries reply_to and the resolved mention; edits and deletions get their
    own seq, reach both, and dedup by client_id; every hidden corner answers as the contract says; the worker
    stores each event once and the history shows the messages' current state."""
    server = start_server(env=UNLIMITED_RATES)
    alice, bob = make_user("alice"), make_user("bob")
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)

    async def scenario() -> None:
        a = await Peer.open(server.ws, a_cookie)
        b = await Peer.open(server.ws, b_cookie)
        await a.join("lobby")
        await b.join("lobby")
        first = await answer(a, {"type": "send", "room": "lobby", "body": "helo", "client_id": "a1"})
        reply = await answer(
            b, {"type": "send", "room": "lobby", "body": "@alice hi, and @nobody", "client_id": "b1", "reply_to": 1}
        )
        assert (first["seq"], reply["seq"]) == (1, 2)
        seen = (await a.wait_for(lambda f: f["type"] == "message" and f["seq"] == 2))[0]
        assert seen["reply_to"] == 1 and seen["mentions"] == [alice.pk]
        assert (await b.wait_for(lambda f: f["type"] == "message" and f["seq"] == 1))[0]["reply_to"] is None

        edit = await answer(a, {"type": "edit", "room": "lobby", "target": 1, "body": "hello @bob", "client_id": "a2"})
        assert edit["type"] == "ack" and edit["seq"] == 3
        edited = (await b.wait_for(lambda f: f["type"] == "edited"))[0]
        assert edited == {
            "type": "edited", "room": "lobby", "seq": 3, "ts": edit["ts"], "target": 1, "body": "hello @bob",
            "mentions": [bob.pk], "user": {"id": alice.pk, "username": "alice"},
        }  # fmt: skip
        again = await answer(a, {"type": "edit", "room": "lobby", "target": 1, "body": "hello @bob", "client_id": "a2"})
        assert again["seq"] == 3  # the same client_id acks the original edit

        # bob may not edit or delete alice's message; nobody edits an event or an unknown seq.
        refusals: list[tuple[Peer, dict[str, Any], str]] = [
            (b, {"type": "edit", "room": "lobby", "target": 1, "body": "mine now", "client_id": "r1"}, "forbidden"),
            (b, {"type": "delete", "room": "lobby", "target": 1, "client_id": "r2"}, "forbidden"),
            (a, {"type": "edit", "room": "lobby", "target": 3, "body": "x", "client_id": "r3"}, "not_found"),
            (a, {"type": "edit", "room": "lobby", "target": 99, "body": "x", "client_id": "r4"}, "not_found"),
            (a, {"type": "edit", "room": "lobby", "target": 1, "body": "  ", "client_id": "r5"}, "bad_request"),
            (a, {"type": "edit", "room": "lobby", "target": 0, "body": "x", "client_id": "r6"}, "bad_request"),
            (a, {"type": "delete", "room": "lobby", "client_id": "r7"}, "bad_request"),
        ]
        for peer, frame, code in refusals:
            got = await answer(peer, frame)
            assert got["type"] == "error" and got["code"] == code, (frame, got)

        gone = await answer(b, {"type": "delete", "room": "lobby", "target": 2, "client_id": "b2"})
        assert gone["seq"] == 4
        deleted = (await a.wait_for(lambda f: f["type"] == "deleted"))[0]
        assert deleted == {
            "type": "deleted", "room": "lobby", "seq": 4, "ts": gone["ts"], "target": 2,
            "user": {"id": bob.pk, "username": "bob"},
        }  # fmt: skip
        assert (await answer(b, {"type": "delete", "room": "lobby", "target": 2, "client_id": "b2"}))["seq"] == 4
        corners = [
            {"type": "delete", "room": "lobby", "target": 2, "client_id": "b3"},  # delete twice
            {"type": "edit", "room": "lobby", "target": 2, "body": "back", "client_id": "b4"},  # edit a deleted one
            {"type": "send", "room": "lobby", "body": "re", "reply_to": 2, "client_id": "b5"},  # reply to it
        ]
        for frame in corners:
            got = await answer(b, frame)
            assert got["type"] == "error" and got["code"] == "not_found", (frame, got)
        # Nothing refused took a seq.
        assert (await answer(a, {"type": "send", "room": "lobby", "body": "next", "client_id": "a3"}))["seq"] == 5
        await a.close()
        await b.close()

    aio(scenario())

    def stored() -> bool:
        return (
            Message.objects.filter(room=room).count() == 5
            and Message.objects.filter(room=room, seq=2).exclude(deleted_at=None).exists()
        )

    try:
        aio(until(stored, "the worker stored the five events"))
    except TimeoutError:
        print("".join(server.lines)[-5000:])
        print(list(Message.objects.values_list("seq", "kind", "body", "deleted_at")))
        raise
    kinds = dict(Message.objects.filter(room=room).values_list("seq", "kind"))
    assert kinds == {1: MessageKind.MESSAGE, 2: MessageKind.MESSAGE, 3: MessageKind.EDIT, 4: MessageKind.DELETE, 5: 0}
    versions = list(MessageVersion.objects.order_by("event_seq").values_list("message__seq", "body", "deletion"))
    assert versions == [(1, "helo", False), (2, "@alice hi, and @nobody", True)]
    history = {m["seq"]: m for m in _history(server, a_cookie)}
    assert sorted(history) == [1, 2, 5]  # the events' seqs are skipped
    assert history[1]["body"] == "hello @bob" and history[1]["edited_ts"] is not None
    assert history[1]["mentions"] == [bob.pk] and history[1]["deleted"] is False
    assert history[2]["body"] == "" and history[2]["deleted"] is True and history[2]["attachments"] == []
    assert history[2]["user"]["username"] == "bob" and history[2]["reply_to"] == 1
    assert history[5]["edited_ts"] is None and history[5]["reply_to"] is None


def test_resume_replays_edits_and_deletions(start_server: Any, make_user: Any, room: Any, aio: Any) -> None:
    """bob goes offline after seq 2; alice edits and deletes meanwhile; bob's join with since=2 replays the
    edit and the deletion in seq order, and a join from 0 shows the deleted message already emptied."""
    server = start_server(env=UNLIMITED_RATES)
    alice, bob = make_user("alice"), make_user("bob")
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)

    async def scenario() -> None:
        a = await Peer.open(server.ws, a_cookie)
        await a.join("lobby")
        await answer(a, {"type": "send", "room": "lobby", "body": "one", "client_id": "a1"})
        await answer(a, {"type": "send", "room": "lobby", "body": "secret two", "client_id": "a2"})
        await answer(a, {"type": "edit", "room": "lobby", "target": 1, "body": "one!", "client_id": "a3"})
        await answer(a, {"type": "delete", "room": "lobby", "target": 2, "client_id": "a4"})
        b = await Peer.open(server.ws, b_cookie)
        joined = await b.join("lobby", since=2)
        assert joined["last_seq"] == 4
        replay = await b.wait_for(lambda f: f["type"] in ("message", "edited", "deleted"), 2)
        assert [(f["type"], f["seq"], f["target"]) for f in replay] == [("edited", 3, 1), ("deleted", 4, 2)]
        assert replay[0]["body"] == "one!"
        c = await Peer.open(server.ws, b_cookie)
        await c.join("lobby", since=0)
        full = await c.wait_for(lambda f: f["type"] in ("message", "edited", "deleted"), 4)
        assert [f["seq"] for f in full] == [1, 2, 3, 4]
        assert full[1]["body"] == "" and full[1]["deleted"] is True  # never the deleted body again
        for peer in (a, b, c):
            await peer.close()

    aio(scenario())


def test_staff_and_owner_delete_others_and_mentions_stay_inside_the_room(
    start_server: Any, make_user: Any, aio: Any
) -> None:
    """In a private room, its owner and staff may delete bob's messages, another member may not; mentioning
    carol, who is not a member, resolves to nothing (her name stays plain text)."""
    server = start_server(env=UNLIMITED_RATES)
    owner, bob, dave = make_user("owner"), make_user("bob"), make_user("dave")
    staff, carol = make_user("staff", is_staff=True), make_user("carol")
    services.room_create(name="Club", private=True, creator=owner, members=[owner, bob, dave, staff])
    cookies = {u.username: session_cookie(u) for u in (owner, bob, dave, staff)}

    async def scenario() -> None:
        peers = {name: await Peer.open(server.ws, cookie) for name, cookie in cookies.items()}
        for peer in peers.values():
            await peer.join("club")
        b = peers["bob"]
        sent = await answer(b, {"type": "send", "room": "club", "body": "hi @carol and @dave.", "client_id": "b1"})
        message = (await b.wait_for(lambda f: f["type"] == "message" and f["seq"] == sent["seq"]))[0]
        assert message["mentions"] == [dave.pk]
        await answer(b, {"type": "send", "room": "club", "body": "two", "client_id": "b2"})
        refused = await answer(peers["dave"], {"type": "delete", "room": "club", "target": 1, "client_id": "d1"})
        assert refused["code"] == "forbidden"
        assert (await answer(peers["owner"], {"type": "delete", "room": "club", "target": 1, "client_id": "o1"}))[
            "type"
        ] == "ack"
        assert (await answer(peers["staff"], {"type": "delete", "room": "club", "target": 2, "client_id": "s1"}))[
            "type"
        ] == "ack"
        # Staff and owners delete; only the author edits.
        edit = await answer(
            peers["owner"], {"type": "edit", "room": "club", "target": 1, "body": "x", "client_id": "o2"}
        )
        assert edit["code"] == "not_found"  # deleted first
        for peer in peers.values():
            await peer.close()

    aio(scenario())
    assert carol.pk not in Message.objects.values_list("mentions", flat=True)


def test_who_opened_a_direct_conversation_cannot_delete_the_other_persons_messages(
    start_server: Any, make_user: Any, aio: Any
) -> None:
    """A direct conversation has no owner: alice opened it, yet deleting bob's message there is forbidden."""
    server = start_server(env=UNLIMITED_RATES)
    alice, bob = make_user("alice"), make_user("bob")
    dm, _ = dms.dm_open(user=alice, username="bob")
    cookies = session_cookie(alice), session_cookie(bob)

    async def scenario() -> None:
        a = await Peer.open(server.ws, cookies[0])
        b = await Peer.open(server.ws, cookies[1])
        for peer in (a, b):
            await peer.join(dm.slug)
        sent = await answer(b, {"type": "send", "room": dm.slug, "body": "mine", "client_id": "b1"})
        refused = await answer(a, {"type": "delete", "room": dm.slug, "target": sent["seq"], "client_id": "a1"})
        assert refused["type"] == "error" and refused["code"] == "forbidden"
        assert (await answer(b, {"type": "delete", "room": dm.slug, "target": sent["seq"], "client_id": "b2"}))[
            "type"
        ] == "ack"
        for peer in (a, b):
            await peer.close()

    aio(scenario())


def test_edit_window(start_server: Any, make_user: Any, room: Any, aio: Any) -> None:
    """With KAIWA_EDIT_WINDOW_SECONDS, an edit of a message older than the window is forbidden (a message
    stored with an old timestamp stands in for the passing time), while deleting it stays allowed."""
    server = start_server(env={**UNLIMITED_RATES, "KAIWA_EDIT_WINDOW_SECONDS": "60"})
    alice = make_user("alice")
    from tests.chat.factories import add_messages

    add_messages(room, 1, author=alice)  # sent in 2026-11-21, long before the window
    cookie = session_cookie(alice)

    async def scenario() -> None:
        a = await Peer.open(server.ws, cookie)
        await a.join("lobby")
        late = await answer(a, {"type": "edit", "room": "lobby", "target": 1, "body": "too late", "client_id": "e1"})
        assert late["type"] == "error" and late["code"] == "forbidden"
        fresh = await answer(a, {"type": "send", "room": "lobby", "body": "new", "client_id": "e2"})
        assert (
            await answer(a, {"type": "edit", "room": "lobby", "target": fresh["seq"], "body": "ok", "client_id": "e3"})
        )["type"] == "ack"
        assert (await answer(a, {"type": "delete", "room": "lobby", "target": 1, "client_id": "e4"}))["type"] == "ack"
        await a.close()

    aio(scenario())
