"""Real Redis topologies for tests: a Sentinel-watched primary and replica (the cluster is in
tests/redis_cluster_topology.py, on the same helpers).

Built from Debian's ``redis-server`` and ``redis-sentinel`` (Redis 7: sharded
pub/sub needs it), on free loopback ports, in a temporary directory, without
RDB snapshots and (unless asked) without an AOF, so nothing from an earlier run
can come back. Every wait polls the servers against a deadline; a topology that
does not settle in time raises with the log file to read.

Children get ``PR_SET_PDEATHSIG``: if the test process dies without running
its teardown (kill -9, a pytest-timeout in thread mode), the kernel kills them
too, so no redis-server outlives the run.

The pytest fixtures are in tests/redis_topology_fixtures.py; a test module
that needs them says ``pytest_plugins = ["tests.redis_topology_fixtures"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, TimeoutError

from tests.redis_server import free_port

T = TypeVar("T")

HOST = "127.0.0.1"
SERVICE = "kaiwa"
# Short enough for a failover in a few seconds, long enough that a loaded
# 2-core CI machine does not see false failures (Sentinel's down-after, the
# cluster's node timeout).
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 4000
CLUSTER_NODE_TIMEOUT_MS = 1000
SETTLE_TIMEOUT = 30.0
FAILOVER_WAIT = 30.0


# A script that writes its key, as the append script does, and returns a value.
INCR_SCRIPT = "return redis.call('INCR', KEYS[1])"


class TopologyError(RuntimeError):
    """A topology did not reach the state a test needs in time."""


def binary(name: str) -> str:
    """Debian's Redis 7 tools (``KAIWA_TEST_REDIS_BIN_DIR`` overrides /usr/bin)."""
    directory = Path(os.environ.get("KAIWA_TEST_REDIS_BIN_DIR", "/usr/bin"))
    path = directory / name
    if not path.is_file():
        raise pytest.UsageError(
            f"{path} is missing: install Debian's redis-server and redis-sentinel "
            "(apt-get install redis-server redis-sentinel) or set KAIWA_TEST_REDIS_BIN_DIR."
        )
    return str(path)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def wait_until(check: Callable[[], T | None], *, timeout: float, what: str, log: Path | None = None) -> T:
    """Poll ``check`` until it returns something other than None/False; raise after ``timeout``.

    Errors from Redis (a node still starting, a failover in progress) count as
    "not yet".
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result is not None and result is not False:
                return result
        except (redis.RedisError, OSError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            hint = f"; see {log}" if log else ""
            cause = f" (last error: {last_error!r})" if last_error else ""
            raise TopologyError(f"{what} did not happen within {timeout:.0f} s{cause}{hint}")
        # Polling servers we started, not synchronising a test.
        time.sleep(0.05)


@dataclass
class RedisNode:
    """One redis-server or redis-sentinel child process, restartable with the same arguments."""

    name: str
    port: int
    directory: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self) -> redis.Redis:
        """A short-timeout sync client for this node (the caller closes it)."""
        return redis.Redis(host=HOST, port=self.port, socket_connect_timeout=1, socket_timeout=2)

    def start(self, timeout: float = SETTLE_TIMEOUT) -> None:
        self.process = subprocess.Popen(
            self.args,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        wait_until(self._answers, timeout=timeout, what=f"{self.name} answering PING", log=self.log)

    def _answers(self) -> bool:
        if not self.alive:
            raise TopologyError(f"{self.name} exited with code {self.process and self.process.returncode}")
        with contextlib.closing(self.client()) as client:
            return bool(client.ping())

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to write, hand over or say goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _server_args(node_name: str, port: int, directory: Path, *, appendonly: bool, extra: list[str]) -> list[str]:
    return [
        binary("redis-server"),
        "--port", str(port),
        "--bind", HOST,
        "--dir", str(directory),
        "--logfile", str(directory / f"{node_name}.log"),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfilename", f"{node_name}.aof",
        "--appenddirname", f"{node_name}-aof",
        "--dbfilename", f"{node_name}.rdb",
        # A replica's first sync starts at once instead of after 5 s.
        "--repl-diskless-sync", "yes",
        "--repl-diskless-sync-delay", "0",
        "--repl-ping-replica-period", "1",
        *extra,
    ]  # fmt: skip


def _info(node: RedisNode, section: str) -> dict[str, object]:
    with contextlib.closing(node.client()) as client:
        return dict(client.info(section))


class Topology:
    """Processes in one temporary directory; ``close`` kills them all and removes it."""

    def __init__(self, prefix: str) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix=prefix))
        self.nodes: list[RedisNode] = []

    def _node(self, name: str, args: list[str]) -> RedisNode:
        node = RedisNode(name=name, port=int(args[args.index("--port") + 1]), directory=self.directory, args=args)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


# Sentinel -----------------------------------------------------------------------


@dataclass
class SentinelTopology:
    """A primary, one replica and three Sentinels (quorum 2) watching service ``kaiwa``."""

    topology: Topology
    servers: list[RedisNode]
    sentinels: list[RedisNode]
    service: str = SERVICE
    killed: list[RedisNode] = field(default_factory=list)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [s.address for s in self.sentinels]

    @property
    def sentinels_setting(self) -> str:
        """The value for ``KAIWA_REDIS_SENTINELS``."""
        return ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses)

    def env(self) -> dict[str, str]:
        """Environment for a Kaiwa process using this deployment."""
        return {
            "KAIWA_REDIS_MODE": "sentinel",
            "KAIWA_REDIS_SENTINELS": self.sentinels_setting,
            "KAIWA_REDIS_SENTINEL_SERVICE": self.service,
            "REDIS_URL": "redis:///0",
        }

    def master_address(self) -> tuple[str, int] | None:
        """What a majority of the live Sentinels answer for the master, or None while they disagree."""
        answers: list[tuple[str, int]] = []
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            with contextlib.suppress(redis.RedisError), contextlib.closing(sentinel.client()) as client:
                reply = client.execute_command("SENTINEL", "get-master-addr-by-name", self.service)
                if reply:
                    answers.append((reply[0].decode(), int(reply[1])))
        for answer in answers:
            if answers.count(answer) >= 2:
                return answer
        return None

    def node_at(self, address: tuple[str, int]) -> RedisNode:
        for node in self.servers:
            if node.address == address:
                return node
        raise KeyError(address)

    @property
    def primary(self) -> RedisNode:
        address = self.master_address()
        if address is None:
            raise TopologyError("the Sentinels do not agree on a master")
        return self.node_at(address)

    @property
    def replicas(self) -> list[RedisNode]:
        primary = self.primary
        return [n for n in self.servers if n is not primary and n.alive]

    def wait_settled(self, timeout: float = SETTLE_TIMEOUT) -> RedisNode:
        """Until the Sentinels agree on a live master that sees every live replica online."""

        def settled() -> RedisNode | None:
            address = self.master_address()
            if address is None:
                return None
            primary = self.node_at(address)
            if not primary.alive or _info(primary, "replication").get("role") != "master":
                return None
            for replica in self.servers:
                if replica is primary or not replica.alive:
                    continue
                info = _info(replica, "replication")
                if info.get("master_port") != primary.port or info.get("master_link_status") != "up":
                    return None
            # Every Sentinel must know the others, or a failover cannot reach quorum.
            for sentinel in self.sentinels:
                with contextlib.closing(sentinel.client()) as client:
                    state: Any = client.sentinel_master(self.service)
                    if int(state["num-other-sentinels"]) < len(self.sentinels) - 1:
                        return None
            return primary

        return wait_until(
            settled, timeout=timeout, what="the Sentinel deployment settling", log=self.topology.directory
        )

    def kill_primary(self) -> RedisNode:
        """kill -9 the current master; returns the dead node."""
        primary = self.primary
        primary.kill()
        self.killed.append(primary)
        return primary

    def wait_for_failover(self, old: RedisNode, timeout: float = FAILOVER_WAIT) -> RedisNode:
        """Until the Sentinels name a live master other than ``old`` and it accepts writes."""

        def promoted() -> RedisNode | None:
            address = self.master_address()
            if address is None or address == old.address:
                return None
            node = self.node_at(address)
            if _info(node, "replication").get("role") != "master":
                return None
            return node

        return wait_until(promoted, timeout=timeout, what=f"a failover away from {old.name}", log=old.log)


def start_sentinel_topology(*, appendonly: bool = False) -> SentinelTopology:
    """Start the deployment and wait until a failover could succeed; the caller closes it."""
    topology = Topology("kaiwa-test-sentinel-")
    try:
        primary_port, replica_port = free_port(), free_port()
        primary = topology._node(
            "server-a", _server_args("server-a", primary_port, topology.directory, appendonly=appendonly, extra=[])
        )
        replica = topology._node(
            "server-b",
            _server_args(
                "server-b",
                replica_port,
                topology.directory,
                appendonly=appendonly,
                extra=["--replicaof", HOST, str(primary_port)],
            ),
        )
        primary.start()
        replica.start()
        sentinels = []
        for i in range(3):
            port = free_port()
            name = f"sentinel-{i}"
            config = topology.directory / f"{name}.conf"
            config.write_text(
                f"port {port}\n"
                f"bind {HOST}\n"
                f"dir {topology.directory}\n"
                f"logfile {topology.directory / (name + '.log')}\n"
                f"sentinel monitor {SERVICE} {HOST} {primary_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            sentinel = topology._node(name, [binary("redis-sentinel"), str(config), "--port", str(port)])
            sentinel.start()
            sentinels.append(sentinel)
        deployment = SentinelTopology(topology=topology, servers=[primary, replica], sentinels=sentinels)
        deployment.wait_settled()
        return deployment
    except BaseException:
        topology.close()
        raise


# Async test helpers -----------------------------------------------------------------


def run(coroutine: Coroutine[Any, Any, T], timeout: float = 40.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coroutine, timeout=timeout)

    return asyncio.run(main())


async def until_ok(call: Callable[[], Awaitable[T]], *, within: float = 20.0) -> T:
    """Retry ``call`` as a client would while a failover runs; errors after the deadline propagate."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except (RedisConnectionError, TimeoutError, ReadOnlyError):
            if time.monotonic() > deadline:
                raise
            # A client backing off between attempts during a failover, not test synchronisation.
            await asyncio.sleep(0.05)
