"""The relay on a Redis Cluster: room channels on sharded pub/sub, one connection per primary.

A room's events are published with ``SPUBLISH`` on the node that owns the
room's slot (``chat.clusterlog``), so they reach only the processes subscribed
to that room there: this process holds one pub/sub connection to every primary
and ``SSUBSCRIBE``s each room channel on its owner. The control channel is a
plain ``SUBSCRIBE`` on one of them (a plain ``PUBLISH`` reaches every node of a
cluster). One reader task per node, so an event is read as soon as it arrives
(redis-py's ``ClusterPubSub.get_sharded_message`` polls the nodes in turn, one
timeout each).

Any change of the cluster's shape (a node lost, a ``MOVED`` answer to a
subscribe, a slot moved away: Redis ends its subscriptions with
``sunsubscribe``) makes the relay start over: re-read the slot map, reconnect
to the primaries it names, subscribe everything again. The listener learns of
each re-subscription through ``on_subscribed`` and repairs the gap from the
room's stream, as after any reconnect of ``wsapp.relay.RedisRelay``, whose
``Relay`` protocol this follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from chat import metrics
from wsapp.relay import BACKOFF_FIRST_SECONDS, BACKOFF_MAX_SECONDS, IDLE_PING_SECONDS, Silence, SupervisedRelay

logger = logging.getLogger("kaiwa.relay")


class ClusterChanged(RedisError):
    """The cluster's slot map changed under a subscription: the relay subscribes everything again."""


