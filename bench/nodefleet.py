"""The Node.js load generator (``bench/loadgen-node/loadgen.js``), driven from Python.

The Python generator (``bench/loadgen.py``) topped out near 50,000 deliveries/s
on one core, below what the servers reach; the Node one, on ``ws``, keeps the
same books (see its header) at several times that. It runs as a child process
that inherits the harness's CPU pinning (the load generator's cores) and its
raised open-files limit; commands and answers are JSON lines on its
stdin/stdout. Every answer carries the process's CPU time, so each step reports
how busy the generator itself was.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from typing import Any

from bench.procs import ROOT, HarnessError

NODE_DIR = ROOT / "bench" / "loadgen-node"
LOADGEN_JS = NODE_DIR / "loadgen.js"
ECHO_JS = NODE_DIR / "echo.js"


def node() -> str:
    found = shutil.which("node") or shutil.which("nodejs")
    if not found:
        raise HarnessError(
            "Node.js is not installed: the load generator runs on it. Install it (Debian: apt-get install nodejs npm) "
            "and run `make bench` again."
        )
    return found


def ensure_installed() -> None:
    """``npm ci`` in bench/loadgen-node when its ``ws`` dependency is missing."""
    node()
    if (NODE_DIR / "node_modules" / "ws" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if not npm:
        raise HarnessError("npm is not installed (Debian: apt-get install npm); it installs the load generator's `ws`.")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise HarnessError(f"npm ci in {NODE_DIR} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


class NodeFleet:
    """One Node load generator process and the members (connections) it holds."""

    def __init__(self, host: str, port: int, origin: str | None, *, path: str = "/ws") -> None:
        self.url = f"ws://{host}:{port}{path}"
        self.origin = origin
        self.proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.cpu_us = 0
        self.failures: dict[str, int] = {}
        self.count = 0

    async def __aenter__(self) -> NodeFleet:
        self.proc = await asyncio.create_subprocess_exec(
            node(),
            str(LOADGEN_JS),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.call("config", url=self.url, origin=self.origin)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call("close_all", grace=5), 15)
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                err = b""
                if self.proc.stderr is not None:
                    with contextlib.suppress(Exception):
                        err = await asyncio.wait_for(self.proc.stderr.read(4000), 2)
                for fut in self._waiting.values():
                    if not fut.done():
                        fut.set_exception(
                            HarnessError(f"the Node load generator exited: {err.decode(errors='replace')}")
                        )
                return
            answer = json.loads(line)
            self.cpu_us = answer.get("cpu_us", self.cpu_us)
            self.failures = answer.get("failures", self.failures)
            waiting = self._waiting.pop(int(answer.get("id") or 0), None)
            if waiting is not None and not waiting.done():
                waiting.set_result(answer)

    async def call(self, cmd: str, **kw: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        cid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = fut
        self.proc.stdin.write((json.dumps({"id": cid, "cmd": cmd, **kw}) + "\n").encode())
        await self.proc.stdin.drain()
        answer = await fut
        if not answer.get("ok"):
            raise HarnessError(f"load generator command {cmd!r} failed: {answer.get('error')}")
        return answer

    # -- the operations the scenarios use ---------------------------------------------

    async def add(
        self, cookies: list[str | None], rooms: list[list[str]], *, group: str = "normal", resume: bool = False
    ) -> list[int]:
        specs = [
            {"cookie": c, "rooms": r, "group": group, "resume": resume} for c, r in zip(cookies, rooms, strict=True)
        ]
        answer = await self.call("add", members=specs)
        first = int(answer["first"])
        self.count += len(specs)
        return list(range(first, first + len(specs)))

    async def open(self, indices: list[int], *, concurrency: int = 200, join_within: float = 30.0) -> list[float]:
        answer = await self.call("open", indices=indices, concurrency=concurrency, timeout=join_within)
        return [float(d) for d in answer["durations"]]

    async def new_step(self, label: str) -> int:
        return int((await self.call("step", label=label))["step"])

    async def send_open_loop(
        self, senders: list[tuple[int, str]], rate: float, duration: float, padding: int
    ) -> tuple[int, float]:
        answer = await self.call("send", senders=senders, rate=rate, duration=duration, padding=padding)
        return int(answer["sent"]), float(answer["worst_send_lag_ms"])

    async def drain(self, *, quiet: float, maximum: float) -> float:
        return float((await self.call("drain", quiet=quiet, maximum=maximum))["seconds"])

    async def outcome(self, step: int, groups: list[str] | None = None) -> dict[str, Any]:
        answer = await self.call("outcome", step=step, groups=groups)
        for key in ("id", "ok", "cpu_us", "failures"):
            answer.pop(key, None)
        return answer

    async def members(self, indices: list[int]) -> list[dict[str, Any]]:
        return list((await self.call("members", indices=indices))["members"])

    async def close_all(self) -> None:
        await self.call("close_all", grace=10)


class NodeCpu:
    """The Node generator's CPU over a block, in % of one core (from the CPU time it reports)."""

    def __init__(self, fleet: NodeFleet) -> None:
        self.fleet = fleet
        self.percent = 0.0

    async def __aenter__(self) -> NodeCpu:
        await self.fleet.call("ping")  # every answer carries the generator's CPU time so far
        self.cpu0 = self.fleet.cpu_us
        self.t0 = time.monotonic()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.fleet.call("ping")
        wall = max(1e-6, time.monotonic() - self.t0)
        self.percent = round(100 * (self.fleet.cpu_us - self.cpu0) / 1e6 / wall, 1)


def node_version() -> str:
    try:
        return subprocess.run([node(), "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "not installed"


def ws_version() -> str:
    try:
        return str(json.loads((NODE_DIR / "node_modules" / "ws" / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "not installed"
