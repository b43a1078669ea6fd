"""Two Kaiwa processes on a three-primary Redis Cluster against two on one Redis, over many rooms.

    .venv/bin/python -m bench.cluster_bench [--rooms 100] [--rates 200,600] [--seconds 5]

For each deployment: a fresh SQLite database (migrated, users, sessions and
rooms made by ``bench.provision``), a fresh Redis (one ``redis-server``, or a
six-node cluster from tests/redis_cluster_topology.py: three primaries, three
replicas), and two uvicorn Kaiwa processes. Every room gets two members on each
process; one member per room sends at ``rate / rooms`` messages/s for
``--seconds``. Reported per offered rate: acks and deliveries per second (every
``message`` frame any member received), messages lost (acked, not received by
a member), and the Redis CPU each primary used in the window with the number
of rooms whose slot it owns. On a cluster the rooms spread over the primaries
and so does their CPU; the sizing rule is messages/s per Redis node.

A benchmark, not a test: on a 2-core machine the two Kaiwa processes, six
Redis nodes and this load generator share the cores, so the figures show where
the work goes (the spread, the cost of a cluster hop) and not how far a cluster
scales (docs/performance.md says what they can and cannot show).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.redis_cluster_topology import ClusterTopology, start_cluster_topology  # noqa: E402
from tests.redis_server import free_port  # noqa: E402

KAIWA_ENV = {
    "KAIWA_RATE_BURST": "1000000",
    "KAIWA_RATE_PER_SECOND": "1000000",
    "KAIWA_FRAME_RATE_BURST": "1000000",
    "KAIWA_FRAME_RATE_PER_SECOND": "1000000",
    "KAIWA_LOG_LEVEL": "WARNING",
    "DEBUG": "1",
}


@dataclass
class Member:
    ws: Any
    room: str
    received: set[str] = field(default_factory=set)
    acked: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    closed: int | None = None  # the server's close code, if it closed this member (1013: too slow a reader)


def _run(cmd: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _wait_port(port: int, deadline: float) -> None:
    import socket

    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def _single_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str, list[tuple[str, int]]]:
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    _wait_port(port, time.monotonic() + 10)
    return proc, f"redis://127.0.0.1:{port}/0", [("127.0.0.1", port)]


def _cpu(addresses: list[tuple[str, int]]) -> dict[int, float]:
    out = {}
    for host, port in addresses:
        with contextlib.closing(redis.Redis(host=host, port=port)) as r:
            info = r.info("cpu")
            out[port] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return out


def _rooms_per_node(topology: ClusterTopology | None, room_ids: list[int], port: int) -> dict[int, int]:
    if topology is None:
        return {port: len(room_ids)}
    from redis.crc import key_slot

    counts: dict[int, int] = {}
    for rid in room_ids:
        owner = topology.owner_of_slot(key_slot(f"kaiwa:{{r:{rid}}}:seq".encode()))
        counts[owner.port] = counts.get(owner.port, 0) + 1
    return counts


async def _reader(member: Member) -> None:
    try:
        async for raw in member.ws:
            frame = json.loads(raw)
            if frame["type"] == "message":
                member.received.add(frame["client_id"])
            elif frame["type"] == "ack":
                member.acked[frame["client_id"]] = frame["seq"]
            elif frame["type"] == "error":
                what = f"{frame['code']} ({'join' if frame.get('ref') == 'join' else 'send'})"
                member.errors[what] = member.errors.get(what, 0) + 1
    except websockets.ConnectionClosed as closed:
        member.closed = closed.rcvd.code if closed.rcvd else -1


async def _load(ports: list[int], cookies: list[str], slugs: list[str], rates: list[int], seconds: float) -> Any:
    members: list[Member] = []
    for i, slug in enumerate(slugs):
        for j in range(4):  # two members on each process
            cookie = cookies[4 * i + j]
            ws = await websockets.connect(
                f"ws://127.0.0.1:{ports[j % 2]}/ws",
                additional_headers={"Cookie": f"sessionid={cookie}"},
                origin=f"http://127.0.0.1:{ports[j % 2]}",  # type: ignore[arg-type]
                open_timeout=30,
                max_queue=None,
            )
            await ws.send(json.dumps({"type": "join", "room": slug}))
            members.append(Member(ws, slug))
    readers = [asyncio.create_task(_reader(m)) for m in members]
    await asyncio.sleep(1.0)
    senders = members[::4]
    results = []
    yield ("start", 0)
    await asyncio.sleep(3.0)
    yield ("idle", {})
    for rate in rates:
        per_room = rate / len(slugs)
        n = max(1, int(per_room * seconds))
        started = time.monotonic()
        yield ("start", rate)
        for k in range(n):
            for s_i, sender in enumerate(senders):
                frame = {"type": "send", "room": sender.room, "body": "x" * 40, "client_id": f"{rate}-{s_i}-{k}"}
                await sender.ws.send(json.dumps(frame))
            await asyncio.sleep(max(0.0, started + (k + 1) / per_room - time.monotonic()))
        sent_s = time.monotonic() - started
        prefix = f"{rate}-"
        # The last deliveries arrive: wait until the count stops growing (at most 15 s).
        count, drain_until = -1, time.monotonic() + 15
        while time.monotonic() < drain_until:
            now = sum(len(m.received) for m in members)
            if now == count:
                break
            count = now
            await asyncio.sleep(1.0)
        acked_by_room = {s.room: {c for c in s.acked if c.startswith(prefix)} for s in senders}
        acked = sum(len(v) for v in acked_by_room.values())
        deliveries = sum(1 for m in members for cid in m.received if cid.startswith(prefix))
        lost = sum(len(acked_by_room[m.room] - m.received) for m in members)
        results.append(
            {
                "offered_per_s": rate,
                "acked_per_s": round(acked / sent_s, 1),
                "deliveries_per_s": round(deliveries / sent_s, 1),
                "lost": lost,  # acked, and a member of the room never got it
                "members_closed_by_server": sum(1 for m in members if m.closed is not None),
                "refused": {code: sum(s.errors.get(code, 0) for s in senders) for code in _codes(senders)},
                "window_s": round(sent_s, 2),
            }
        )
        yield ("done", results[-1])
    for m in members:
        await m.ws.close()
    for task in readers:
        task.cancel()


def _codes(senders: list[Member]) -> set[str]:
    return {code for s in senders for code in s.errors}


def run_deployment(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    wd = workdir / name
    wd.mkdir()
    topology: ClusterTopology | None = None
    single: subprocess.Popen[bytes] | None = None
    servers: list[subprocess.Popen[bytes]] = []
    try:
        if name == "cluster":
            topology = start_cluster_topology()
            redis_env = topology.env()
            primaries = [n.address for n in topology.primaries()]
        else:
            single, url, primaries = _single_redis(wd)
            redis_env = {"REDIS_URL": url, "KAIWA_REDIS_MODE": "single"}
        env = {**os.environ, **KAIWA_ENV, **redis_env, "DATABASE_URL": f"sqlite:///{wd / 'db.sqlite3'}"}
        env.pop("KAIWA_EMBEDDED_REDIS_SOCKET", None)
        _run([sys.executable, "manage.py", "migrate", "--noinput"], env)
        slugs = [f"cl-{i}" for i in range(args.rooms)]
        out = _run(
            [sys.executable, "-m", "bench.provision", "sessions", "--count", str(4 * args.rooms),
             "--prefix", f"cl-{name}", "--rooms", ",".join(slugs), "--room-model", "chat.Room"],
            env,
        )  # fmt: skip
        cookies = json.loads(out)["sessions"]
        room_ids = json.loads(
            _run([sys.executable, "manage.py", "shell", "-c",
                  "import json; from chat.models import Room; "
                  "print(json.dumps(list(Room.objects.filter(slug__startswith='cl-').values_list('pk', flat=True))))"],
                 env).strip().splitlines()[-1]
        )  # fmt: skip
        ports = [free_port(), free_port()]
        for port in ports:
            servers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "project.asgi:application",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--no-access-log",
                        "--log-level",
                        "warning",
                        "--lifespan",
                        "on",
                        "--ws",
                        "websockets-sansio",
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=(wd / f"server-{port}.log").open("w"),
                    stderr=subprocess.STDOUT,
                )
            )
        for port in ports:
            _wait_port(port, time.monotonic() + 60)
        rows: list[dict[str, Any]] = []
        idle: dict[str, float] = {}

        async def drive() -> None:
            cpu0: dict[int, float] = {}
            async for event, value in _load(ports, cookies, slugs, args.rates, args.seconds):
                if event == "start":
                    cpu0 = _cpu(primaries)
                    t0 = time.monotonic()
                elif event == "idle":
                    cpu1 = _cpu(primaries)
                    wall = time.monotonic() - t0
                    idle.update({str(p): round(100 * (cpu1[p] - cpu0[p]) / wall, 1) for p in cpu1})
                else:
                    cpu1 = _cpu(primaries)
                    wall = time.monotonic() - t0
                    value["redis_cpu_percent_by_node"] = {
                        str(p): round(100 * (cpu1[p] - cpu0[p]) / wall, 1) for p in cpu1
                    }
                    # Per message acked, over the sending window and the drain: the figure the sizing rule uses.
                    messages = max(1.0, value["acked_per_s"] * value["window_s"])
                    value["redis_cpu_us_per_message_by_node"] = {
                        str(p): round(1e6 * (cpu1[p] - cpu0[p]) / messages, 1) for p in cpu1
                    }
                    rows.append(value)

        asyncio.run(drive())
        return {
            "deployment": name,
            "rooms_by_node": {str(k): v for k, v in _rooms_per_node(topology, room_ids, primaries[0][1]).items()},
            "idle_redis_cpu_percent_by_node": idle,
            "rates": rows,
        }
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=20)
        if single is not None:
            single.terminate()
            single.wait(timeout=10)
        if topology is not None:
            topology.topology.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--rates", default="200,600", help="total messages/s offered, comma-separated steps")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep databases and server logs here")
    args = parser.parse_args(argv)
    args.rates = [int(x) for x in args.rates.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="kaiwa-cluster-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        for name in ("single", "cluster"):
            result = run_deployment(name, args, workdir)
            results.append(result)
            print(json.dumps(result), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
