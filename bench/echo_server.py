"""The calibration server: the cheapest thing that speaks Kaiwa's frames.

Plain ``websockets`` (no ASGI, no Redis, no auth, no database): rooms live in
a dict, each room has an in-process ``seq`` counter, and a message frame is
serialised once and written to every member with ``broadcast()``, which does
not wait for any socket. What the load generator measures against it is the
ceiling of the load generator itself on this machine.

    python -m bench.echo_server --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime

from websockets.asyncio.server import ServerConnection, broadcast, serve

USER = {"id": 0, "username": "echo"}


class Hub:
    def __init__(self) -> None:
        self.rooms: dict[str, set[ServerConnection]] = {}
        self.seq: dict[str, int] = {}

    async def handler(self, ws: ServerConnection) -> None:
        joined: set[str] = set()
        try:
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                    kind = frame["type"]
                except (ValueError, KeyError, TypeError):
                    await ws.send(
                        json.dumps({"type": "error", "code": "bad_request", "message": "bad frame", "ref": None})
                    )
                    continue
                if kind == "join":
                    room = str(frame["room"])
                    self.rooms.setdefault(room, set()).add(ws)
                    joined.add(room)
                    last = self.seq.get(room, 0)
                    await ws.send(
                        json.dumps({"type": "joined", "room": room, "last_seq": last, "presence": [], "reset": False})
                    )
                elif kind == "send":
                    room = str(frame["room"])
                    if room not in joined:
                        await ws.send(
                            json.dumps(
                                {
                                    "type": "error",
                                    "code": "not_joined",
                                    "message": "join first",
                                    "ref": frame.get("client_id"),
                                }
                            )
                        )
                        continue
                    seq = self.seq.get(room, 0) + 1
                    self.seq[room] = seq
                    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                    cid = frame.get("client_id")
                    message = json.dumps(
                        {
                            "type": "message",
                            "room": room,
                            "seq": seq,
                            "ts": ts,
                            "user": USER,
                            "body": frame.get("body", ""),
                            "client_id": cid,
                        }
                    )
                    broadcast(self.rooms[room], message)
                    await ws.send(json.dumps({"type": "ack", "room": room, "client_id": cid, "seq": seq, "ts": ts}))
                elif kind == "leave":
                    room = str(frame["room"])
                    self.rooms.get(room, set()).discard(ws)
                    joined.discard(room)
                    await ws.send(json.dumps({"type": "left", "room": room}))
                elif kind == "ping":
                    await ws.send('{"type":"pong"}')
        finally:
            for room in joined:
                self.rooms.get(room, set()).discard(ws)


async def amain(host: str, port: int, max_size: int) -> None:
    hub = Hub()
    async with serve(hub.handler, host, port, compression=None, max_size=max_size, ping_interval=None) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-size", type=int, default=16 * 1024 * 1024)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(amain(args.host, args.port, args.max_size))
    except ImportError:
        asyncio.run(amain(args.host, args.port, args.max_size))


if __name__ == "__main__":
    main()
