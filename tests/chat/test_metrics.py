"""What each recording call of chat.metrics adds (one process, in memory: the test process's mode)."""

from __future__ import annotations

import time

from chat import metrics
from chat.events import Entry


def value(name: str, **labels: str) -> float:
    found = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_the_test_process_keeps_its_metrics_in_memory() -> None:
    """No multiprocessing parent and no KAIWA_METRICS_DIR: the registry of this process is what /metrics shows."""
    assert metrics.MODE.directory is None


def test_connections_open_and_close_with_their_codes() -> None:
    """Opened adds to the open gauge and the total; closed takes it back and counts the code (client: None)."""
    opened, open_now = value("kaiwa_connections_opened_total"), value("kaiwa_connections_open")
    by_client, by_1013 = (
        value("kaiwa_connections_closed_total", code="client"),
        value("kaiwa_connections_closed_total", code="1013"),
    )
    metrics.connection_opened()
    metrics.connection_opened()
    assert value("kaiwa_connections_open") == open_now + 2
    metrics.connection_closed(None)
    metrics.connection_closed(1013)
    assert value("kaiwa_connections_opened_total") == opened + 2
    assert value("kaiwa_connections_open") == open_now
    assert value("kaiwa_connections_closed_total", code="client") == by_client + 1
    assert value("kaiwa_connections_closed_total", code="1013") == by_1013 + 1


def test_a_fanout_adds_its_member_count_to_deliveries() -> None:
    """One call per message: deliveries grow by the members, fan-outs by one, once flushed into the counters."""
    metrics.flush()  # what earlier in-process hubs counted
    fanouts, deliveries = value("kaiwa_fanouts_total"), value("kaiwa_deliveries_total")
    metrics.fanout(250)
    metrics.fanout(0)
    assert value("kaiwa_deliveries_total") == deliveries  # counted, not yet flushed
    metrics.flush()
    assert value("kaiwa_fanouts_total") == fanouts + 2
    assert value("kaiwa_deliveries_total") == deliveries + 250


def test_acks_refusals_joins_and_handshakes() -> None:
    """Each call moves its own series, labelled by code, frame type or kind."""
    acked, ack_count = value("kaiwa_messages_accepted_total"), value("kaiwa_ack_seconds_count")
    limited = value("kaiwa_refusals_total", code="rate_limited", frame="send")
    resumes, resets = value("kaiwa_joins_total", kind="resume"), value("kaiwa_joins_total", kind="reset")
    refused_hs = value("kaiwa_handshakes_total", result="refused")
    metrics.acked(time.perf_counter())
    metrics.refused("rate_limited", "send")
    metrics.joined(since=5, reset=False)
    metrics.joined(since=5, reset=True)
    metrics.handshake(time.perf_counter(), False)
    assert value("kaiwa_messages_accepted_total") == acked + 1
    assert value("kaiwa_ack_seconds_count") == ack_count + 1
    assert value("kaiwa_refusals_total", code="rate_limited", frame="send") == limited + 1
    assert value("kaiwa_joins_total", kind="resume") == resumes + 1
    assert value("kaiwa_joins_total", kind="reset") == resets + 1
    assert value("kaiwa_handshakes_total", result="refused") == refused_hs + 1


def test_persisted_batches_record_each_messages_lag_from_its_ack() -> None:
    """A message acked 2 s before its batch committed lands in the 2.5 s bucket, not the 1 s one."""
    persisted = value("kaiwa_worker_persisted_total")
    le_1, le_2_5 = (
        value("kaiwa_worker_persist_lag_seconds_bucket", le="1.0"),
        value("kaiwa_worker_persist_lag_seconds_bucket", le="2.5"),
    )
    now_ms = int(time.time() * 1000)
    entry = Entry(room_id=1, seq=1, ts_ms=now_ms - 2000, user_id=1, username="a", body="x", client_id=None)
    metrics.persisted([entry])
    metrics.persisted([])
    assert value("kaiwa_worker_persisted_total") == persisted + 1
    assert value("kaiwa_worker_persist_lag_seconds_bucket", le="1.0") == le_1
    assert value("kaiwa_worker_persist_lag_seconds_bucket", le="2.5") == le_2_5 + 1


def test_repairs_uploads_conflicts_epochs_and_pings() -> None:
    """Counters for the rarer events; a repair that found nothing is not a repair; a failed PING is counted apart."""
    before = {
        name: value(name)
        for name in (
            "kaiwa_gap_repairs_total",
            "kaiwa_gap_repaired_messages_total",
            "kaiwa_gap_unrepairable_total",
            "kaiwa_uploads_total",
            "kaiwa_upload_bytes_total",
            "kaiwa_unstored_recorded_total",
            "kaiwa_epoch_changes_total",
            "kaiwa_redis_ping_failures_total",
            "kaiwa_redis_roundtrip_seconds_count",
            "kaiwa_relay_reconnects_total",
        )
    }
    metrics.gap_repaired(0)
    metrics.gap_repaired(4)
    metrics.gap_lost()
    metrics.upload_stored(1234)
    metrics.unstored_recorded(2)
    metrics.epoch_changed()
    metrics.redis_roundtrip(None)
    metrics.redis_roundtrip(0.0004)
    metrics.relay_reconnected()
    added = {name: value(name) - was for name, was in before.items()}
    assert added == {
        "kaiwa_gap_repairs_total": 1,
        "kaiwa_gap_repaired_messages_total": 4,
        "kaiwa_gap_unrepairable_total": 1,
        "kaiwa_uploads_total": 1,
        "kaiwa_upload_bytes_total": 1234,
        "kaiwa_unstored_recorded_total": 2,
        "kaiwa_epoch_changes_total": 1,
        "kaiwa_redis_ping_failures_total": 1,
        "kaiwa_redis_roundtrip_seconds_count": 1,
        "kaiwa_relay_reconnects_total": 1,
    }


def test_sampled_gauges_take_the_latest_sample() -> None:
    """Queue depth and the relay's state are set by the sampler, not counted per frame."""
    metrics.sampled(queued_frames=17, queued_max=9, relay_connected=True)
    assert value("kaiwa_send_queue_frames") == 17
    assert value("kaiwa_send_queue_max_frames") == 9
    assert value("kaiwa_relay_connected") == 1
    metrics.sampled(queued_frames=0, queued_max=0, relay_connected=False)
    assert value("kaiwa_relay_connected") == 0


def test_prepared_label_sets_exist_at_zero_before_their_first_event() -> None:
    """A refusal or close code prepared at startup is a series from the first scrape, so rate() sees its first event."""
    assert metrics.REGISTRY.get_sample_value("kaiwa_refusals_total", {"code": "limit", "frame": "typing"}) is None
    metrics.prepare(refusals=[("limit", "typing")], closes=[4999])
    assert metrics.REGISTRY.get_sample_value("kaiwa_refusals_total", {"code": "limit", "frame": "typing"}) == 0
    assert metrics.REGISTRY.get_sample_value("kaiwa_connections_closed_total", {"code": "4999"}) == 0
    metrics.refused("limit", "typing")
    assert metrics.REGISTRY.get_sample_value("kaiwa_refusals_total", {"code": "limit", "frame": "typing"}) == 1
