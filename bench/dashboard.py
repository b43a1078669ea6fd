"""Feed the Grafana dashboard (docs/grafana-kaiwa.json) from a real run, then draw its panels.

    .venv/bin/python -m bench.dashboard record   # about 4 minutes: writes bench/results/dashboard-run.json
    .venv/bin/python -m bench.dashboard render   # writes docs/screenshots/dashboard.png from that file

``record`` starts Kaiwa as operators run it with several processes
(``uvicorn --workers 2``, ``KAIWA_METRICS_TOKEN``), its own Redis, and
Debian's ``prometheus`` (``apt-get install prometheus``) scraping ``/metrics``
every 2 s; it drives a scripted load (steady and burst sends, reconnects
with ``since``, refusals, a pub/sub connection killed in Redis, readers that
stop reading and get 1013, uploads), then asks Prometheus for every query of
every panel of the dashboard (``query_range``, ``$__rate_interval`` = 20 s)
and records the answers.

``render`` draws those recorded series, panel by panel, with matplotlib.
Grafana itself is not packaged by Debian, so the picture is a rendering of
the dashboard's panels from recorded Prometheus data, not a Grafana
screenshot; it says so on the image.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import redis as redis_client
import websockets

from bench.procs import Pinning, RedisProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana-kaiwa.json"
RECORDED = ROOT / "bench" / "results" / "dashboard-run.json"
PICTURE = ROOT / "docs" / "screenshots" / "dashboard.png"
TOKEN = "dashboard-run-token"
RATE_INTERVAL = "20s"
SCRAPE_SECONDS = 2
USERS = 30
ROOMS = ("r0", "r1", "r2", "r3")

_PROVISION = """
import json, django
django.setup()
from django.contrib.auth.models import User
from django.http import HttpRequest
from django.middleware.csrf import get_token
from django.test import Client
from chat import services
users = [User.objects.create_user(username=f"u{i}", password="x") for i in range(int(__import__("sys").argv[1]))]
for slug in __import__("sys").argv[2].split(","):
    services.room_create(name=slug, creator=users[0])
sessions = []
for user in users:
    client = Client()
    client.force_login(user)
    sessions.append(client.cookies["sessionid"].value)
