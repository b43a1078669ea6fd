"""pytest fixtures for the real Redis topologies of tests/redis_topology.py.

A test module that uses them says ``pytest_plugins = ["tests.redis_topology_fixtures"]``.
The module-scoped ones are shared by a module's tests that leave the topology as
they found it; the ``fresh_`` ones are a test's own, for killing and moving
things. Teardown kills every process and removes the directory even when the
test failed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_cluster_topology import ClusterTopology, start_cluster_topology
from tests.redis_topology import SentinelTopology, start_sentinel_topology


@pytest.fixture(scope="module")
def sentinel_topology() -> Iterator[SentinelTopology]:
    """A primary, a replica and three Sentinels, shared by a module's tests that do not break it."""
    deployment = start_sentinel_topology()
    try:
        yield deployment
    finally:
        deployment.topology.close()


@pytest.fixture
def fresh_sentinel_topology() -> Iterator[SentinelTopology]:
    """A Sentinel deployment of the test's own, for tests that kill or restart nodes."""
    deployment = start_sentinel_topology()
    try:
        yield deployment
    finally:
        deployment.topology.close()


@pytest.fixture(scope="module")
def cluster_topology() -> Iterator[ClusterTopology]:
    """A six-node Redis Cluster, shared by a module's tests that do not break it."""
    cluster = start_cluster_topology()
    try:
        yield cluster
    finally:
        cluster.topology.close()


@pytest.fixture
def fresh_cluster_topology() -> Iterator[ClusterTopology]:
    """A Redis Cluster of the test's own, for tests that kill nodes or move slots."""
    cluster = start_cluster_topology()
    try:
        yield cluster
    finally:
        cluster.topology.close()
