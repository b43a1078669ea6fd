"""What a Kaiwa process counts, for ``GET /metrics`` (protocol.md 7.7; every metric in docs/operations.md).

The hub, the endpoint, the relay, the worker and the upload API each call one
function here; ``chat`` never imports ``wsapp``, so this module is chat's and
the route that serves it is ``wsapp/metricsroute.py``. Figures that any
process can read from Redis or the database (the worker's backlog, unstored
conflicts) are not counted here: the route reads them when it is scraped.

Cost on the hot path: the fan-out counts once per message (deliveries are
added by the room's member count, never once per socket) into plain integers
that ``flush()`` moves into the counters every few seconds; labelled children
are looked up once and kept (docs/operations.md, "Cost").
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from chat import metricsmode

if TYPE_CHECKING:
    from chat.events import Entry

# Chosen before any metric exists (see chat/metricsmode.py).
MODE = metricsmode.decide(settings.KAIWA_METRICS_DIR)
metricsmode.activate(MODE)
# Multi-process mode has no ``_created`` series: one process alone shows none either.
disable_created_metrics()

# This process's metrics when it runs alone; in multi-process mode the route
# reads every process's files instead, so nothing is scraped from here.
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)

PROCESSES = Gauge(
    "kaiwa_server_processes",
    "Server processes running (each counts 1).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
CONNECTIONS_OPEN = Gauge(
    "kaiwa_connections_open", "WebSockets open now.", registry=REGISTRY, multiprocess_mode="livesum"
)
CONNECTIONS_OPENED = Counter("kaiwa_connections_opened", "WebSockets accepted.", registry=REGISTRY)
CONNECTIONS_CLOSED = Counter(
    "kaiwa_connections_closed",
    "WebSockets ended, by the close code the server sent (client: the client closed or went away).",
    ["code"],
    registry=REGISTRY,
)
HANDSHAKES = Counter("kaiwa_handshakes", "WebSocket handshakes, accepted or refused.", ["result"], registry=REGISTRY)
HANDSHAKE_SECONDS = Histogram(
    "kaiwa_handshake_seconds",
    "From the client's connect to the accept (or refusal): Origin and session checks.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
JOINS = Counter("kaiwa_joins", "Room joins: fresh, resume (since), reset.", ["kind"], registry=REGISTRY)
MESSAGES_ACCEPTED = Counter("kaiwa_messages_accepted", "send frames acked.", registry=REGISTRY)
REFUSALS = Counter(
    "kaiwa_refusals",
    "error frames sent, by error code and the refused frame's type.",
    ["code", "frame"],
    registry=REGISTRY,
)
ACK_SECONDS = Histogram(
    "kaiwa_ack_seconds",
    "From a send frame read to its ack queued (checks, the Redis append, its round trip).",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
FANOUTS = Counter("kaiwa_fanouts", "Messages a process delivered to its members of the room.", registry=REGISTRY)
DELIVERIES = Counter(
    "kaiwa_deliveries", "message frames handed to sockets (a fan-out adds its member count).", registry=REGISTRY
)
QUEUED_FRAMES = Gauge(
    "kaiwa_send_queue_frames",
    "Frames waiting in outgoing queues (and held during backlogs), all sockets; sampled.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
QUEUED_MAX = Gauge(
    "kaiwa_send_queue_max_frames",
    "The fullest outgoing queue of one socket; sampled.",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
RELAY_CONNECTED = Gauge(
    "kaiwa_relay_connected",
    "1 while every process's pub/sub connection is up (0 if any is down); sampled.",
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
RELAY_RECONNECTS = Counter("kaiwa_relay_reconnects", "Pub/sub connections re-established.", registry=REGISTRY)
GAP_REPAIRS = Counter(
    "kaiwa_gap_repairs",
    "Repairs that re-read missed messages from the log (a seq jump, a resubscription).",
    registry=REGISTRY,
)
GAP_REPAIRED_MESSAGES = Counter(
    "kaiwa_gap_repaired_messages", "Messages delivered by repairs instead of pub/sub.", registry=REGISTRY
)
GAP_LOST = Counter(
    "kaiwa_gap_unrepairable",
    "Gaps neither the log nor the database could fill (the room's sockets got 1011).",
    registry=REGISTRY,
)
REDIS_ROUNDTRIP = Histogram(
    "kaiwa_redis_roundtrip_seconds",
    "PING round trips to Redis from each process (sampled, and by /readyz).",
    buckets=_REDIS_BUCKETS,
    registry=REGISTRY,
)
REDIS_PING_FAILURES = Counter("kaiwa_redis_ping_failures", "Sampled PINGs that failed or timed out.", registry=REGISTRY)
PERSISTED = Counter(
    "kaiwa_worker_persisted", "Messages acknowledged to Redis after the database commit.", registry=REGISTRY
)
PERSIST_LAG = Histogram(
    "kaiwa_worker_persist_lag_seconds",
    "From a message's ack to its acknowledgement after the database commit.",
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)
WORKER_WRITE_FAILURES = Counter(
    "kaiwa_worker_write_failures", "Batch writes that failed and are retried (database down?).", registry=REGISTRY
)
UNSTORED_RECORDED = Counter(
    "kaiwa_unstored_recorded", "Acked messages the worker could not store and kept for an operator.", registry=REGISTRY
)
EPOCH_CHANGES = Counter(
    "kaiwa_epoch_changes",
    "Rooms re-seeded in a new epoch (protocol.md 7.1): Redis lost, restored or re-seeded their state; "
    "a room's first epoch is not counted.",
    registry=REGISTRY,
)
UPLOADS = Counter("kaiwa_uploads", "Attachments stored.", registry=REGISTRY)
UPLOAD_BYTES = Counter("kaiwa_upload_bytes", "Bytes of attachments stored (as served).", registry=REGISTRY)
UPLOAD_REFUSALS = Counter(
    "kaiwa_upload_refusals",
    "Uploads refused by the upload endpoint, by the error code of protocol.md 7.3 (too_large, rate_limited, ...).",
    ["code"],
    registry=REGISTRY,
)

# Labelled children, looked up once (``labels()`` takes a lock each time).
_closed: dict[int | None, Counter] = {}
_refused: dict[tuple[str, str], Counter] = {}
_joins = {kind: JOINS.labels(kind) for kind in ("fresh", "resume", "reset")}
_handshakes = {True: HANDSHAKES.labels("accepted"), False: HANDSHAKES.labels("refused")}


def prepare(*, refusals: Iterable[tuple[str, str]], closes: Iterable[int | None]) -> None:
    """Create the usual label sets at zero, so a first refusal or close shows in ``rate()`` at once.

    (A series that appears with its first event has no earlier sample to
    compare with: Prometheus would see its first increase only at the next one.)
    """
    for code, frame in refusals:
        key = (code, frame)
        if key not in _refused:
            _refused[key] = REFUSALS.labels(code, frame)
    for close in closes:
        if close not in _closed:
            _closed[close] = CONNECTIONS_CLOSED.labels("client" if close is None else str(int(close)))


def process_started() -> None:
    PROCESSES.set(1)
    RELAY_CONNECTED.set(0)


def connection_opened() -> None:
    CONNECTIONS_OPENED.inc()
    CONNECTIONS_OPEN.inc()


def connection_closed(code: int | None) -> None:
    """``code``: the close code the server chose, None when the client closed or vanished first."""
    child = _closed.get(code)
    if child is None:
        child = _closed[code] = CONNECTIONS_CLOSED.labels("client" if code is None else str(int(code)))
    child.inc()
    CONNECTIONS_OPEN.dec()


def handshake(started: float, accepted: bool) -> None:
    """``started``: ``time.perf_counter()`` when the client's connect arrived."""
    HANDSHAKE_SECONDS.observe(time.perf_counter() - started)
    _handshakes[accepted].inc()


