"""One bench run: start each server per profile, run its scenarios, collect the results."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench import ackreplicas, rising, storms, uploads
from bench import scenarios as sc
from bench.nodefleet import ensure_installed, node_version, ws_version
from bench.procs import QUIET_BUSY_PERCENT, ROOT, Pinning, pin_self, plan_pinning, raise_nofile
from bench.servers import KINDS, WS_IMPL, Profile, Target, postgres_available, start_target

Scenario = Callable[[Target, sc.Config, Callable[[str], None]], Awaitable[Any]]

SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "calibration": ("calibration (load generator ceiling)", rising.calibration),
    "idle": ("idle connections", sc.idle),
    "storm": ("connect storm", storms.storm),
    "restart": ("reconnect storm: server restarted under load", storms.restart),
    "fanout": ("fan-out", rising.fanout),
    "many_rooms": ("many rooms", rising.many_rooms),
    "slow": ("slow readers, 1 KB", sc.slow_small),
    "payload_default": ("payload sweep, default limits", sc.payload),
    "payload_large": ("payload sweep, raised limits", sc.payload),
    "slow_large": ("slow readers, 1 MB", sc.slow_large),
    "persist_sqlite": ("persistence, SQLite", sc.persistence),
    "persist_postgres": ("persistence, PostgreSQL", sc.persistence),
    "ack_replicas": ("acks waiting for a replica (KAIWA_ACK_REPLICAS 0 vs 1)", ackreplicas.scenario),
    "uploads": ("phone photos: uploads while a room chats / base64 frames", uploads.scenario),
}


@dataclass
class Session:
    """One server process (and its Redis and database) and the scenarios run against it."""

    kind: str
    profile: Profile
    scenarios: list[str]
    sessions_needed: int


def plan(cfg: sc.Config, servers: list[str], only: set[str] | None, pg_ok: bool) -> list[Session]:
    """The run's sessions (one server process each), in three groups.

    First the rising-rate scenarios of every server (calibration, fan-out, many
    rooms), so the run budget (``cfg.run_budget_s``) can never cut one of them
    short because another server's storms or uploads took long; then the
    scenarios that measure something else (idle memory, storms, the restart,
    slow readers, payloads, uploads), each server's storms in a process of their
    own so a storm's aftermath is not measured as fan-out; the raised-limits
    and persistence runs last.
    """

    def want(name: str) -> bool:
        return only is None or name in only

    rising: list[Session] = []
    middle: list[Session] = []
    late: list[Session] = []
    throughput = [s for s in ("fanout", "many_rooms") if want(s)]
    small = max(200, cfg.slow_conns, cfg.payload_receivers + 1, cfg.fanout_conns, cfg.many_rooms * cfg.many_conns)
    for kind in servers:
        if kind == "echo":
            if want("calibration"):
                rising.append(Session("echo", Profile("default"), ["calibration"], 0))
            continue
        if KINDS[kind].ws != WS_IMPL:
            # Kaiwa on uvicorn's other WebSocket implementations: the throughput scenarios only.
            if cfg.mode == "full" and throughput:
                rising.append(Session(kind, Profile("default"), throughput, small))
            continue
        if cfg.mode == "quick":
            # A quick run saves server starts: one process per server, SQLite persistence last on it.
            main = ["idle", "storm", "fanout", "many_rooms", "slow"]
            if KINDS[kind].resumes:
                main.insert(2, "restart")
            if kind != "relay":
                main.append("payload_default")
            if kind in ("kaiwa", "channels"):
                main += ["uploads", "persist_sqlite"]
            if kind == "relay":
                main = ["fanout"]
            main = [s for s in main if want(s)]
            if main:
                fresh = cfg.idle_conns + cfg.storm_conns + 10 if "idle" in main else cfg.storm_conns + 10
                middle.append(Session(kind, Profile("default"), main, max(fresh, small)))
        else:
            if throughput:
                rising.append(Session(kind, Profile("default"), throughput, small))
            if want("idle"):
                # 10,000 sockets: a server that runs out of file descriptors there
                # must not carry the damage into other scenarios.
                middle.append(Session(kind, Profile("default"), ["idle"], cfg.idle_conns + 110))
            storms = [s for s in ("storm", "restart") if want(s) and (s != "restart" or KINDS[kind].resumes)]
            if storms:
                middle.append(Session(kind, Profile("default"), storms, cfg.storm_conns + 10))
            rest = [s for s in ("slow", "payload_default", "uploads") if want(s)]
            rest = [s for s in rest if (s != "payload_default" or kind != "relay")]
            rest = [s for s in rest if (s != "uploads" or kind in ("kaiwa", "channels"))]
            if rest:
                middle.append(Session(kind, Profile("default"), rest, small))
        large = [s for s in ("payload_large", "slow_large") if want(s)]
        if cfg.mode == "quick" and kind == "relay":
            large = []
        if large:
            late.append(Session(kind, Profile("large"), large, max(small, cfg.slow_large_conns)))
        if kind in ("kaiwa", "channels") and cfg.mode == "full":
            if want("persist_sqlite"):
                late.append(Session(kind, Profile("default", "sqlite"), ["persist_sqlite"], 20))
            if want("persist_postgres") and pg_ok:
                late.append(Session(kind, Profile("default", "postgres"), ["persist_postgres"], 20))
        elif kind in ("kaiwa", "channels") and want("persist_postgres") and pg_ok:
            late.append(Session(kind, Profile("default", "postgres"), ["persist_postgres"], 20))
    return rising + middle + late


class Progress:
    """A one-line progress bar on stderr (plain text when stderr is not a terminal)."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.done = 0
        self.label = ""
        self.detail = ""
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._task: asyncio.Task[None] | None = None

    def _line(self) -> str:
        width = 24
        filled = int(width * self.done / self.total)
        el = int(time.monotonic() - self.t0)
        bar = "#" * filled + "-" * (width - filled)
        return f"[{bar}] {self.done}/{self.total} {el // 60}m{el % 60:02d}s  {self.label}  {self.detail}"

    def draw(self) -> None:
        line = self._line()
        if self.tty:
            cols = shutil.get_terminal_size((100, 20)).columns
            sys.stderr.write("\r" + line[: cols - 1].ljust(cols - 1))
            sys.stderr.flush()

    def phase(self, label: str) -> None:
        self.label = label
        self.detail = ""
        if not self.tty:
            print(self._line(), file=sys.stderr, flush=True)
        self.draw()

    def note(self, detail: str) -> None:
        self.detail = detail
        # Plain logs get one line per step, not one per connection opened ("12/2000 open").
        if not self.tty and not re.match(r"^\d+/\d+", detail):
            print("    " + self._line(), file=sys.stderr, flush=True)

    def advance(self) -> None:
        self.done += 1
        self.draw()

    def message(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * (shutil.get_terminal_size((100, 20)).columns - 1) + "\r")
        print(text, file=sys.stderr, flush=True)
        self.draw()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self.draw()

    def start(self) -> None:
        if self.tty:
            self._task = asyncio.get_running_loop().create_task(self._tick())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.tty:
            sys.stderr.write("\n")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def busy_percent(seconds: float = 2.0) -> float:
    """How busy the whole machine is, in % of all its cores, over a short sample (before anything starts)."""
    before = psutil.cpu_times()
    time.sleep(seconds)
    after = psutil.cpu_times()
    spent = {f: getattr(after, f) - getattr(before, f) for f in after._fields}
    total = sum(spent.values())
    idle = spent.get("idle", 0.0) + spent.get("iowait", 0.0)
    return round(100 * (total - idle) / total, 1) if total > 0 else 0.0


