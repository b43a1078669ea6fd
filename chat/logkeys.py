"""Redis key and channel names of the message log.

Every key of a room carries the hash tag ``{r:<room id>}`` so that one room
lives in one Redis Cluster slot. The append script also touches the sender's
rate bucket ``kaiwa:{u:<user id>}:rate``, another slot: see docs/protocol.md.
"""

from __future__ import annotations

GROUP = "persist"
ROOMS_KEY = "kaiwa:rooms"
CONTROL_CHANNEL = "kaiwa:control"


def room_tag(room_id: int) -> str:
    return f"kaiwa:{{r:{room_id}}}"


def seq_key(room_id: int) -> str:
    return f"{room_tag(room_id)}:seq"


def epoch_key(room_id: int) -> str:
    """The room's epoch (protocol.md 7.1): present only while its Redis state continues the database's history."""
    return f"{room_tag(room_id)}:epoch"


def stream_key(room_id: int) -> str:
    return f"{room_tag(room_id)}:log"


def gone_key(room_id: int) -> str:
    """The set of a room's deleted message seqs (edits and deletions of them are refused atomically)."""
    return f"{room_tag(room_id)}:gone"


def channel(room_id: int) -> str:
    """The pub/sub channel that carries a room's live events (``chat.events``)."""
    return f"{room_tag(room_id)}:live"


def dedup_key(room_id: int, user_id: int, token: str) -> str:
    return f"{room_tag(room_id)}:dedup:{user_id}:{token}"


def bucket_key(user_id: int) -> str:
    """A user's send rate-limit bucket, shared by every connection and process."""
    return f"kaiwa:{{u:{user_id}}}:rate"


def room_id_from_stream_key(key: str) -> int:
    # "kaiwa:{r:42}:log" -> 42
    return int(key.split("{r:", 1)[1].split("}", 1)[0])
