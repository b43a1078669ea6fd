"""Who is in a room, across every server process.

Each room has a sorted set of ``<process id>|<user id>|<username>`` members
scored by their expiry time (ms, Redis clock). Every process refreshes its own
entries every third of ``KAIWA_PRESENCE_TTL_SECONDS``; entries of a process
that crashed expire, and whoever sweeps first publishes the ``leave``. The
scripts publish ``join`` only for a user's first entry in the room and
``leave`` only when their last one goes, atomically, so two processes can
never both announce the same user.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from typing import Any, Protocol

import redis.asyncio as aioredis

from chat.clusterlog import is_cluster, sharded_script
from chat.events import PRESENCE_LEAVE_ARGS, presence_event
from chat.logkeys import channel, room_tag
from chat.scriptbatch import ScriptBatch

# Shared Lua: does any live member other than ARGV-member belong to uid?
_HELPERS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function uid_of(member)
  local first = string.find(member, '|', 1, true)
  local second = string.find(member, '|', first + 1, true)
  return string.sub(member, first + 1, second - 1)
end
local function others_live(key, except, uid, now)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, '(' .. now, '+inf')) do
    if m ~= except and uid_of(m) == uid then return true end
  end
  return false
end
"""

# KEYS: zset, channel   ARGV: member, ttl_ms, uid, event
_JOIN = (
    _HELPERS
    + """
local now = now_ms()
local first = not others_live(KEYS[1], ARGV[1], ARGV[3], now)
local previous = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
if first and (not previous or tonumber(previous) <= now) then
  redis.call('PUBLISH', KEYS[2], ARGV[4])
  return 1
end
return 0
"""
)

# KEYS: zset, channel   ARGV: member, uid, event
_LEAVE = (
    _HELPERS
    + """
local now = now_ms()
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 and not others_live(KEYS[1], ARGV[1], ARGV[2], now) then
  redis.call('PUBLISH', KEYS[2], ARGV[3])
  return 1
end
return 0
"""
)

# KEYS: zset, channel   ARGV: the leave event's names (chat.events.PRESENCE_LEAVE_ARGS): kind key, kind,
#                             event key, 'leave', user id key, username key
# Removes expired members, publishes leave for users now gone.
_SWEEP = (
    _HELPERS
    + """
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local announced = {}
local n = 0
for _, m in ipairs(expired) do
  local uid = uid_of(m)
  if not announced[uid] and not others_live(KEYS[1], m, uid, now) then
    announced[uid] = true
    local second = string.find(m, '|', string.find(m, '|', 1, true) + 1, true)
    local event = {}
    event[ARGV[1]] = ARGV[2]
    event[ARGV[3]] = ARGV[4]
    event[ARGV[5]] = tonumber(uid)
    event[ARGV[6]] = string.sub(m, second + 1)
    redis.call('PUBLISH', KEYS[2], cjson.encode(event))
    n = n + 1
  end
end
return n
"""
)

# KEYS: zset   ARGV: ttl_ms, member...
# Pushes the expiry of the members that exist (a leave racing with the refresh
# stays a leave); returns the 1-based positions in ARGV[2..] of those missing.
_REFRESH = (
    _HELPERS
    + """
local ttl = tonumber(ARGV[1])
local expiry = now_ms() + ttl
local missing = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i])
  else
    missing[#missing + 1] = i - 1
  end
end
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return missing
"""
)

# How many members one refresh call carries: it runs atomically in Redis, so a
# process with thousands of users in one room must not hold Redis that long.
REFRESH_CHUNK = 500

# KEYS: zset   ARGV: -
_LIST = (
    _HELPERS
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_ms(), '+inf')
"""
)


def process_id() -> str:
    """This process's name in presence entries: unique per host, process and start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def presence_key(room_id: int) -> str:
    return f"{room_tag(room_id)}:presence"


class Presence(Protocol):
    """Who is in a room across processes: ``RedisPresence``, or ``MemoryPresence`` in-process.

    ``join`` and ``leave`` publish a presence event (``chat.events``) on the
    room's channel for a user's first entry and last one, exactly once.
    """

    async def join(self, *, room_id: int, user_id: int, username: str) -> bool: ...

    async def leave(self, *, room_id: int, user_id: int, username: str) -> bool: ...

    async def members(self, *, room_id: int) -> list[dict[str, Any]]: ...

    async def refresh(self, entries: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]: ...

    async def sweep(self, room_ids: list[int]) -> int: ...


