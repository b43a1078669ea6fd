"""A real Redis Cluster for tests: three primaries, three replicas, from Debian's Redis 7.

Built on the helpers of tests/redis_topology.py (free ports, a temporary
directory, no persistence unless asked, children that die with the test
process, waits that poll against a deadline).
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass, field

from tests.redis_server import free_port
from tests.redis_topology import (
    CLUSTER_NODE_TIMEOUT_MS,
    FAILOVER_WAIT,
    HOST,
    SETTLE_TIMEOUT,
    RedisNode,
    Topology,
    TopologyError,
    _info,
    _server_args,
    binary,
    wait_until,
)


@dataclass
class ClusterTopology:
    """Three primaries with one replica each, all slots assigned."""

    topology: Topology
    nodes: list[RedisNode]
    killed: list[RedisNode] = field(default_factory=list)

    @property
    def seeds(self) -> list[tuple[str, int]]:
        return [n.address for n in self.nodes]

    @property
    def url(self) -> str:
        """``REDIS_URL`` with every node as a seed."""
        return "redis://" + ",".join(f"{h}:{p}" for h, p in self.seeds) + "/0"

    def env(self) -> dict[str, str]:
        return {"KAIWA_REDIS_MODE": "cluster", "REDIS_URL": self.url}

    def live(self) -> list[RedisNode]:
        return [n for n in self.nodes if n.alive]

    def node_by_port(self, port: int) -> RedisNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def _node_id(self, node: RedisNode) -> str:
        with contextlib.closing(node.client()) as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def owner_of_slot(self, slot: int) -> RedisNode:
        """The master serving ``slot``, as a live node sees the cluster now."""
        with contextlib.closing(self.live()[0].client()) as client:
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return self.node_by_port(int(master[1]))
        raise TopologyError(f"slot {slot} is not covered")

    def primaries(self) -> list[RedisNode]:
        return [n for n in self.live() if _info(n, "replication").get("role") == "master"]

    def replica_of(self, primary: RedisNode) -> RedisNode:
        for node in self.live():
            info = _info(node, "replication")
            if info.get("role") == "slave" and info.get("master_port") == primary.port:
                return node
        raise TopologyError(f"{primary.name} has no live replica")

    def wait_settled(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Until every live node reports cluster_state:ok with all 16384 slots ok,
        every live replica's link is up, and all live nodes agree on who serves each slot."""

        def settled() -> bool:
            views = set()
            for node in self.live():
                with contextlib.closing(node.client()) as client:
                    info = client.execute_command("CLUSTER", "INFO").decode()
                    fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
                    if fields.get("cluster_state") != "ok" or fields.get("cluster_slots_ok") != "16384":
                        return False
                    slots = client.execute_command("CLUSTER", "SLOTS")
                    views.add(tuple(sorted((s, e, int(m[1])) for s, e, m, *_ in slots)))
                replication = _info(node, "replication")
                if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                    return False
            return len(views) == 1

        wait_until(settled, timeout=timeout, what="the cluster settling", log=self.topology.directory)

    def kill_primary_of(self, slot: int) -> RedisNode:
        """kill -9 the master serving ``slot``; returns the dead node."""
        primary = self.owner_of_slot(slot)
        primary.kill()
        self.killed.append(primary)
        return primary

    def wait_for_failover(self, old: RedisNode, slot: int, timeout: float = FAILOVER_WAIT) -> RedisNode:
        """Until a live node other than ``old`` serves ``slot`` and the cluster is ok again."""

        def promoted() -> RedisNode | None:
            owner = self.owner_of_slot(slot)
            return None if owner is old else owner

        new = wait_until(promoted, timeout=timeout, what=f"a failover away from {old.name}", log=old.log)
        self.wait_settled(timeout=timeout)
        return new

    def move_slot(self, slot: int, target: RedisNode) -> None:
        """Migrate ``slot`` and its keys to ``target`` the way redis-cli --cluster reshard does."""
        source = self.owner_of_slot(slot)
        if source is target:
            return
        source_id, target_id = self._node_id(source), self._node_id(target)
        with contextlib.closing(source.client()) as src, contextlib.closing(target.client()) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", HOST, target.port, "", 0, 5000, "KEYS", *keys)
            for node in (target, source, *[n for n in self.primaries() if n not in (source, target)]):
                with contextlib.closing(node.client()) as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        self.wait_settled()


def start_cluster_topology(*, appendonly: bool = False) -> ClusterTopology:
    """Start six nodes, ``redis-cli --cluster create`` them, wait until settled; the caller closes it."""
    topology = Topology("kaiwa-test-cluster-")
    try:
        nodes = []
        for i in range(6):
            name = f"node-{i}"
            port = free_port()
            node = topology._node(
                name,
                _server_args(
                    name,
                    port,
                    topology.directory,
                    appendonly=appendonly,
                    extra=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", f"{name}-nodes.conf",
                        "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
                        # The bus port defaults to port + 10000, which may be taken.
                        "--cluster-port", str(free_port()),
                        # A replica may always take over: the test decides what was lost.
                        "--cluster-replica-validity-factor", "0",
                    ],
                ),
            )  # fmt: skip
            node.start()
            nodes.append(node)
        create = subprocess.run(
            [
                binary("redis-cli"),
                "--cluster", "create", *[f"{HOST}:{n.port}" for n in nodes],
                "--cluster-replicas", "1", "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=SETTLE_TIMEOUT,
            check=False,
        )  # fmt: skip
        if create.returncode != 0:
            raise TopologyError(f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}")
        cluster = ClusterTopology(topology=topology, nodes=nodes)
        cluster.wait_settled()
        return cluster
    except BaseException:
        topology.close()
        raise
