"""The FastAPI app: ``/ws``, ``/healthz``, the JSON API ``/api/*`` (``wsapp/api/``), and the process lifespan.

``/readyz`` and ``/metrics`` are ``wsapp/metricsroute.py``'s.

The lifespan owns every long-lived resource of a server process: the embedded
development Redis (if any), the Redis clients, the hub that fans messages out
to this process's sockets, and the embedded persistence worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from chat import embedded_redis, images, metrics
from chat.clusterlog import is_cluster, message_log
from chat.epochs import DatabaseEpochs
from chat.logkeys import CONTROL_CHANNEL
from chat.messagelog import MessageLog
from chat.redisclient import make_async_client
from chat.worker import Worker
from wsapp import api, metricsroute
from wsapp.connection import Connection
from wsapp.dbthread import db_ready
from wsapp.endpoint import Endpoint
from wsapp.hub import Hub
from wsapp.metricssampler import sample_loop
from wsapp.presence import RedisPresence, process_id
from wsapp.readiness import Readiness
from wsapp.relay import RedisRelay
from wsapp.shardedrelay import ShardedRedisRelay

logger = logging.getLogger("kaiwa.app")


@dataclass
class Runtime:
    """What one server process holds while it runs."""

    redis: aioredis.Redis
    log: MessageLog
    started_at: float = field(default_factory=time.time)
    components: dict[str, Any] = field(default_factory=dict)
    hub: Hub | None = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    embedded = None
    if settings.KAIWA_EMBEDDED_REDIS_SOCKET is not None:
        embedded = embedded_redis.ensure_running(settings.KAIWA_EMBEDDED_REDIS_SOCKET)
    client = make_async_client()
    log = message_log(
        client,
        dedup_seconds=settings.KAIWA_DEDUP_SECONDS,
        stream_keep=settings.KAIWA_STREAM_KEEP,
        epoch_store=DatabaseEpochs(prepare=db_ready),
    )
    runtime = Runtime(redis=client, log=log)
    # The hub: this process's pub/sub reader and sockets (stopped first: it drains sends, closes sockets with 1012).
    Connection.write_through = settings.KAIWA_WS_WRITE_THROUGH
    relay: RedisRelay | ShardedRedisRelay
    if is_cluster(client):  # room channels on sharded pub/sub (Redis 7), one connection per primary
        relay = ShardedRedisRelay(make_async_client(blocking_reads=True), publisher=client, always=(CONTROL_CHANNEL,))
    else:
        relay = RedisRelay(make_async_client(blocking_reads=True), publisher=client, always=(CONTROL_CHANNEL,))
    presence = RedisPresence(client, process_id=process_id(), ttl_seconds=settings.KAIWA_PRESENCE_TTL_SECONDS)
    hub = Hub(log=log, relay=relay, presence=presence)
    await hub.start()
    runtime.hub = hub
    runtime.components["hub"] = hub
    # /readyz and /metrics (wsapp/metricsroute.py); queue depth and Redis round trips sampled meanwhile.
    metrics.process_started()
    readiness = Readiness(redis=client, log=log, hub=hub)
    runtime.components["readiness"] = readiness
    sampler = asyncio.create_task(sample_loop(hub, client), name="metrics-sampler")
    app.state.runtime = runtime
    # The embedded persistence worker; KAIWA_WORKER_EMBEDDED=0 leaves it to `manage.py chatworker`.
    worker = Worker(redis=client) if settings.KAIWA_WORKER_EMBEDDED else None
    if worker is not None:
        worker.start()
        runtime.components["worker"] = worker
    try:
        logger.info("startup complete (pid %s)", os.getpid())
        yield
    finally:
        sampler.cancel()
        await hub.stop()
        readiness.close()
        if worker is not None:
            await worker.close()  # writes and acknowledges its current batch first
        app.state.runtime = None
        await client.aclose()
        embedded_redis.stop(embedded)
        await asyncio.to_thread(images.shutdown_pool)  # the image worker processes (attachments)


def create_app() -> FastAPI:
    app = FastAPI(lifespan=lifespan, openapi_url=api.OPENAPI_URL, docs_url=None, redoc_url=None)
    app.state.runtime = None
    # /ws is no route: the dispatcher hands sockets straight to the endpoint (see project/asgi.py).
    endpoint = Endpoint(app)
    app.state.ws_endpoint = endpoint
    api.install(app)  # /api/*: wsapp/api/
    metricsroute.install(app)  # /metrics, /readyz

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """For load balancers: 200 once this process is up and reaches Redis."""
        runtime: Runtime | None = app.state.runtime
        if runtime is None:
            return JSONResponse(
                {"status": "starting", "lifespan": False, "detail": "the ASGI lifespan startup has not run"},
                status_code=503,
            )
        try:
            redis_ok = bool(await runtime.redis.ping())
        except RedisError:
            redis_ok = False
        body = {
            "status": "ok" if redis_ok else "degraded",
            "lifespan": True,
            "pid": os.getpid(),
            "redis": redis_ok,
            "components": sorted(runtime.components),
            "uptime_seconds": round(time.time() - runtime.started_at, 1),
        }
        return JSONResponse(body, status_code=200 if redis_ok else 503)

    return app
