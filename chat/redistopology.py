"""Redis clients for the three deployments: one server, Sentinel, Cluster (``KAIWA_REDIS_MODE``).

Everything here is made from settings when a process starts, never at import.
The rules that ``chat.redisclient`` follows hold in every mode:

- No automatic retry of a command: an append that timed out after Redis ran it
  must not be sent again blindly; the caller answers ``unavailable`` and the
  client's re-send with the same ``client_id`` is deduplicated.
- Blocking readers (``XREADGROUP BLOCK``, pub/sub) get clients with no socket
  timeout: redis-py would otherwise time an idle blocking read out and re-send it.

Sentinel: the clients come from ``Sentinel.master_for``; every new connection
asks the Sentinels for the master, a connection to a demoted master is dropped
on its first ``READONLY`` reply, so a process follows a failover by itself after
the commands that were in flight fail once. Cluster: ``RedisCluster`` follows
``MOVED``/``ASK`` itself and re-reads the slot map on the next command after a
connection error. See docs/redis-deployments.md for what was checked and how.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, ClusterPubSub, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool, parse_url
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode as SyncClusterNode
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, NoScriptError, RedisClusterException, RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel as SyncSentinel

AsyncClient = aioredis.Redis | RedisCluster
SyncClient = redis.Redis | SyncRedisCluster

SINGLE = "single"
SENTINEL = "sentinel"
CLUSTER = "cluster"

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
POOL_WAIT = 5.0


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's master lookup with the blocking pool's wait-for-a-free-connection.

    redis-py's ``SentinelConnectionPool`` raises "Too many connections" when all
    are in use; Kaiwa's single-server pool makes requests wait instead, and a
    deployment change must not change that.
    """


class SentinelRedis(aioredis.Redis):
    """A master client that also closes its connections to the Sentinels (redis-py leaves those open)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            await self.connection_pool.sentinel_manager.aclose()  # type: ignore[attr-defined]


class SyncSentinelRedis(redis.Redis):
    """The sync twin of ``SentinelRedis``."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.connection_pool.sentinel_manager.close()  # type: ignore[attr-defined]


class ClusterUnreachable(RedisConnectionError):
    """No node of the cluster answered, or a slot has no owner yet (mid-failover): a ``RedisError``.

    redis-py raises ``RedisClusterException`` for these, which is no ``RedisError``; as one, every
    place that answers ``unavailable`` or retries on a Redis outage handles it as in the other modes.
    """


class KaiwaRedisCluster(RedisCluster):
    """``RedisCluster`` that waits for a free connection, and whose "cluster unreachable" errors are ``RedisError``s.

    redis-py's cluster pools raise ``MaxConnectionsError`` at once when a node's
    pool is in use; one Redis's ``BlockingConnectionPool`` waits up to
    ``POOL_WAIT``. So that a burst behaves alike in every mode (and is not
    answered ``unavailable``), at most ``max_connections`` commands and
    pipelines are in flight per process, each of which holds at most one
    connection per node; the rest wait their turn up to ``POOL_WAIT``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._turns = asyncio.Semaphore(int(kwargs.get("max_connections", 100)))

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(POOL_WAIT):
                await self._turns.acquire()
        except TimeoutError:
            raise ClusterUnreachable(f"no free Redis Cluster connection within {POOL_WAIT:g} s") from None
        try:
            yield
        finally:
            self._turns.release()

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnreachable(str(exc)) from exc

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            try:
                return await super().execute_command(*args, **kwargs)
            except RedisClusterException as exc:
                raise ClusterUnreachable(str(exc)) from exc

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise ValueError("shard_hint has no meaning in cluster mode")
        return _KaiwaClusterPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py makes its own


class _KaiwaClusterPipeline(ClusterPipeline):
    """A cluster pipeline that takes its client's turn while it runs (one connection per node at most)."""

    async def execute(self, *args: Any, **kwargs: Any) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, KaiwaRedisCluster)
        async with client.turn():
            try:
                return await super().execute(*args, **kwargs)
            except RedisClusterException as exc:
                raise ClusterUnreachable(str(exc)) from exc


