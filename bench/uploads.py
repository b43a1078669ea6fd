"""Phone photos over HTTP while a room chats (issue 14), and Channels' answer: the photo as base64 in a frame.

Kaiwa: ``users`` (1, 10, 50) upload a phone-size photo (JPEG, and HEIC in the
full run) back to back through ``POST /api/rooms/<slug>/attachments`` while 100
sockets in one room chat at a fixed rate. Per step: uploads/s, MB/s, the time
from the body's last byte to the answer (the picture work: thumbnail, clean
copy, storage) p50/p99, refusals by status, the chat's fan-out p99 and loss, the
server's memory (its processes and image workers) and CPU. Then one user
uploads small pictures back to back until the first 429 (the per-user budget).

Channels: the same photo base64-encoded in a ``send`` frame into a room of
``receivers``: whether it is accepted, delivered to everyone, how long it takes
and what the server's memory does.

Standalone: ``python -m bench.uploads [--full]`` (both servers, their own Redis).
As a harness scenario (``uploads`` in ``bench.runner.SCENARIOS``) it runs
against the target's kind: Kaiwa's uploads, or Channels' base64 frames.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import websockets
from PIL import Image
from websockets.typing import Origin

from bench.procs import ROOT, plan_pinning, summarize_samples
from bench.servers import Profile, Target, settled, start_target

ROOM = "uploads"
PHOTO_DIR = ROOT / "bench" / "results" / "raw" / "photos"
MB = 1_000_000
CHAT_MEMBERS = 100
CHAT_SENDERS = 10
WAIT = 60.0
# How long the bench waits for one upload's answer (a browser would wait longer; a person would not).
UPLOAD_TIMEOUT_S = 120.0


def _mb(value: int | None) -> float | None:
    return round(value / MB, 1) if value else None


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000, 1)


# ------------------------------------------------------------------ photos


def _noisy(width: int, height: int, sigma: float) -> Image.Image:
    """Sensor-like noise over a smooth picture: it compresses like a real photo, not like a flat colour."""
    noise = Image.merge("RGB", [Image.effect_noise((width, height), sigma) for _ in range(3)])
    return Image.blend(noise, Image.radial_gradient("L").resize((width, height)).convert("RGB"), 0.2)


def _encoded(image: Image.Image, fmt: str, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, quality=quality)
    return out.getvalue()


def photo(megabytes: int, fmt: str) -> Path:
    """A 4032x3024 photo (12 MP, what phones take) of about ``megabytes`` MB, cached under bench/results/raw."""
    suffix = "jpg" if fmt == "JPEG" else "heic"
    path = PHOTO_DIR / f"photo-{megabytes}mb.{suffix}"
    if path.exists():
        return path
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    PHOTO_DIR.mkdir(parents=True, exist_ok=True)
    target = megabytes * MB
    sigma = 40.0 if megabytes <= 6 else 70.0
    image = _noisy(4032, 3024, sigma)
    # HEIC encodes slowly (x265): the quality is searched on a sixteenth of the picture.
    probe = image if fmt == "JPEG" else image.crop((0, 0, 1008, 756))
    scale = 1 if fmt == "JPEG" else 16
    lo, hi = 5, 100
    while lo < hi:
        mid = (lo + hi) // 2
        if len(_encoded(probe, fmt, mid)) * scale < target:
            lo = mid + 1
        else:
            hi = mid
    path.write_bytes(_encoded(image, fmt, lo))
    return path


def small_png() -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((64, 64)).save(out, "PNG")
    return out.getvalue()


# -------------------------------------------------------------------- chat


class Chat:
    """``members`` sockets in one room; ``senders`` of them send at ``rate`` messages/s in all (open loop)."""

    def __init__(self, url: str, origin: str, cookies: list[str | None], room: str, rate: float) -> None:
        self.url, self.origin, self.cookies, self.room, self.rate = url, origin, cookies, room, rate
        self.sockets: list[Any] = []
        self.sent_at: dict[str, float] = {}
        self.latencies: list[float] = []
        self.received = 0
        self.expected = 0
        self.refused = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._sending: asyncio.Task[None] | None = None
        self._stopping = False
        self._caught_up = asyncio.Event()

    async def open(self) -> None:
        for cookie in self.cookies:
            headers = {"Cookie": cookie} if cookie else {}
            ws = await websockets.connect(
                self.url, additional_headers=headers, origin=Origin(self.origin), close_timeout=2
            )
            await ws.send(json.dumps({"type": "join", "room": self.room}))
            while json.loads(await ws.recv())["type"] != "joined":
                pass
            self.sockets.append(ws)
        self._tasks = [asyncio.create_task(self._read(ws)) for ws in self.sockets]

    async def _read(self, ws: Any) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "message" and frame.get("client_id") in self.sent_at:
                self.latencies.append(time.perf_counter() - self.sent_at[frame["client_id"]])
                self.received += 1
                if self._stopping and self.received >= self.expected:
                    self._caught_up.set()
            elif frame["type"] == "error":
                self.refused += 1

    def start(self, tag: str) -> None:
        self.latencies, self.received, self.expected, self.refused = [], 0, 0, 0
        self._stopping = False
        self._caught_up.clear()
        self._sending = asyncio.create_task(self._send(tag))

    async def _send(self, tag: str) -> None:
        started = time.perf_counter()
        i = 0
        while True:
            # Paced at a fixed offered rate (open loop), not synchronisation.
            delay = started + i / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            cid = f"{tag}-{i}"
            self.sent_at[cid] = time.perf_counter()
            self.expected += len(self.sockets)
            frame = {"type": "send", "room": self.room, "body": f"chat {i}", "client_id": cid}
            await self.sockets[i % CHAT_SENDERS].send(json.dumps(frame))
            i += 1

    async def stop(self) -> dict[str, Any]:
        """Stop sending, wait until every message reached every member (or WAIT passed): p99 and loss."""
        assert self._sending is not None
        self._sending.cancel()
        self._stopping = True
        if self.received < self.expected:
            with contextlib.suppress(TimeoutError):  # what never arrived is counted as lost
                await asyncio.wait_for(self._caught_up.wait(), timeout=WAIT)
        return {
            "chat_messages_per_s": self.rate,
            "chat_members": len(self.sockets),
            "chat_p50_ms": _pct(self.latencies, 0.5),
            "chat_p99_ms": _pct(self.latencies, 0.99),
            "chat_lost": self.expected - self.received,
            "chat_refused": self.refused,
        }

    async def close(self) -> None:
        if self._sending is not None:
            self._sending.cancel()
        for task in self._tasks:
            task.cancel()
        await _close_all(self.sockets)


async def _close_all(sockets: list[Any]) -> None:
    """Close every socket at once: one by one, a stalled server would make each wait its close timeout."""
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


# ----------------------------------------------------------------- uploads


def _multipart(name: str, data: bytes, boundary: str, mark: Callable[[], None]) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for start in range(0, len(data), 256 * 1024):
            yield data[start : start + 256 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()
        mark()

    return body()


async def upload(client: httpx.AsyncClient, slug: str, name: str, data: bytes) -> tuple[str, float, float]:
    """One upload: (status or "timeout"/"error", seconds in all, seconds from the body's last byte to the answer)."""
    boundary = secrets.token_hex(12)
    body_done = [0.0]
    started = time.perf_counter()
    try:
        response = await client.post(
            f"/api/rooms/{slug}/attachments",
            content=_multipart(name, data, boundary, lambda: body_done.__setitem__(0, time.perf_counter())),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        status = str(response.status_code)
    except httpx.TimeoutException:
        status = "timeout"  # no answer within UPLOAD_TIMEOUT_S: counted, not fatal
    except httpx.TransportError:
        status = "error"
    end = time.perf_counter()
    return status, end - started, end - (body_done[0] or started)


def _client(target: Target, cookie: str | None) -> httpx.AsyncClient:
    token = secrets.token_hex(16)  # Django accepts any 32-character secret when cookie and header agree
    cookies = f"{cookie}; csrftoken={token}" if cookie else f"csrftoken={token}"
    return httpx.AsyncClient(
        base_url=target.origin,
        headers={"Cookie": cookies, "X-CSRFToken": token},
        timeout=httpx.Timeout(UPLOAD_TIMEOUT_S),
    )


async def upload_step(target: Target, cookies: list[str | None], path: Path, seconds: float) -> dict[str, Any]:
    """``len(cookies)`` users upload ``path`` back to back for ``seconds``."""
    data = await asyncio.to_thread(path.read_bytes)
    done: list[tuple[str, float, float]] = []
    stop_at = time.perf_counter() + seconds

    async def user(cookie: str | None) -> None:
        async with _client(target, cookie) as client:
            while time.perf_counter() < stop_at:
                done.append(await upload(client, ROOM, path.name, data))

    started = time.perf_counter()
    cpu0 = target.sampler.cpu_seconds_now()
    with target.sampler.window() as samples:
        await asyncio.gather(*(user(c) for c in cookies))
    elapsed = time.perf_counter() - started
    # From CPU times (the image workers included): the sampler's per-process percentages miss new children.
    cpu = (target.sampler.cpu_seconds_now() - cpu0) / elapsed * 100
    ok = [d for d in done if d[0] == "201"]
    statuses: dict[str, int] = {}
    for status, _, _ in done:
        statuses[status] = statuses.get(status, 0) + 1
    resources = summarize_samples(samples)
    return {
        "users": len(cookies),
        "photo": path.name,
        "photo_mb": round(len(data) / MB, 2),
        "uploads": len(ok),
        "statuses": statuses,
        "uploads_per_s": round(len(ok) / elapsed, 2),
        "mb_per_s": round(len(ok) * len(data) / MB / elapsed, 1),
        "upload_p50_ms": _pct([d[1] for d in ok], 0.5),
        "upload_p99_ms": _pct([d[1] for d in ok], 0.99),
        "thumbnail_p50_ms": _pct([d[2] for d in ok], 0.5),
        "thumbnail_p99_ms": _pct([d[2] for d in ok], 0.99),
        "server_rss_max_mb": _mb(resources.get("server_rss_max")),
        # Negative when image workers were replaced during the step (their CPU time left with them).
        "server_cpu_percent": round(cpu, 1) if cpu >= 0 else None,
        "server_cores_busy_mean": resources.get("server_cores_busy_mean"),
    }


async def first_refusal(target: Target, cookie: str | None, limit: int) -> dict[str, Any]:
    """One user uploads a small picture back to back, on a server idle again: which upload is refused first, how."""
    # The 50-user steps leave photos queued for the image workers after their
    # clients stopped waiting: an upload made before they are done waits its
    # turn behind them, and would measure that queue, not the budget.
    waited = await settled(target, maximum_s=300.0)
    data = small_png()
    async with _client(target, cookie) as client:
        for n in range(1, limit + 1):
            status, _, _ = await upload(client, ROOM, "small.png", data)
            if status != "201":
                return {"accepted_before_refusal": n - 1, "status": status, "waited_for_idle_s": waited}
    return {"accepted_before_refusal": limit, "status": None, "waited_for_idle_s": waited}


async def kaiwa(target: Target, cfg: Any, log: Callable[[str], None]) -> dict[str, Any]:
    full = getattr(cfg, "mode", "quick") == "full"
    # Full: every JPEG size at 1, 10 and 50 users, every HEIC size at 10 (the run must stay near 20 minutes);
    # the 50-user steps, the longest, last.
    plan = [(photo(mb, "JPEG"), users) for mb in (3, 6, 12) for users in (1, 10)]
    plan += [(photo(mb, "HEIF"), 10) for mb in (3, 6, 12)]
    plan += [(photo(mb, "JPEG"), 50) for mb in (3, 6, 12)]
    if not full:
        plan = [(photo(3, "JPEG"), 1), (photo(3, "JPEG"), 5)]
    users_steps = sorted({users for _, users in plan})
    seconds = 10.0 if full else 2.0
    rate = 20.0
    cookies = target.reuse_cookies(CHAT_MEMBERS + max(users_steps) + 1)
    chat = Chat(f"ws://127.0.0.1:{target.port}/ws", target.origin, cookies[:CHAT_MEMBERS], ROOM, rate)
    await chat.open()
    steps: list[dict[str, Any]] = []
    skipped: list[str] = []
    began = time.monotonic()
    budget_s = float(getattr(cfg, "uploads_budget_s", 420.0 if full else 60.0))
    try:
        chat.start("idle")
        await asyncio.sleep(seconds)  # the chat alone for as long as a step: the baseline
        baseline = await chat.stop()
        for path, users in plan:
            # A step ends when its last upload does: 50 users leave 50 photos queued for the image
            # workers, minutes on a busy machine. Past the budget the rest is reported as skipped.
            if time.monotonic() - began > budget_s:
                skipped.append(f"{path.name} x {users}")
                continue
            log(f"uploads: {users} users, {path.name}")
            chat.start(f"{path.name}-{users}")
            step = await upload_step(target, cookies[CHAT_MEMBERS : CHAT_MEMBERS + users], path, seconds)
            step.update(await chat.stop())
            steps.append(step)
        refusal = await first_refusal(target, cookies[-1], 200)
    finally:
        await chat.close()
    return {"chat_alone": baseline, "steps": steps, "skipped": skipped, "first_refusal_one_user": refusal}


# ------------------------------------------------------- Channels' answer


async def channels(target: Target, cfg: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """The photo as base64 in one ``send`` frame into a room of ``receivers`` (what people do on Channels)."""
    full = getattr(cfg, "mode", "quick") == "full"
    receivers = CHAT_MEMBERS if full else 10
    sizes = [3, 6, 12] if full else [3]
    url = f"ws://127.0.0.1:{target.port}/ws"
    out: list[dict[str, Any]] = []
    for mb in sizes:
        path = photo(mb, "JPEG")
        frame = json.dumps(
            {"type": "send", "room": ROOM, "body": base64.b64encode(path.read_bytes()).decode(), "client_id": f"p{mb}"}
        )
        log(f"channels: {mb} MB photo as base64 to {receivers} receivers")
        sockets: list[Any] = []
        for cookie in target.reuse_cookies(receivers + 1):
            headers = {"Cookie": cookie} if cookie else {}
            ws = await websockets.connect(
                url, additional_headers=headers, origin=Origin(target.origin), max_size=None, close_timeout=2
            )
            await ws.send(json.dumps({"type": "join", "room": ROOM}))
            while json.loads(await ws.recv())["type"] != "joined":
                pass
            sockets.append(ws)
        sender, listeners = sockets[0], sockets[1:]
        got = 0
        close_codes: list[int | None] = []

        async def listen(ws: Any, marker: str, close_codes: list[int | None]) -> None:
            nonlocal got
            try:
                async for raw in ws:
                    # Look for the client_id near the frame's end: no need to parse megabytes of JSON.
                    if marker in raw[-200:]:
                        got += 1
                        return
            except websockets.ConnectionClosed as exc:
                close_codes.append(exc.rcvd.code if exc.rcvd else None)

        marker = f'"client_id": "p{mb}"'
        readers = [asyncio.create_task(listen(ws, marker, close_codes)) for ws in listeners]
        started = time.perf_counter()
        with target.sampler.window() as samples:
            sender_closed: int | None = None
            try:
                await sender.send(frame)
                await asyncio.wait_for(asyncio.gather(*readers), timeout=WAIT)
            except websockets.ConnectionClosed as exc:
                sender_closed = exc.rcvd.code if exc.rcvd else None
            except TimeoutError:
                pass
        elapsed = time.perf_counter() - started
        for task in readers:
            task.cancel()
        try:
            ack = json.loads(await asyncio.wait_for(sender.recv(), timeout=1)) if sender_closed is None else {}
        except (TimeoutError, websockets.ConnectionClosed) as exc:
            if isinstance(exc, websockets.ConnectionClosed):
                sender_closed = exc.rcvd.code if exc.rcvd else None
            ack = {}
        await _close_all(sockets)
        resources = summarize_samples(samples)
        out.append(
            {
                "photo_mb": round(path.stat().st_size / MB, 2),
                "frame_mb": round(len(frame) / MB, 2),
                "receivers": receivers,
                "delivered": got,
                "sender_closed": sender_closed,
                "receivers_closed": close_codes,
                "answer": ack.get("type"),
                "seconds": round(elapsed, 2),
                # None when the frame was refused before the sampler's next tick.
                "server_rss_max_mb": _mb(resources.get("server_rss_max")),
                "redis_rss_max_mb": _mb(resources.get("redis_rss_max")),
            }
        )
    return {"base64_frames": out}


async def scenario(target: Target, cfg: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """Harness entry: Kaiwa uploads over HTTP, or Channels' base64 frames, by the target's kind."""
    if target.kind.name == "channels":
        return await channels(target, cfg, log)
    return await kaiwa(target, cfg, log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.uploads", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="3, 6 and 12 MB JPEG at 1/10/50 users, HEIC at 10")
    parser.add_argument("--servers", default="kaiwa,channels")
    args = parser.parse_args(argv)
    cfg = argparse.Namespace(mode="full" if args.full else "quick")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kaiwa-bench-uploads-") as tmp:
        for kind in args.servers.split(","):
            target = start_target(
                kind, Profile("default"), workdir=Path(tmp), pinning=plan_pinning(), sessions=200, rooms=[ROOM]
            )
            try:
                results[kind] = asyncio.run(scenario(target, cfg, lambda line: print(line, file=sys.stderr)))
            finally:
                target.stop()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
