"""Exact answers at the edges: a slug with a trailing newline, invalid UTF-8 (1007), the 1009 reason."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError

from chat.models import slug_validator
from tests.wsapp.conftest import Peer, session_cookie
from tests.wsapp.rawclient import OP_CLOSE, OP_TEXT, RawSocket, frame
from wsapp import schemas

TOO_BIG = re.compile(r"frame with \d+ bytes exceeds limit of 65536 bytes")


@pytest.mark.parametrize("slug", ["lobby\n", "lobby\r\n", "\nlobby"])
def test_a_slug_with_a_newline_is_malformed(slug):
    """The slug pattern matches the whole string: a final newline is not forgiven by the validator or the parser."""
    with pytest.raises(ValidationError):
        slug_validator(slug)
    with pytest.raises(schemas.BadFrame) as bad:
        schemas.parse('{"type": "join", "room": %s}' % ('"' + slug.replace("\r", "\\r").replace("\n", "\\n") + '"'))
    assert bad.value.room is None


@pytest.mark.django_db(transaction=True)
def test_join_with_a_trailing_newline_answers_bad_request(start_server, make_user, room, aio):
    """Joining "lobby\\n" while "lobby" exists is a bad_request (malformed), not not_found."""
    server = start_server()
    cookie = session_cookie(make_user("newline"))

    async def scenario() -> None:
        peer = await Peer.open(server.ws, cookie)
        await peer.send({"type": "join", "room": "lobby\n"})
        [error] = await peer.wait_for(lambda f: f["type"] == "error")
        assert error["code"] == "bad_request" and error["ref"] == "join"
        assert (await peer.join("lobby"))["type"] == "joined"

    aio(scenario())


@pytest.mark.django_db(transaction=True)
def test_invalid_utf8_closes_1007_and_logs_one_quiet_line(start_server, make_user):
    """Invalid UTF-8 in a text frame closes with 1007; the server logs one WARNING line and no traceback, each time."""
    server = start_server()
    cookie = session_cookie(make_user("garbler"))
    for _ in range(2):
        raw = RawSocket.connect(server.port, cookie)
        try:
            raw.send(frame(OP_TEXT, b'{"type": "ping", "x": "\xc3\x28"}'))
            raw.sock.settimeout(10)
            assert raw.recv_until({OP_CLOSE}).close_code == 1007
        finally:
            raw.close()
    server.wait_for_line("Invalid UTF-8")
    server.stop()
    lines = [line for line in server.lines if "Invalid UTF-8" in line]
    assert len(lines) == 2 and all(" WARNING uvicorn.error: " in line for line in lines), lines
    assert not any("Traceback" in line for line in server.lines)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("args", [[], ["--ws-max-size", "65536"]], ids=["app-limit", "uvicorn-limit"])
def test_1009_reason_is_the_same_whoever_refuses_the_frame(start_server, make_user, args):
    """Kaiwa's KAIWA_MAX_FRAME_BYTES and uvicorn's --ws-max-size close an oversized frame with the same 1009 words."""
    server = start_server(args=args)
    raw = RawSocket.connect(server.port, session_cookie(make_user("big")))
    try:
        raw.send(frame(OP_TEXT, b'"' + b"a" * 70000 + b'"'))
        raw.sock.settimeout(10)
        closing = raw.recv_until({OP_CLOSE})
    finally:
        raw.close()
    assert closing.close_code == 1009
    assert TOO_BIG.fullmatch(closing.close_reason), closing.close_reason
