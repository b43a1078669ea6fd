"""join with presence: false (protocol.md 7.5): a background room gets everything but shows nobody present."""

from __future__ import annotations

import pytest

from tests.wsapp.conftest import Peer, session_cookie
from wsapp import schemas

pytestmark = pytest.mark.django_db(transaction=True)


def _presence(event: str, username: str):
    return lambda f: f["type"] == "presence" and f["event"] == event and f["user"]["username"] == username


async def _join(peer: Peer, room: str, presence: bool) -> dict:
    before = len(peer.matching(lambda f: f["type"] == "joined"))
    await peer.send({"type": "join", "room": room, "presence": presence})
    return (await peer.wait_for(lambda f: f["type"] == "joined", before + 1))[-1]


async def _pong(peer: Peer) -> None:
    """Everything the server sent this socket before answering a ping has arrived."""
    pongs = len(peer.matching(lambda f: f["type"] == "pong"))
    await peer.send({"type": "ping"})
    await peer.wait_for(lambda f: f["type"] == "pong", pongs + 1)


def test_parse_presence_flag():
    """presence defaults to true, takes booleans only, and says how to fix anything else."""
    default = schemas.parse('{"type":"join","room":"lobby"}')
    background = schemas.parse('{"type":"join","room":"lobby","presence":false}')
    assert isinstance(default, schemas.Join) and default.presence is True
    assert isinstance(background, schemas.Join) and background.presence is False
    for bad in ('"no"', "0", "null"):
        with pytest.raises(schemas.BadFrame, match="true or false"):
            schemas.parse(f'{{"type":"join","room":"lobby","presence":{bad}}}')


def test_background_join_is_not_presence_but_gets_everything(start_server, make_user, room, aio):
    """bob listening in the background is not announced nor listed; he gets messages and alice's presence events."""
    s1, s2 = start_server(), start_server()
    alice, bob = make_user("alice"), make_user("bob")
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)

    async def scenario():
        a = await Peer.open(s1.ws, a_cookie)
        background = await Peer.open(s2.ws, b_cookie)
        joined = await _join(background, "lobby", presence=False)
        assert joined["presence"] == []
        answer = await a.join("lobby")
        assert answer["presence"] == [{"id": alice.pk, "username": "alice"}]
        await background.wait_for(_presence("join", "alice"))
        ack = await a.send_message("lobby", "hello", "c1")
        assert ack["type"] == "ack"
        assert await background.wait_seqs("lobby", 1) == [1]
        # bob opens the room for real (another tab): now he is here...
        tab = await Peer.open(s1.ws, b_cookie)
        now = await tab.join("lobby")
        assert [u["username"] for u in now["presence"]] == ["alice", "bob"]
        await a.wait_for(_presence("join", "bob"))
        # ...and gone when that tab closes, although the background connection stays joined.
        await tab.close()
        await a.wait_for(_presence("leave", "bob"))
        await background.send({"type": "leave", "room": "lobby"})
        await background.wait_for(lambda f: f["type"] == "left")
        await _pong(a)
        assert len(a.matching(_presence("join", "bob"))) == 1
        assert len(a.matching(_presence("leave", "bob"))) == 1

    aio(scenario())


def test_rejoin_switches_between_present_and_background(start_server, make_user, room, aio):
    """Joining again with presence: false announces the user gone; with true again, back."""
    server = start_server()
    alice, bob = make_user("alice"), make_user("bob")
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)

    async def scenario():
        a = await Peer.open(server.ws, a_cookie)
        await a.join("lobby")
        b = await Peer.open(server.ws, b_cookie)
        await _join(b, "lobby", presence=True)
        await a.wait_for(_presence("join", "bob"))
        again = await _join(b, "lobby", presence=False)
        assert [u["username"] for u in again["presence"]] == ["alice"]
        await a.wait_for(_presence("leave", "bob"))
        await _join(b, "lobby", presence=True)
        await a.wait_for(_presence("join", "bob"), 2)
        await b.close()
        await a.wait_for(_presence("leave", "bob"), 2)

    aio(scenario())