class _Batch(ScriptBatch):
    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.lists: dict[int, asyncio.Future[Any]] = {}  # room id -> its member list in the pending batch

    def on_flush(self) -> None:
        self.lists = {}


class RedisPresence:
    def __init__(self, client: aioredis.Redis, *, process_id: str, ttl_seconds: float) -> None:
        self.client = client
        self.process_id = process_id
        self.ttl_ms = int(ttl_seconds * 1000)
        # Joins, leaves and member lists of one loop iteration (a reconnect
        # storm makes thousands) go out as one pipeline, and a room's list once.
        self._batch = _Batch(client)
        # On a cluster the events go out on the room's sharded channel (SPUBLISH), as the messages do.
        shard = sharded_script if is_cluster(client) else str
        self._join = client.register_script(shard(_JOIN))
        self._leave = client.register_script(shard(_LEAVE))
        self._sweep = client.register_script(shard(_SWEEP))
        self._list = client.register_script(_LIST)
        self._refresh = client.register_script(_REFRESH)

    def _member(self, user_id: int, username: str) -> str:
        return f"{self.process_id}|{user_id}|{username}"

    async def join(self, *, room_id: int, user_id: int, username: str) -> bool:
        """Record this process's user in the room; publishes ``join`` if they were nowhere else."""
        keys = [presence_key(room_id), channel(room_id)]
        args: list[Any] = [
            self._member(user_id, username),
            self.ttl_ms,
            user_id,
            presence_event("join", user_id=user_id, username=username),
        ]
        return bool(await self._batch.call(self._join, keys, args))

    async def leave(self, *, room_id: int, user_id: int, username: str) -> bool:
        keys = [presence_key(room_id), channel(room_id)]
        args: list[Any] = [
            self._member(user_id, username),
            user_id,
            presence_event("leave", user_id=user_id, username=username),
        ]
        return bool(await self._batch.call(self._leave, keys, args))

    async def members(self, *, room_id: int) -> list[dict[str, Any]]:
        """The users present in the room on any process, by username, each once."""
        users: dict[int, str] = {}
        listed = self._batch.lists.get(room_id)
        if listed is None or listed.cancelled():
            listed = self._batch.enqueue(self._list, [presence_key(room_id)], [])
        if listed is None:
            raw_members = await self._list(keys=[presence_key(room_id)])
        else:
            self._batch.lists[room_id] = listed
            raw_members = await asyncio.shield(listed)  # shared by this room's lists in the batch
        for raw in raw_members:
            _, uid, username = (raw.decode() if isinstance(raw, bytes) else raw).split("|", 2)
            users[int(uid)] = username
        return [{"id": uid, "username": name} for uid, name in sorted(users.items(), key=lambda u: (u[1], u[0]))]

    async def refresh(self, entries: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
        """Push the expiry of this process's ``(room_id, user_id, username)`` entries forward.

        Only existing entries are updated, so a leave racing with the refresh
        is not undone; the entries that were missing (swept during an outage,
        or a Redis that lost its data) are returned for a fresh ``join``.
        One script call per room (per ``REFRESH_CHUNK`` members), batched
        with the loop iteration's other calls: three commands per entry cost
        the event loop 8% of a 10,000-client reconnect storm (py-spy).
        """
        if not entries:
            return []
        by_room: dict[int, list[tuple[int, int, str]]] = {}
        for entry in entries:
            by_room.setdefault(entry[0], []).append(entry)
        calls: list[list[tuple[int, int, str]]] = []
        pending = []
        for room_id, room_entries in by_room.items():
            for start in range(0, len(room_entries), REFRESH_CHUNK):
                chunk = room_entries[start : start + REFRESH_CHUNK]
                members = [self._member(user_id, username) for _, user_id, username in chunk]
                pending.append(self._batch.call(self._refresh, [presence_key(room_id)], [self.ttl_ms, *members]))
                calls.append(chunk)
        # One batch (one pipeline) on a single Redis; a cluster client calls each directly.
        answers = await asyncio.gather(*pending)
        return [chunk[int(i) - 1] for chunk, missing in zip(calls, answers, strict=True) for i in missing]

    async def sweep(self, room_ids: list[int]) -> int:
        """Drop expired entries (crashed processes) and announce the users who are gone."""
        total = 0
        for room_id in room_ids:
            total += int(
                await self._sweep(keys=[presence_key(room_id), channel(room_id)], args=list(PRESENCE_LEAVE_ARGS))
            )
        return total