def split_url(url: str) -> tuple[str, list[tuple[str, int]]]:
    """``redis://user:pw@h1:7000,h2:7001/0?x=y`` -> (the URL with only the first host, all hosts).

    The first URL carries the credentials, TLS scheme, database and options
    redis-py reads from a URL; the host list is what the cluster is seeded with.
    """
    parts = urlsplit(url)
    auth, _, hostlist = parts.netloc.rpartition("@")
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, "6379"
        hosts.append((host.strip("[]"), int(port)))
    first = f"{auth}@{hostlist.split(',')[0]}" if auth else hostlist.split(",")[0]
    return urlunsplit((parts.scheme, first, parts.path, parts.query, parts.fragment)), hosts


def _url_options(url: str) -> dict[str, Any]:
    """Connection options from a URL, without its host and port (Sentinel or the slot map names those)."""
    options: dict[str, Any] = dict(parse_url(url))
    options.pop("host", None)
    options.pop("port", None)
    if options.pop("connection_class", None) is not None and url.startswith("rediss:"):
        options["ssl"] = True
    return options


def _timeouts(blocking_reads: bool) -> dict[str, Any]:
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": None if blocking_reads else COMMAND_TIMEOUT,
        "health_check_interval": 0 if blocking_reads else 30,
    }


def make_async_client(*, blocking_reads: bool = False, pool_size: int | None = None) -> AsyncClient:
    """The process's async client for ``KAIWA_REDIS_MODE``, or (``blocking_reads``) a small one for blocking reads.

    A blocking-reads client in single and Sentinel mode has one connection; in
    cluster mode up to four per node (pub/sub objects borrow them from the node pools).
    """
    mode = settings.KAIWA_REDIS_MODE
    size = 1 if blocking_reads else (pool_size or settings.KAIWA_REDIS_POOL_SIZE)
    if blocking_reads and mode == CLUSTER:
        # A ClusterPubSub borrows its per-node connections from the client's node
        # pools: the sharded subscription, the control SUBSCRIBE and the slot-map
        # reads each need one on the same node.
        size = 4
    common = {**_timeouts(blocking_reads), "retry": AsyncRetry(NoBackoff(), 0)}
    if mode == SENTINEL:
        return _sentinel().master_for(
            settings.KAIWA_REDIS_SENTINEL_SERVICE,
            redis_class=SentinelRedis,
            connection_pool_class=BlockingSentinelConnectionPool,
            max_connections=size,
            timeout=POOL_WAIT,
            **common,
            **_url_options(settings.REDIS_URL),
        )
    if mode == CLUSTER:
        first, hosts = split_url(settings.REDIS_URL)
        options = _url_options(first)
        options.pop("db", None)
        return KaiwaRedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in hosts],
            max_connections=size,
            # MOVED and ASK are followed whatever this says; a connection error
            # surfaces (the slot map is re-read before the next command).
            retry=AsyncRetry(NoBackoff(), 0),
            **{k: v for k, v in common.items() if k != "retry"},
            **options,
        )
    pool_class = aioredis.ConnectionPool if blocking_reads else BlockingConnectionPool
    extra = {} if blocking_reads else {"timeout": POOL_WAIT}
    pool = pool_class.from_url(settings.REDIS_URL, max_connections=size, **common, **extra)
    # from_pool: the client owns the pool, so aclose() closes its connections too.
    return aioredis.Redis.from_pool(pool)


def _sentinel_kwargs(retry: Retry | AsyncRetry) -> dict[str, Any]:
    # The Sentinels themselves get short timeouts and no retry: a dead one must
    # not hold up finding the master through the others. redis-py's default
    # (10 tries, backoff up to 1 s) made each dead Sentinel cost about 3.5 s, so
    # with all three down every command and the relay's reconnect waited ~11 s
    # for MasterNotFoundError, and a SIGTERM then took as long.
    return {"socket_connect_timeout": 1.0, "socket_timeout": 1.0, "retry": retry}


