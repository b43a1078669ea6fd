"""``GET /metrics`` (Prometheus text format) and ``GET /readyz`` on the FastAPI app (protocol.md 7.7).

``/metrics`` answers only ``Authorization: Bearer <KAIWA_METRICS_TOKEN>``,
compared in constant time. Without a configured token it does not exist
(404, like any unknown path); a missing or wrong token is 401 with a
``WWW-Authenticate`` header, so an operator whose scraper is misconfigured
is told so instead of guessing. In multi-process mode (chat/metricsmode.py)
any process answers with every process's figures, read from the shared
directory; the figures read from Redis and the database (backlog, unstored
conflicts) are added at scrape time by the process that answers.
"""

from __future__ import annotations

import hmac
from typing import Any

import anyio
from django.conf import settings
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from chat import metrics, metricsmode
from wsapp import errors
from wsapp.readiness import Live, Readiness


class _LiveCollector:
    """The figures read at scrape time, the same whichever process answers."""

    def __init__(self, live: Live) -> None:
        self.live = live

    def collect(self) -> Any:
        live = self.live
        up = GaugeMetricFamily(
            "kaiwa_dependency_up", "1 if Redis / the database answered this scrape.", labels=["dependency"]
        )
        up.add_metric(["redis"], 1 if live.redis_ok else 0)
        up.add_metric(["database"], 1 if live.database_ok else 0)
        yield up
        if live.backlog is not None:
            yield GaugeMetricFamily(
                "kaiwa_worker_backlog_messages",
                "Acked messages not yet in the database (all rooms).",
                value=live.backlog,
            )
            yield GaugeMetricFamily(
                "kaiwa_worker_oldest_unstored_seconds",
                "Age of the oldest acked message not yet in the database (0: none waiting).",
                value=live.oldest_seconds or 0.0,
            )
        if live.unstored is not None:
            yield GaugeMetricFamily(
                "kaiwa_unstored_messages",
                "Acked messages kept aside because storing them would contradict the history (operator action).",
                value=live.unstored,
            )


def exposition(live: Live) -> bytes:
    """Every process's metrics (this one's alone when it runs alone), then the scrape-time figures."""
    directory = metrics.MODE.directory
    if directory is None:
        recorded = generate_latest(metrics.REGISTRY)
    else:
        metricsmode.sweep_dead_processes(directory)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(directory))
        recorded = generate_latest(merged)
    scraped = CollectorRegistry()
    scraped.register(_LiveCollector(live))
    return recorded + generate_latest(scraped)


def token_accepted(header: str | None, token: str) -> bool:
    """Whether ``header`` is ``Bearer <token>``, compared in constant time."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode())


def _readiness(app: FastAPI) -> Readiness | None:
    runtime = app.state.runtime
    return None if runtime is None else runtime.components.get("readiness")


def install(app: FastAPI) -> None:
    codes = (errors.BAD_REQUEST, errors.NOT_FOUND, errors.NOT_JOINED, errors.TOO_LONG, errors.RATE_LIMITED)
    metrics.prepare(
        refusals=[(code, frame) for code in (*codes, errors.LIMIT, errors.UNAVAILABLE) for frame in ("send", "join")]
        + [(errors.BAD_REQUEST, "invalid")],
        closes=[None, *errors.Close],
    )

    @app.get("/metrics", include_in_schema=False)
    async def metrics_view(request: Request) -> Response:
        token = settings.KAIWA_METRICS_TOKEN
        if not token:
            return PlainTextResponse("Not Found", status_code=404)
        if not token_accepted(request.headers.get("authorization"), token):
            return PlainTextResponse(
                "401 Unauthorized: send the header 'Authorization: Bearer <KAIWA_METRICS_TOKEN>' "
                "(in Prometheus: authorization: {credentials: ...} in the scrape config).\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="kaiwa-metrics"'},
            )
        readiness = _readiness(app)
        if readiness is None:
            return PlainTextResponse("503: the server is starting; scrape again shortly.\n", status_code=503)
        live = await readiness.live()
        metrics.flush()  # this process's fan-out counts; the others' come with their sampler
        body = await anyio.to_thread.run_sync(exposition, live)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """For load balancers: 200 while this process can take new sockets, else 503 with the reasons."""
        readiness = _readiness(app)
        if readiness is None:
            reason = "starting: the ASGI lifespan startup has not run"
            body = {"status": "not_ready", "reason": reason, "reasons": [reason]}
            return JSONResponse(body, status_code=503, headers={"Cache-Control": "no-store"})
        ready, body = await readiness.verdict()
        return JSONResponse(body, status_code=200 if ready else 503, headers={"Cache-Control": "no-store"})
