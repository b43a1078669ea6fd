"""What ``KAIWA_ACK_REPLICAS=1`` costs (a replica on the same machine), beside 0 (protocol.md 7.2).

One sender sends ``messages`` messages at ``rate`` per second (each with a
``client_id``) into a room where ``receivers`` sockets listen. Measured: ack
latency (send -> ``ack``), fan-out latency (send -> each receiver's
``message``), both p50/p99, and deliveries per second. The same server is run
with 0, then, after a replica of its Redis is started and the server restarted
with ``KAIWA_ACK_REPLICAS=1``, with 1.

Standalone: ``python -m bench.ackreplicas [--receivers 50 --messages 400 --rate 200]``
(starts its own Kaiwa server and Redis through ``bench.servers.start_target``).
As a harness scenario, ``scenario(target, cfg, log)`` runs against a Kaiwa
target (registered in ``bench.runner.SCENARIOS`` as ``ack_replicas``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import websockets
from websockets.typing import Origin

from bench.procs import free_port, plan_pinning, redis_binary
from bench.servers import Profile, Target, start_target

ROOM = "bench-acks"
WAIT = 60.0


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000, 2)


class Replica:
    """A redis-server replicating the target's Redis, on the same machine (and cores)."""

    def __init__(self, primary_port: int, directory: Path) -> None:
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                "--dir", str(directory), "--logfile", str(directory / "replica.log"),
                "--replicaof", "127.0.0.1", str(primary_port),
            ],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=2)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    if client.info("replication").get("master_link_status") == "up":
                        break
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"the replica did not sync; see {directory / 'replica.log'}")
                time.sleep(0.05)  # polling a child process's start, not a measurement
        finally:
            client.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


async def measure(
    url: str, origin: str, cookies: list[str | None], *, receivers: int, messages: int, rate: float, tag: str
) -> dict[str, Any]:
    """One run: ``cookies[0]`` sends, the next ``receivers`` listen."""

    async def open_joined(cookie: str | None) -> Any:
        headers = {"Cookie": cookie} if cookie else {}
        ws = await websockets.connect(url, additional_headers=headers, origin=Origin(origin), max_size=None)
        await ws.send(json.dumps({"type": "join", "room": ROOM}))
        while json.loads(await ws.recv())["type"] != "joined":
            pass
        return ws

    sender = await open_joined(cookies[0])
    listeners = [await open_joined(c) for c in cookies[1 : receivers + 1]]
    sent_at: dict[str, float] = {}
    acks: list[float] = []
    fanout: list[float] = []
    refused = 0

    async def listen(ws: Any, count: int) -> None:
        got = 0
        while got < count:
            frame = json.loads(await ws.recv())
            if frame["type"] == "message" and frame.get("client_id") in sent_at:
                fanout.append(time.perf_counter() - sent_at[frame["client_id"]])
                got += 1

    async def read_acks() -> None:
        nonlocal refused
        done = 0
        while done < messages:
            frame = json.loads(await sender.recv())
            if frame["type"] == "ack":
                acks.append(time.perf_counter() - sent_at[frame["client_id"]])
                done += 1
            elif frame["type"] == "error":
                refused += 1
                done += 1

    readers = [asyncio.create_task(listen(ws, messages)) for ws in listeners]
    ack_reader = asyncio.create_task(read_acks())
    started = time.perf_counter()
    for i in range(messages):
        # Paced sends at a fixed offered rate (open loop), not synchronisation.
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        cid = f"{tag}-{i}"  # unique per run: the same client_id again would be acked as a duplicate
        sent_at[cid] = time.perf_counter()
        await sender.send(json.dumps({"type": "send", "room": ROOM, "body": f"message {i}", "client_id": cid}))
    async with asyncio.timeout(WAIT):
        await ack_reader
        await asyncio.gather(*readers)
    elapsed = time.perf_counter() - started
    for ws in [sender, *listeners]:
        await ws.close()
    return {
        "messages": messages,
        "receivers": receivers,
        "offered_rate": rate,
        "refused": refused,
        "ack_p50_ms": _pct(acks, 0.5),
        "ack_p99_ms": _pct(acks, 0.99),
        "fanout_p50_ms": _pct(fanout, 0.5),
        "fanout_p99_ms": _pct(fanout, 0.99),
        "deliveries_per_s": round(len(fanout) / elapsed, 1),
    }


async def scenario(target: Target, cfg: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """Harness entry: ``KAIWA_ACK_REPLICAS`` 0, then 1 with a replica of the target's Redis; restores the target."""
    assert target.redis is not None, "ack_replicas needs a Kaiwa target with its own Redis"
    receivers = int(getattr(cfg, "ack_receivers", 50))
    messages = int(getattr(cfg, "ack_messages", 400))
    rate = float(getattr(cfg, "ack_rate", 200))
    cookies = target.reuse_cookies(receivers + 1)
    url = f"ws://127.0.0.1:{target.port}/ws"
    out: dict[str, Any] = {}
    log("ack_replicas: KAIWA_ACK_REPLICAS=0")
    # A short unmeasured run first: the room's first subscription and the pools' connections are not the cost.
    await measure(url, target.origin, cookies, receivers=receivers, messages=50, rate=rate, tag="w0")
    out["0"] = await measure(url, target.origin, cookies, receivers=receivers, messages=messages, rate=rate, tag="r0")
    replica = Replica(target.redis.port, target.workdir / "replica")
    previous = target.env.get("KAIWA_ACK_REPLICAS")
    try:
        target.env["KAIWA_ACK_REPLICAS"] = "1"
        await asyncio.to_thread(target.restart)
        log("ack_replicas: KAIWA_ACK_REPLICAS=1 (replica on the same machine)")
        await measure(url, target.origin, cookies, receivers=receivers, messages=50, rate=rate, tag="w1")
        out["1"] = await measure(
            url, target.origin, cookies, receivers=receivers, messages=messages, rate=rate, tag="r1"
        )
    finally:
        if previous is None:
            target.env.pop("KAIWA_ACK_REPLICAS", None)
        else:
            target.env["KAIWA_ACK_REPLICAS"] = previous
        await asyncio.to_thread(target.restart)
        replica.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ackreplicas", description=__doc__.splitlines()[0])
    parser.add_argument("--receivers", type=int, default=50)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args(argv)
    cfg = argparse.Namespace(ack_receivers=args.receivers, ack_messages=args.messages, ack_rate=args.rate)
    with tempfile.TemporaryDirectory(prefix="kaiwa-bench-acks-") as tmp:
        target = start_target(
            "kaiwa",
            Profile("default"),
            workdir=Path(tmp),
            pinning=plan_pinning(),
            sessions=args.receivers + 1,
            rooms=[ROOM],
        )
        try:
            result = asyncio.run(scenario(target, cfg, lambda line: print(line, file=sys.stderr)))
        finally:
            target.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