class ShardedRedisRelay(SupervisedRelay):
    """``Relay`` for ``KAIWA_REDIS_MODE=cluster``: sharded room channels, plain control channels."""

    _task_name = "relay-sharded-pubsub"

    def __init__(self, client: Any, *, publisher: Any, always: tuple[str, ...] = ()) -> None:
        """``client``: a blocking-reads cluster client, used for the slot map and the nodes' connection options;
        ``publisher``: the process's cluster client. ``always``: plain channels kept for the relay's whole life.
        """
        super().__init__(client, publisher=publisher, always=always)
        # Typed Any at the door: chat.redisclient hands every mode's client out as redis.asyncio.Redis.
        self._client: RedisCluster = client
        self._publisher: RedisCluster = publisher
        self._always = set(always)
        self._pubsubs: dict[str, Any] = {}  # node name -> PubSub on that primary
        self._connections: list[aioredis.Redis] = []
        self._changed = asyncio.Event()

    @property
    def connected(self) -> bool:
        return bool(self._pubsubs) and self._live.is_set()

    async def _close_connections(self) -> None:
        await self._close_nodes()

    def _owner(self, channel: str) -> ClusterNode:
        node = self._client.nodes_manager.get_node_from_slot(self._client.keyslot(channel))
        assert node is not None
        return node

    async def subscribe(self, channel: str) -> None:
        if not self.connected:
            raise ConnectionError("the pub/sub connections to the Redis Cluster are down")
        try:
            owner = self._owner(channel)
        except RedisClusterException as exc:  # the slot has no owner now (mid-failover)
            self._changed.set()
            raise ConnectionError(f"no Redis Cluster node owns {channel} now ({exc})") from exc
        self.channels.add(channel)
        pubsub = self._pubsubs.get(owner.name)
        if pubsub is None:
            self._changed.set()  # a node this relay does not know yet: start over, which subscribes it
            return
        try:
            await pubsub.ssubscribe(channel)
        except (RedisError, OSError) as exc:
            logger.info("SSUBSCRIBE %s failed (%r); re-reading the cluster's slot map", channel, exc)
            self._changed.set()

    def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self.connected:
            try:
                pubsub = self._pubsubs.get(self._owner(channel).name)
            except RedisClusterException:
                return  # no owner now: the resubscription that follows leaves it out
            if pubsub is not None:
                self._spawn(self._unsubscribe(pubsub, channel))

    async def publish(self, channel: str, data: str) -> None:
        if channel in self._always:
            await self._publisher.publish(channel, data)
        else:
            await self._publisher.spublish(channel, data)

    async def _unsubscribe(self, pubsub: Any, channel: str) -> None:
        if channel in self.channels:
            return  # subscribed again meanwhile
        try:
            await pubsub.sunsubscribe(channel)
        except (RedisError, OSError) as exc:
            logger.debug("sunsubscribe %s failed (%r); the next resubscription drops it", channel, exc)

    async def _supervise(self) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        reconnecting = False
        while not self._stopping:
            readers: list[asyncio.Task[None]] = []
            try:
                await self._connect()
                self._changed.clear()
                readers = [
                    asyncio.create_task(self._read(pubsub), name=f"relay-node-{name}")
                    for name, pubsub in self._pubsubs.items()
                ]
                self._live.set()
                if reconnecting:
                    logger.info(
                        "sharded pub/sub resubscribed %d channels on %d nodes", len(self.channels), len(readers)
                    )
                    metrics.relay_reconnected()
                backoff = BACKOFF_FIRST_SECONDS
                changed = asyncio.create_task(self._changed.wait())
                done, _ = await asyncio.wait([*readers, changed], return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                for task in done:
                    if task is not changed:
                        task.result()  # raises what ended the reader
                raise ClusterChanged("the cluster's slot map changed")
            except asyncio.CancelledError:
                raise
            except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
                logger.warning("sharded pub/sub lost (%r); subscribing again in %.1f s", exc, backoff)
            except Exception:
                logger.exception("sharded pub/sub reader failed; subscribing again in %.1f s", backoff)
            finally:
                self._live.clear()
                for task in readers:
                    task.cancel()
                for task in readers:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                await self._close_nodes()
            reconnecting = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    async def _connect(self) -> None:
        """Re-read the slot map, open one pub/sub connection per primary, subscribe every channel on its owner."""
        try:
            await self._client.nodes_manager.initialize()
        except RedisClusterException as exc:  # no node answered: not a RedisError in redis-py
            raise ClusterChanged(str(exc)) from exc
        primaries = sorted(self._client.get_primaries(), key=lambda n: n.name)
        if not primaries:
            raise ClusterChanged("the cluster names no primary")
        for node in primaries:
            pool = aioredis.ConnectionPool(
                connection_class=node.connection_class, max_connections=1, **node.connection_kwargs
            )
            connection = aioredis.Redis.from_pool(pool)
            self._connections.append(connection)
            pubsub = connection.pubsub(ignore_subscribe_messages=False)
            # Every node's connection in subscribed mode from the start, so its reader can wait on it (and
            # PING it) before the first room there: a plain channel of its own that nobody publishes on.
            await pubsub.subscribe(f"kaiwa:relay-idle:{id(self)}:{node.name}")
            self._pubsubs[node.name] = pubsub
        by_node: dict[str, list[str]] = {}
        for channel in sorted(self.channels - self._always):
            by_node.setdefault(self._owner(channel).name, []).append(channel)
        if self._always:
            await self._pubsubs[primaries[0].name].subscribe(*sorted(self._always))
        for name, channels in by_node.items():
            owner = self._pubsubs.get(name)
            if owner is None:
                raise ClusterChanged(f"slot owner {name} is not among the primaries")
            # One SSUBSCRIBE per channel: several would have to share one slot.
            for channel in channels:
                await owner.ssubscribe(channel)

    async def _close_nodes(self) -> None:
        pubsubs, connections = list(self._pubsubs.values()), self._connections
        self._pubsubs, self._connections = {}, []
        for pubsub in pubsubs:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.aclose()

    async def _read(self, pubsub: Any) -> None:
        listener = self._listener
        assert listener is not None
        silence = Silence()
        while True:
            message = await pubsub.get_message(timeout=IDLE_PING_SECONDS)
            if message is None:
                await silence.quiet(pubsub)
                continue
            silence.heard()
            kind = message["type"]
            name = message["channel"]
            name = name.decode() if isinstance(name, bytes) else name
            if kind in ("smessage", "message"):
                if name in self.channels:
                    await listener.on_event(name, message["data"])
            elif kind in ("ssubscribe", "subscribe"):
                if name in self.channels:
                    await listener.on_subscribed(name)
            elif kind == "sunsubscribe" and name in self.channels:
                # Redis ends a slot's subscriptions when the slot moves away (or our own
                # unsubscribe overtook a new subscribe): start over from the slot map.
                raise ClusterChanged(f"{name} was unsubscribed by the server")