def _sentinel() -> Sentinel:
    return Sentinel(settings.KAIWA_REDIS_SENTINELS, sentinel_kwargs=_sentinel_kwargs(AsyncRetry(NoBackoff(), 0)))


_sync_client: SyncClient | None = None
_sync_lock = threading.Lock()


def make_sync_client(*, max_connections: int = 4) -> SyncClient:
    """A new small sync client for code outside the event loop (signals, the cache)."""
    mode = settings.KAIWA_REDIS_MODE
    common: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": COMMAND_TIMEOUT}
    if mode == SENTINEL:
        sentinel = SyncSentinel(settings.KAIWA_REDIS_SENTINELS, sentinel_kwargs=_sentinel_kwargs(Retry(NoBackoff(), 0)))
        return sentinel.master_for(
            settings.KAIWA_REDIS_SENTINEL_SERVICE,
            redis_class=SyncSentinelRedis,
            retry=Retry(NoBackoff(), 1),
            max_connections=max_connections,
            **common,
            **_url_options(settings.REDIS_URL),
        )
    if mode == CLUSTER:
        first, hosts = split_url(settings.REDIS_URL)
        options = _url_options(first)
        options.pop("db", None)
        return SyncRedisCluster(
            startup_nodes=[SyncClusterNode(host, port) for host, port in hosts],
            retry=Retry(NoBackoff(), 1),
            max_connections=max_connections,
            **common,
            **options,
        )
    return redis.Redis.from_url(
        settings.REDIS_URL, retry=Retry(NoBackoff(), 1), max_connections=max_connections, **common
    )


def sync_client() -> SyncClient:
    """The process's shared sync client (made on first use)."""
    global _sync_client
    with _sync_lock:
        if _sync_client is None:
            _sync_client = make_sync_client()
        return _sync_client


class _TopologyCacheClient(RedisCacheClient):
    """Django's Redis cache client on this deployment's sync client (multi-key calls split by slot).

    Django makes one cache object per thread, as its own backend does with its pools.
    """

    _client_for_deployment: SyncClient | None = None

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        if self._client_for_deployment is None:
            self._client_for_deployment = make_sync_client(max_connections=2)
        return self._client_for_deployment

    def get_many(self, keys: Any) -> dict[Any, Any]:
        client = self.get_client()
        values = client.mget_nonatomic(keys) if isinstance(client, SyncRedisCluster) else client.mget(keys)
        serializer: Any = getattr(self, "_serializer")  # noqa: B009 (the stubs omit it)
        return {k: serializer.loads(v) for k, v in zip(keys, values, strict=True) if v is not None}

    def set_many(self, data: Any, timeout: Any) -> None:
        pipe = self.get_client(write=True).pipeline()
        serializer: Any = getattr(self, "_serializer")  # noqa: B009 (the stubs omit it)
        for key, value in data.items():
            pipe.set(key, serializer.dumps(value))
            if timeout is not None:
                pipe.expire(key, timeout)
        pipe.execute()