def joined(*, since: int | None, reset: bool) -> None:
    _joins["reset" if reset else "fresh" if since is None else "resume"].inc()


def acked(started: float) -> None:
    MESSAGES_ACCEPTED.inc()
    ACK_SECONDS.observe(time.perf_counter() - started)


def refused(code: str, frame: str) -> None:
    key = (code, frame)
    child = _refused.get(key)
    if child is None:
        child = _refused[key] = REFUSALS.labels(code, frame)
    child.inc()


# The fan-out runs once per message per process: it adds to plain integers, and
# flush() (the sampler, and the process answering a scrape) moves them into the
# counters; an increment there takes a lock and, with several processes, writes
# a memory-mapped file (docs/operations.md, "Cost").
_unflushed_fanouts = 0
_unflushed_deliveries = 0


def fanout(members: int) -> None:
    """One message delivered to ``members`` local sockets (call from the event loop)."""
    global _unflushed_fanouts, _unflushed_deliveries
    _unflushed_fanouts += 1
    _unflushed_deliveries += members


def flush() -> None:
    """Move what the fan-out counted into the counters (from the event loop's thread)."""
    global _unflushed_fanouts, _unflushed_deliveries
    fanouts, deliveries = _unflushed_fanouts, _unflushed_deliveries
    _unflushed_fanouts = _unflushed_deliveries = 0
    if fanouts:
        FANOUTS.inc(fanouts)
    if deliveries:
        DELIVERIES.inc(deliveries)


def gap_repaired(messages: int) -> None:
    if messages:
        GAP_REPAIRS.inc()
        GAP_REPAIRED_MESSAGES.inc(messages)


def gap_lost() -> None:
    GAP_LOST.inc()


def relay_reconnected() -> None:
    RELAY_RECONNECTS.inc()


def redis_roundtrip(seconds: float | None) -> None:
    """A PING's round trip; None: it failed."""
    if seconds is None:
        REDIS_PING_FAILURES.inc()
    else:
        REDIS_ROUNDTRIP.observe(seconds)


def sampled(*, queued_frames: int, queued_max: int, relay_connected: bool) -> None:
    flush()
    QUEUED_FRAMES.set(queued_frames)
    QUEUED_MAX.set(queued_max)
    RELAY_CONNECTED.set(1 if relay_connected else 0)


def persisted(entries: Iterable[Entry]) -> None:
    """A batch was committed and acknowledged: its size, and each message's time from ack to now."""
    now_ms = time.time() * 1000
    count = 0
    for entry in entries:
        PERSIST_LAG.observe(max(0.0, now_ms - entry.ts_ms) / 1000)
        count += 1
    if count:
        PERSISTED.inc(count)


def worker_write_failed() -> None:
    WORKER_WRITE_FAILURES.inc()


def unstored_recorded(count: int = 1) -> None:
    """Conflicts the worker kept in ``UnstoredMessage`` (helper of chat/persistconflicts.py)."""
    if count:
        UNSTORED_RECORDED.inc(count)


def epoch_changed(count: int = 1) -> None:
    """A room got a new epoch (its Redis state could not be proved to continue its history)."""
    if count:
        EPOCH_CHANGES.inc(count)


def upload_stored(nbytes: int) -> None:
    UPLOADS.inc()
    UPLOAD_BYTES.inc(max(0, nbytes))


def upload_refused(code: str) -> None:
    """An upload answered with a refusal (``code`` is the API's error code: a short, fixed set)."""
    UPLOAD_REFUSALS.labels(code).inc()
