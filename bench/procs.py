"""Child processes of the bench: Redis, the servers under test, and resource sampling.

Every server runs as a real process started here, with its own Redis on a free
port and a fresh database, pinned (with ``taskset``) to other cores than the
load generator when the machine has two or more.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
# More of the machine busy than this before a run (another job competing for the cores): the report warns.
QUIET_BUSY_PERCENT = 10.0


class HarnessError(RuntimeError):
    """The bench itself failed (a server did not start, ...): exit non-zero."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- CPU pinning ------------------------------------------------------------------


@dataclass(frozen=True)
class Pinning:
    server: list[int]
    loadgen: list[int]

    @property
    def active(self) -> bool:
        return bool(self.server) and bool(self.loadgen)

    def describe(self) -> str:
        if not self.active:
            return "not pinned (one core, or taskset unavailable)"
        return f"server + its Redis on cores {self.server}, load generator on cores {self.loadgen}"


def plan_pinning() -> Pinning:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2 or shutil.which("taskset") is None:
        return Pinning([], [])
    # The load generator gets a quarter of the cores (at least one); the server
    # and its Redis the rest.
    n_gen = max(1, len(cores) // 4)
    return Pinning(server=cores[: len(cores) - n_gen], loadgen=cores[len(cores) - n_gen :])


def pin_self(pinning: Pinning) -> None:
    if pinning.active:
        os.sched_setaffinity(0, set(pinning.loadgen))


def taskset_prefix(pinning: Pinning) -> list[str]:
    if not pinning.active:
        return []
    return ["taskset", "-c", ",".join(str(c) for c in pinning.server)]


def raise_nofile() -> tuple[int, int]:
    """Raise the open-files limit (inherited by the servers) as far as allowed."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Root (or CAP_SYS_RESOURCE) may raise the hard limit too: a server that
    # holds a Redis connection per WebSocket needs two descriptors per client.
    ceiling = 1_048_576
    with contextlib.suppress(OSError, ValueError):
        ceiling = min(ceiling, int(Path("/proc/sys/fs/nr_open").read_text()))
    if hard != resource.RLIM_INFINITY and hard < ceiling:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, ceiling))
            soft, hard = ceiling, ceiling
    target = hard if hard != resource.RLIM_INFINITY else ceiling
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# -- Redis ---------------------------------------------------------------------


def redis_binary() -> str:
    from django.core.exceptions import ImproperlyConfigured

    from chat.embedded_redis import server_binary

    try:
        return server_binary()
    except ImproperlyConfigured as exc:
        raise HarnessError(str(exc)) from None


class RedisProcess:
    """A fresh redis-server on a free port, configured like production (AOF, everysec)."""

    def __init__(self, directory: Path, pinning: Pinning) -> None:
        self.directory = directory
        self.port = free_port()
        self.pinning = pinning
        self.process: subprocess.Popen[bytes] | None = None
        self.binary = redis_binary()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        cmd = [
            *taskset_prefix(self.pinning),
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxclients", "20000",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise HarnessError(f"Redis did not start; see {self.directory / 'redis.log'}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def version(self) -> str:
        client = redis.Redis(port=self.port, socket_timeout=2)
        try:
            return str(client.info("server").get("redis_version", "?"))
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


# -- servers under test ------------------------------------------------------------


@dataclass
class ServerProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_errors(self, limit: int = 60) -> str:
        """The log's ERROR and CRITICAL lines with their tracebacks (the first ``limit`` lines of them)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        kept: list[str] = []
        in_error = False
        for line in lines:
            if " ERROR " in line or " CRITICAL " in line:
                in_error = True
            elif not (
                line.startswith((" ", "\t", "Traceback")) or (in_error and line and line[0].isupper() and ":" in line)
            ):
                in_error = False
            if in_error:
                kept.append(line)
                if len(kept) >= limit:
                    break
        return "\n".join(kept)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_process(
    name: str,
    cmd: list[str],
    *,
    env: dict[str, str],
    port: int,
    log_path: Path,
    pinning: Pinning,
    ready_path: str = "/",
    timeout: float = 60.0,
) -> ServerProcess:
    """Start a server and wait until it answers TCP and HTTP on ``port``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [*taskset_prefix(pinning), *cmd],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    server = ServerProcess(name=name, port=port, process=proc, log_path=log_path)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise HarnessError(f"{name} exited with {proc.returncode} at startup:\n{server.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            break
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise HarnessError(
                    f"{name} did not listen on port {port} within {timeout} s:\n{server.log_tail()}"
                ) from None
            time.sleep(0.05)
    return server


def run_checked(cmd: list[str], *, env: dict[str, str], what: str, timeout: float = 300) -> str:
    """Run a setup command (migrate, provisioning); raise HarnessError with its output on failure."""
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{what} took longer than {timeout} s") from None
    if done.returncode != 0:
        raise HarnessError(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def python() -> str:
    return sys.executable


# -- resource sampling ---------------------------------------------------------------


TCP_SAMPLE_SECONDS = 1.0


def _tcp_queues(port: int) -> tuple[int, int, int]:
    """Bytes in the kernel send/receive queues of the server's sockets on ``port``, and their count."""
    tx = rx = n = 0
    hexport = f"{port:04X}"
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as fh:
                next(fh, None)
                for line in fh:
                    parts = line.split()
                    if len(parts) < 5 or not parts[1].endswith(":" + hexport):
                        continue
                    if parts[3] == "0A":  # LISTEN
                        continue
                    tq, rq = parts[4].split(":")
                    tx += int(tq, 16)
                    rx += int(rq, 16)
                    n += 1
        except OSError:
            continue
    return tx, rx, n


@dataclass
class Sample:
    t: float
    server_cpu: float  # percent of one core
    server_rss: int
    redis_cpu: float
    redis_rss: int
    redis_used_memory: int
    redis_clients: int
    redis_max_output_buffer: int
    sock_tx: int
    sock_rx: int
    sockets: int
    loadgen_cpu: float
    server_cores_busy: float  # % busy of the server's cores, whoever used them
    loadgen_cores_busy: float


class Sampler:
    """Samples the server, its Redis and the load generator every ``interval`` seconds in a thread."""

    def __init__(
        self,
        server_pid: int,
        redis_pid: int | None,
        redis_port: int | None,
        port: int,
        pinning: Pinning,
        interval: float = 0.5,
    ):
        self.pinning = pinning
        self.server = psutil.Process(server_pid)
        self.redis = psutil.Process(redis_pid) if redis_pid else None
        self.redis_client = redis.Redis(port=redis_port, socket_timeout=2) if redis_port else None
        self.port = port
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._me = psutil.Process()
        self._children: dict[int, psutil.Process] = {}
        self._tcp_at = -TCP_SAMPLE_SECONDS
        self._tcp = (0, 0, 0)

    def _procs(self) -> list[psutil.Process]:
        # The same Process object per pid across samples: cpu_percent(None) measures
        # since that object's previous call, so a new object would read 0 every time.
        try:
            children = self.server.children(recursive=True)
        except psutil.Error:
            return [self.server]
        alive = {child.pid for child in children}
        for pid in [pid for pid in self._children if pid not in alive]:
            del self._children[pid]
        return [self.server, *(self._children.setdefault(child.pid, child) for child in children)]

    def _sample(self) -> Sample:
        cpu = rss = 0.0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                cpu += p.cpu_percent(None)
                rss += p.memory_info().rss
        rcpu = rrss = 0.0
        used = clients = maxbuf = 0
        if self.redis is not None:
            with contextlib.suppress(psutil.Error):
                rcpu = self.redis.cpu_percent(None)
                rrss = self.redis.memory_info().rss
        if self.redis_client is not None:
            with contextlib.suppress(redis.RedisError):
                info: dict[str, Any] = self.redis_client.info()
                used = int(info.get("used_memory", 0))
                clients = int(info.get("connected_clients", 0))
                maxbuf = int(info.get("client_recent_max_output_buffer", 0))
        now = time.monotonic()
        if now - self._tcp_at >= TCP_SAMPLE_SECONDS:
            # Reading /proc/net/tcp costs the load generator's core (the kernel formats
            # every socket): measured at about 7% of it with 100 connections at 2 Hz.
            self._tcp_at = now
            self._tcp = _tcp_queues(self.port)
        tx, rx, n = self._tcp
        per_core = psutil.cpu_percent(None, percpu=True)
        all_cores = list(range(len(per_core)))
        server_cores = self.pinning.server or all_cores
        gen_cores = self.pinning.loadgen or all_cores
        return Sample(
            server_cores_busy=sum(per_core[c] for c in server_cores) / len(server_cores),
            loadgen_cores_busy=sum(per_core[c] for c in gen_cores) / len(gen_cores),
            t=time.monotonic(),
            server_cpu=cpu,
            server_rss=int(rss),
            redis_cpu=rcpu,
            redis_rss=int(rrss),
            redis_used_memory=used,
            redis_clients=clients,
            redis_max_output_buffer=maxbuf,
            sock_tx=tx,
            sock_rx=rx,
            sockets=n,
            loadgen_cpu=self._me.cpu_percent(None),
        )

    def _run(self) -> None:
        self._sample()  # primes cpu_percent
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self._sample())
            except Exception:  # a sampler must never kill a run
                continue

    def open_files_now(self) -> int:
        """File descriptors the server process holds (sockets included)."""
        try:
            return int(self.server.num_fds())
        except psutil.Error:
            return 0

    def redis_clients_now(self) -> int:
        if self.redis_client is None:
            return 0
        try:
            return int(self.redis_client.info("clients").get("connected_clients", 0))
        except redis.RedisError:
            return 0

    def cpu_seconds_now(self) -> float:
        """CPU time (user + system) the server process (and its children) used so far."""
        total = 0.0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def redis_cpu_seconds_now(self) -> float:
        if self.redis is None:
            return 0.0
        try:
            t = self.redis.cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return 0.0

    def rss_now(self) -> int:
        total = 0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def redis_used_now(self) -> int:
        if self.redis_client is None:
            return 0
        try:
            return int(self.redis_client.info("memory").get("used_memory", 0))
        except redis.RedisError:
            return 0

    @contextlib.contextmanager
    def window(self) -> Iterator[list[Sample]]:
        """Collect samples while the block runs."""
        start = len(self.samples)
        out: list[Sample] = []
        try:
            yield out
        finally:
            out.extend(self.samples[start:])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-sampler")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.redis_client is not None:
            self.redis_client.close()