def machine(pinning: Pinning, nofile: tuple[int, int]) -> dict[str, Any]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = "?"
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_bytes": psutil.virtual_memory().total,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            d: _version(d)
            for d in ("uvicorn", "websockets", "Django", "fastapi", "starlette", "channels", "channels-redis", "redis")
        },
        "pinning": pinning.describe(),
        "nofile_limit": list(nofile),
        "node": node_version(),
        "node_ws": ws_version(),
        "uvicorn_ws": WS_IMPL,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        # Another job on the machine (a test run, a second bench) makes every
        # server look slower; the report says so rather than print such figures plainly.
        "busy_before_percent": busy_percent(),
        "git_commit": commit,
    }


async def run(cfg: sc.Config, servers: list[str], only: set[str] | None) -> dict[str, Any]:
    pinning = plan_pinning()
    pin_self(pinning)
    nofile = raise_nofile()
    await asyncio.to_thread(ensure_installed)
    pg_problem = postgres_available()
    sessions = plan(cfg, servers, only, pg_problem is None)
    total = sum(1 + len(s.scenarios) for s in sessions)
    progress = Progress(total)
    progress.start()
    results: dict[str, Any] = {
        "meta": {
            "mode": cfg.mode,
            "servers": servers,
            "only": sorted(only) if only else None,
            "partial": only is not None or set(servers) != set(KINDS),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(pinning, nofile),
            "config": {k: v for k, v in vars(cfg).items()},
            "postgres": "available" if pg_problem is None else f"unreachable, PostgreSQL runs skipped: {pg_problem}",
            "kaiwa_env": {},
        },
        "scenarios": {},
        "errors": [],
    }
    busy = results["meta"]["machine"]["busy_before_percent"]
    if busy > QUIET_BUSY_PERCENT:
        progress.message(f"WARNING: {busy}% of the machine's cores were busy before the run: the figures will be low")
    from bench.servers import BENCH_KAIWA_ENV, BENCH_KAIWA_LARGE_ENV

    results["meta"]["kaiwa_env"] = {"all": BENCH_KAIWA_ENV, "raised limits": BENCH_KAIWA_LARGE_ENV}
    t_start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="kaiwa-bench-"))
    redis_version = None
    try:
        for session in sessions:
            label = f"{KINDS[session.kind].label} [{session.profile.name}, {session.profile.db}]"
            progress.phase(f"starting {label}")
            try:
                target = await asyncio.to_thread(
                    start_target,
                    session.kind,
                    session.profile,
                    workdir=workdir,
                    pinning=pinning,
                    sessions=session.sessions_needed,
                    rooms=cfg.rooms(),
                )
            except Exception as exc:  # HarnessError, or e.g. a PostgreSQL that refuses CREATE DATABASE
                msg = f"{label}: could not start: {type(exc).__name__}: {exc}"
                results["errors"].append(msg)
                progress.message("ERROR " + msg)
                for name in session.scenarios:
                    results["scenarios"].setdefault(name, {})[session.kind] = {"error": f"server did not start: {exc}"}
                progress.advance()
                progress.done += len(session.scenarios)
                continue
            progress.advance()
            if redis_version is None and target.redis is not None:
                redis_version = target.redis.version()
                results["meta"]["machine"]["redis"] = f"{redis_version} ({target.redis.binary})"
            try:
                for name in session.scenarios:
                    title, fn = SCENARIOS[name]
                    progress.phase(f"{KINDS[session.kind].label}: {title}")
                    t0 = time.monotonic()
                    try:
                        async with asyncio.timeout(cfg.scenario_timeout_s):
                            value = await fn(target, cfg, progress.note)
                        entry = {"result": value, "seconds": round(time.monotonic() - t0, 1)}
                    except Exception as exc:
                        tb = traceback.format_exc(limit=6)
                        entry = {"error": f"{type(exc).__name__}: {exc}", "traceback": tb}
                        results["errors"].append(f"{session.kind} / {name}: {type(exc).__name__}: {exc}")
                        progress.message(f"ERROR {session.kind} / {name}: {exc}")
                    results["scenarios"].setdefault(name, {})[session.kind] = entry
                    progress.advance()
                    if not target.alive():
                        results["errors"].append(f"{session.kind} died:\n{target.process.log_tail()}")
                        break
            finally:
                log_tail = target.process.log_tail(40)
                log_errors = target.process.log_errors()
                await asyncio.to_thread(target.stop)
                name = f"{session.kind}-{session.profile.name}-{session.profile.db}"
                results.setdefault("server_logs", {})[name] = log_tail
                if log_errors:
                    results.setdefault("server_errors", {})[name] = log_errors
    finally:
        progress.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["duration_s"] = round(time.monotonic() - t_start, 1)
    results["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return results