class TopologyRedisCache(RedisCache):
    """``CACHES`` backend for ``KAIWA_REDIS_MODE`` sentinel and cluster (Django's own takes one URL per server)."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = _TopologyCacheClient


def make_pubsub(client: AsyncClient) -> PubSub | ClusterPubSub:
    """A pub/sub object on a blocking-reads client.

    Single/Sentinel: ``SUBSCRIBE`` and ``SSUBSCRIBE`` on one connection; the
    PubSub re-subscribes by itself when its connection is re-made (with
    Sentinel, to the current master). Cluster: a ``ClusterPubSub`` whose
    ``subscribe`` uses one node (plain PUBLISH reaches every node, so control
    events arrive wherever it is) and whose ``ssubscribe`` opens one connection
    per node that owns a subscribed channel's slot; read those with
    ``get_sharded_message`` (see docs/redis-deployments.md for its limits).
    """
    return client.pubsub(ignore_subscribe_messages=False)


async def resync_sharded_subscriptions(client: RedisCluster, pubsub: ClusterPubSub) -> None:
    """After ``get_sharded_message`` raised a connection error: re-read the slot map, move the subscriptions.

    redis-py reconciles shard subscriptions only when *the pubsub's own* cluster
    client refreshes its slot map, which a client that only reads pub/sub never
    does: without this, the per-node pubsub of a dead primary reconnects to it
    forever and the promoted replica's channels stay unsubscribed. Messages
    published in between are lost: repair gaps from the stream afterwards.
    """
    await client.nodes_manager.initialize()
    await pubsub.reinitialize_shard_subscriptions()


# Acks that wait for replicas (protocol 7.2) ---------------------------------------


class ReplicasDidNotConfirm(RedisError):
    """Fewer replicas than ``KAIWA_ACK_REPLICAS`` confirmed an append in time: the sender gets ``unavailable``.

    A ``RedisError``, so wsapp/errors.py already maps it to ``unavailable``; the
    message may exist (and be delivered), a re-send with its ``client_id`` is safe.
    """

    def __init__(self, replicas: int, wanted: int) -> None:
        super().__init__(f"{replicas} of {wanted} replicas confirmed the append in time")
        self.replicas = replicas
        self.wanted = wanted


@dataclass(frozen=True)
class Replicated:
    """A script's reply and how many replicas confirmed the writes before it (``WAIT``'s reply)."""

    reply: Any
    replicas: int
    wanted: int

    @property
    def confirmed(self) -> bool:
        return self.replicas >= self.wanted

    def confirmed_reply(self) -> Any:
        """The script's reply, or ``ReplicasDidNotConfirm`` when too few replicas confirmed."""
        if not self.confirmed:
            raise ReplicasDidNotConfirm(self.replicas, self.wanted)
        return self.reply


async def call_script_with_replicas(
    client: AsyncClient,
    script: AsyncScript,
    *,
    keys: list[Any],
    args: list[Any],
    replicas: int,
    timeout_ms: int,
) -> Replicated:
    """Run ``script`` and then ``WAIT replicas timeout_ms`` on the same connection.

    ``WAIT`` counts the replicas that acknowledged the writes made *by its own
    connection*; sent on another pooled connection it would measure that
    connection's older writes, so both go in one pipeline. In cluster mode both
    are sent to the node that owns ``keys[0]``'s slot; after a ``MOVED``/``ASK``
    the slot map is updated and the pair is sent again to the new owner (a
    ``MOVED`` reply means the script did not run there). An ``ASK`` (the slot
    is being migrated) is raised like any error: ``unavailable``, and the
    client's re-send lands after the migration. ``replicas == 0`` runs the
    script alone. Errors from the script are raised; a ``Replicated`` whose
    ``confirmed`` is false means "not acked": answer ``unavailable``.
    """
    if replicas <= 0:
        return Replicated(reply=await script(keys=keys, args=args, client=client), replicas=0, wanted=0)
    if timeout_ms <= 0:
        raise ValueError("timeout_ms must be positive: WAIT with 0 blocks until the replicas answer, however long")
    for attempt in range(3):
        if isinstance(client, RedisCluster):
            await client.initialize()
            node = client.get_node_from_key(keys[0])
            cluster_pipe = client.pipeline()
            cluster_pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, target_nodes=node)
            cluster_pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
            reply, acked = await cluster_pipe.execute(raise_on_error=False, allow_redirections=False)
        else:
            async with client.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                pipe.execute_command("WAIT", replicas, timeout_ms)
                reply, acked = await pipe.execute(raise_on_error=False)
        if isinstance(reply, NoScriptError) and attempt < 2:
            # A promoted replica or a restarted server has an empty script cache.
            script.sha = await client.script_load(script.script)
            continue
        if isinstance(reply, MovedError) and isinstance(client, RedisCluster) and attempt < 2:
            await client.nodes_manager.move_slot(reply)
            continue
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acked, Exception):
            raise acked
        return Replicated(reply=reply, replicas=int(acked), wanted=replicas)
    raise AssertionError("unreachable: the last attempt returns or raises")