def summarize_samples(samples: list[Sample]) -> dict[str, Any]:
    """Mean/max of what the sampler saw during one measured window."""
    if not samples:
        return {"samples": 0}

    def mean(xs: list[float]) -> float:
        return round(sum(xs) / len(xs), 1)

    return {
        "samples": len(samples),
        "server_cpu_mean": mean([s.server_cpu for s in samples]),
        "server_cpu_max": round(max(s.server_cpu for s in samples), 1),
        "server_rss_max": max(s.server_rss for s in samples),
        "redis_cpu_mean": mean([s.redis_cpu for s in samples]),
        "redis_cpu_max": round(max(s.redis_cpu for s in samples), 1),
        "redis_used_memory_max": max(s.redis_used_memory for s in samples),
        "redis_rss_max": max(s.redis_rss for s in samples),
        "redis_clients_max": max(s.redis_clients for s in samples),
        "redis_output_buffer_max": max(s.redis_max_output_buffer for s in samples),
        "sock_tx_max": max(s.sock_tx for s in samples),
        "sock_rx_max": max(s.sock_rx for s in samples),
        "loadgen_cpu_mean": mean([s.loadgen_cpu for s in samples]),
        "loadgen_cpu_max": round(max(s.loadgen_cpu for s in samples), 1),
        "server_cores_busy_mean": mean([s.server_cores_busy for s in samples]),
        "loadgen_cores_busy_mean": mean([s.loadgen_cores_busy for s in samples]),
    }


@dataclass
class Env:
    """Environment for a child process: the current one plus overrides."""

    overrides: dict[str, str] = field(default_factory=dict)

    def build(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.overrides)
        env["PYTHONUNBUFFERED"] = "1"
        return env