request = HttpRequest()
masked = get_token(request)
print(json.dumps({"sessions": sessions, "csrf": [request.META["CSRF_COOKIE"], masked]}))
"""


def _env(tmp: Path, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DEBUG": "1",
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "REDIS_URL": redis_url,
        "MEDIA_ROOT": str(tmp / "media"),
        "KAIWA_METRICS_TOKEN": TOKEN,
        "KAIWA_METRICS_SAMPLE_SECONDS": "1",
        # Small queues, so the readers that stop reading reach 1013 within the run.
        "KAIWA_SEND_QUEUE_MAX_MESSAGES": "200",
        "KAIWA_RATE_BURST": "40",
        "KAIWA_RATE_PER_SECOND": "20",
        "PYTHONUNBUFFERED": "1",
    }


def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:g} s")
        time.sleep(0.2)


class Load:
    """The scripted load: every phase is bounded in time and count, on loopback only."""

    def __init__(self, ws_url: str, http_url: str, sessions: list[str], csrf: tuple[str, str]) -> None:
        self.ws_url = ws_url
        self.http_url = http_url
        self.sessions = sessions
        self.csrf = csrf
        self.clients: list[Any] = []
        self.rooms_of: dict[int, tuple[str, ...]] = {}
        self.last_seq: dict[tuple[int, str], int] = {}
        self.readers: list[asyncio.Task[None]] = []
        self.sent = 0

    async def _connect(self, i: int, *, read: bool = True) -> Any:
        options: dict[str, Any] = {}
        if not read:
            # A small receive buffer: the server's queue, not the kernel, takes what is not read.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            host, port = urllib.parse.urlsplit(self.ws_url).netloc.split(":")
            sock.connect((host, int(port)))
            sock.setblocking(False)
            options = {"sock": sock, "max_queue": 1}
        ws = await websockets.connect(
            self.ws_url, additional_headers={"Cookie": f"sessionid={self.sessions[i]}"}, open_timeout=10, **options
        )
        if read:
            self.readers.append(asyncio.create_task(self._read(i, ws)))
        return ws

    async def _read(self, i: int, ws: Any) -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") == "message":
                    self.last_seq[(i, frame["room"])] = frame["seq"]
        except websockets.ConnectionClosed:
            return

    async def _join(self, ws: Any, room: str, since: int | None = None) -> None:
        frame: dict[str, Any] = {"type": "join", "room": room}
        if since is not None:
            frame["since"] = since
        await ws.send(json.dumps(frame))

    async def start(self) -> None:
        for i in range(USERS):
            rooms = (ROOMS[i % len(ROOMS)], ROOMS[(i + 1) % len(ROOMS)])
            self.rooms_of[i] = rooms
            ws = await self._connect(i)
            for room in rooms:
                await self._join(ws, room)
            self.clients.append(ws)
            await asyncio.sleep(0.05)

    async def send_for(
        self, seconds: float, per_second: float, *, body_bytes: int = 80, room: str | None = None
    ) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            i = random.randrange(USERS)
            target = room if room in self.rooms_of[i] else random.choice(self.rooms_of[i])
            if room is not None and room not in self.rooms_of[i]:
                continue
            self.sent += 1
            frame = {"type": "send", "room": target, "body": "x" * body_bytes, "client_id": f"m{self.sent}"}
            with contextlib.suppress(websockets.ConnectionClosed):
                await self.clients[i].send(json.dumps(frame))
            await asyncio.sleep(1 / per_second)

    async def reconnect(self, count: int) -> None:
        """Close and reopen clients, rejoining with ``since``: resume joins."""
        for i in random.sample(range(USERS), count):
            await self.clients[i].close()
            ws = await self._connect(i)
            for room in self.rooms_of[i]:
                await self._join(ws, room, since=self.last_seq.get((i, room), 0))
            self.clients[i] = ws
            await asyncio.sleep(0.1)

    async def refusals(self) -> None:
        """Sends to a room not joined, and one user past the rate limit."""
        ws = self.clients[0]
        for n in range(20):
            await ws.send(json.dumps({"type": "send", "room": "nowhere", "body": "x", "client_id": f"nj{n}"}))
        for n in range(120):
            await ws.send(json.dumps({"type": "send", "room": self.rooms_of[0][0], "body": "x", "client_id": f"rl{n}"}))
        await asyncio.sleep(1)

    async def stalled_readers(self, count: int) -> list[Any]:
        """Clients in r0 that stop reading: their queues fill and the server closes them with 1013."""
        stalled = []
        for n in range(count):
            ws = await self._connect(n * 4, read=False)  # users 0, 4, 8 are members of r0
            await self._join(ws, "r0")
            stalled.append(ws)
        return stalled

    async def uploads(self, count: int) -> None:
        from tests import samplefiles

        secret, masked = self.csrf
        async with httpx.AsyncClient(base_url=self.http_url, timeout=30) as client:
            for n in range(count):
                picture = samplefiles.png_with_text((200 + n * 10, 120))
                await client.post(
                    f"/api/rooms/{ROOMS[0]}/attachments",
                    files={"file": (f"p{n}.png", picture, "image/png")},
                    headers={"Cookie": f"sessionid={self.sessions[0]}; csrftoken={secret}", "X-CSRFToken": masked},
                )
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        for ws in self.clients:
            await ws.close()
        for task in self.readers:
            task.cancel()


async def _drive(load: Load, redis_port: int) -> list[tuple[float, str]]:
    marks: list[tuple[float, str]] = []

    def mark(text: str) -> None:
        marks.append((time.time(), text))
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)

    mark("30 clients connect, each joins 2 rooms")
    await load.start()
    mark("steady: 10 messages/s")
    await load.send_for(35, 10)
    mark("burst: 60 messages/s")
    await load.send_for(20, 60)
    mark("15 clients reconnect with since")
    await load.reconnect(15)
    await load.send_for(10, 10)
    mark("refusals: not_joined and rate_limited")
    await load.refusals()
    await load.send_for(10, 10)
    mark("Redis kills the pub/sub connections: relays reconnect and repair")
    killer = redis_client.Redis(port=redis_port)
    killer.client_kill_filter(_type="pubsub")
    killer.close()
    await load.send_for(15, 10)
    mark("3 readers in r0 stop reading; 4 KB messages to r0 until 1013")
    stalled = await load.stalled_readers(3)
    # Several MB per stalled socket: the kernel's buffers take the first ones, then the server's queue.
    await load.send_for(30, 80, body_bytes=3900, room="r0")
    mark("uploads")
    await asyncio.gather(load.uploads(12), load.send_for(8, 10))
    mark("quiet: 5 messages/s")
    await load.send_for(30, 5)
    for ws in stalled:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)
    await load.close()
    mark("all clients closed")
    await asyncio.sleep(12)
    return marks


def _panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] == "timeseries"]


def _query_range(prom: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode(
        {"query": expr.replace("$__rate_interval", RATE_INTERVAL), "start": start, "end": end, "step": SCRAPE_SECONDS}
    )
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{params}", timeout=30) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def record() -> None:
    if shutil.which("prometheus") is None:
        sys.exit("prometheus is not installed: apt-get install prometheus (Debian), then run this again.")
    tmp = Path(tempfile.mkdtemp(prefix="kaiwa-dashboard-"))
    redis = RedisProcess(tmp / "redis", Pinning(server=[], loadgen=[]))
    redis.start()
    env = _env(tmp, redis.url)
    port, prom_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        made = subprocess.run(
            [sys.executable, "-c", _PROVISION, str(USERS), ",".join(ROOMS)],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        provision = json.loads(made.stdout.strip().splitlines()[-1])
        server_log = (tmp / "server.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "project.asgi:application", "--host", "127.0.0.1",
                 "--port", str(port), "--workers", "2", "--no-access-log", "--ws-per-message-deflate", "false"],
                cwd=ROOT, env=env, stdout=server_log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        _wait_http(f"http://127.0.0.1:{port}/readyz")
        (tmp / "token").write_text(TOKEN)
        (tmp / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {SCRAPE_SECONDS}s\n  scrape_timeout: {SCRAPE_SECONDS}s\n"
            "scrape_configs:\n  - job_name: kaiwa\n"
            f"    authorization:\n      credentials_file: {tmp / 'token'}\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        )
        procs.append(
            subprocess.Popen(
                ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("wb"),
            )
        )  # fmt: skip
        prom = f"http://127.0.0.1:{prom_port}"
        _wait_http(f"{prom}/-/ready")
        start = time.time()
        load = Load(f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}", provision["sessions"], provision["csrf"])
        marks = asyncio.run(_drive(load, redis.port))
        end = time.time()
        panels = []
        for panel in _panels():
            series = []
            for target in panel["targets"]:
                for result in _query_range(prom, target["expr"], start, end):
                    legend = target["legendFormat"]
                    for key, value in result["metric"].items():
                        legend = legend.replace("{{" + key + "}}", value)
                    points = [[float(t) - start, float(v)] for t, v in result["values"]]
                    series.append({"legend": legend, "points": points})
            panels.append({"title": panel["title"], "unit": panel["fieldConfig"]["defaults"]["unit"], "series": series})
        RECORDED.parent.mkdir(parents=True, exist_ok=True)
        RECORDED.write_text(
            json.dumps(
                {
                    "what": "Prometheus query_range answers for every query of docs/grafana-kaiwa.json",
                    "server": "uvicorn project.asgi:application --workers 2 (Kaiwa), scraped every 2 s",
                    "rate_interval": RATE_INTERVAL,
                    "seconds": round(end - start, 1),
                    "phases": [[round(t - start, 1), text] for t, text in marks],
                    "panels": panels,
                },
                indent=1,
            )
            + "\n"
        )
        print(f"recorded {len(panels)} panels to {RECORDED.relative_to(ROOT)}")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "record":
        record()
    elif command == "render":
        from bench.dashboardplot import render

        render(RECORDED, DASHBOARD, PICTURE)
    else:
        sys.exit("usage: python -m bench.dashboard record|render")
