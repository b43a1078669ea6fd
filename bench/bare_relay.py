"""The bare relay: what a chat server costs with none of Kaiwa's guarantees.

A Starlette WebSocket endpoint on uvicorn, Redis pub/sub, no authentication,
no persistence, no bounded queues: each process has one pub/sub reader that
``await``s ``send_text`` to each local member of the room in turn -- the
natural design. The only thing added is a per-room ``seq`` so the load
generator can check order: a two-line Lua script increments the room's
counter and publishes the frame in one step, so publish order is seq order.

    uvicorn bench.bare_relay:app --port 8766 --ws-per-message-deflate false
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

PREFIX = "relay:room:"
USER = {"id": 0, "username": "relay"}

# KEYS: counter, channel  ARGV: frame prefix, frame suffix
_PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', KEYS[2], ARGV[1] .. seq .. ARGV[2])
return seq
"""

members: dict[str, set[WebSocket]] = {}
state: dict[str, object] = {}


async def _reader(client: aioredis.Redis) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe(PREFIX + "*")
    try:
        while True:
            msg = await pubsub.get_message(timeout=None)
            if msg is None:
                continue
            room = msg["channel"].decode()[len(PREFIX) :]
            data = msg["data"].decode()
            for ws in list(members.get(room, ())):
                with contextlib.suppress(Exception):
                    await ws.send_text(data)
    finally:
        await pubsub.aclose()


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = aioredis.Redis.from_url(url, socket_timeout=None, max_connections=1000)
    state["client"] = client
    state["publish"] = client.register_script(_PUBLISH)
    reader = asyncio.create_task(_reader(aioredis.Redis.from_url(url, socket_timeout=None)))
    try:
        yield
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await client.aclose()


async def endpoint(ws: WebSocket) -> None:
    await ws.accept()
    joined: set[str] = set()
    publish = state["publish"]
    try:
        while True:
            frame = json.loads(await ws.receive_text())
            kind = frame.get("type")
            if kind == "join":
                room = str(frame["room"])
                members.setdefault(room, set()).add(ws)
                joined.add(room)
                await ws.send_text(
                    json.dumps({"type": "joined", "room": room, "last_seq": 0, "presence": [], "reset": False})
                )
            elif kind == "send":
                room = str(frame["room"])
                cid = frame.get("client_id")
                ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                head = json.dumps({"type": "message", "room": room})[:-1] + ', "seq": '
                tail = ", " + json.dumps({"ts": ts, "user": USER, "body": frame.get("body", ""), "client_id": cid})[1:]
                seq = await publish(keys=[PREFIX + "seq:" + room, PREFIX + room], args=[head, tail])  # type: ignore[operator]
                await ws.send_text(json.dumps({"type": "ack", "room": room, "client_id": cid, "seq": seq, "ts": ts}))
            elif kind == "ping":
                await ws.send_text('{"type": "pong"}')
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        for room in joined:
            members.get(room, set()).discard(ws)


app = Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)
