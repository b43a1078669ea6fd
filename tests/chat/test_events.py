"""The relay event codec: what is written is read back the same, for every kind."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from chat import events
from chat.events import Entry, UserSignal


def entry(**overrides: object) -> Entry:
    values: dict[str, object] = {
        "room_id": 3, "room": "lobby", "seq": 7, "ts_ms": 1_767_225_600_123, "user_id": 42,
        "username": "zoë", "body": "héllo \"quoted\" 会話", "client_id": "c-1",
    }  # fmt: skip
    values.update(overrides)
    return Entry(**values)  # type: ignore[arg-type]


def test_a_message_event_decodes_to_the_same_entry():
    """message_event (the twin's encoder, shaped like the append script's) decodes back to the entry."""
    for original in (entry(), entry(client_id=None), entry(body="")):
        assert events.decode(events.message_event(original)) == original


def test_stream_fields_decode_to_the_entry_with_the_slug_given():
    """A stream entry (id 0-<seq>, ts + the message's own fields) reads back as the entry; no slug gives room=None."""
    original = entry()
    pairs = events.message_fields(user_id=42, username="zoë", body=original.body, client_id="c-1")
    stored = {k.encode(): v.encode() for k, v in zip(pairs[::2], pairs[1::2], strict=True)}
    fields = {b"ts": str(original.ts_ms).encode(), **stored}
    assert events.entry_from_stream(3, "lobby", b"0-7", fields) == original
    assert events.entry_from_stream(3, None, "0-7", fields).room is None


def test_presence_and_typing_events_decode_to_user_signals():
    """Presence carries its event (join/leave); typing carries none; an unknown kind decodes to None."""
    assert events.decode(events.presence_event("join", user_id=5, username="ann")) == UserSignal(5, "ann", "join")
    assert events.decode(events.presence_event("leave", user_id=5, username="ann")) == UserSignal(5, "ann", "leave")
    assert events.decode(events.typing_event(user_id=5, username="ann")) == UserSignal(5, "ann")
    assert events.decode(json.dumps({"k": "zz"})) is None


def test_the_message_frame_matches_the_wire_contract():
    """Entry.frame() is protocol.md's message frame, with the ISO timestamp in milliseconds."""
    assert entry().frame() == {
        "type": "message", "room": "lobby", "seq": 7, "ts": "2026-01-01T00:00:00.123Z",
        "user": {"id": 42, "username": "zoë"}, "body": "héllo \"quoted\" 会話", "client_id": "c-1",
        "attachments": [], "reply_to": None, "mentions": [],
    }  # fmt: skip


def test_format_ts_is_iso_8601_utc_with_milliseconds_for_any_order_of_timestamps() -> None:
    """format_ts gives the wire's ISO-8601 UTC text with milliseconds, whatever second it was called for before."""
    stamps = [1_764_530_000_000, 1_764_530_000_999, 1_764_530_001_000, 1_764_530_000_001, 0, 999, 4_102_444_799_999]
    for ts_ms in stamps + stamps[::-1]:
        expected = datetime.fromtimestamp(ts_ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ts_ms % 1000:03d}Z"
        assert events.format_ts(ts_ms) == expected
    assert events.format_ts(1_764_530_001_007) == "2025-11-30T19:13:21.007Z"
