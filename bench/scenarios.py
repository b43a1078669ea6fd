"""The scenarios. Each takes a running ``Target`` and returns plain, JSON-ready results.

Sizes come from ``Config`` (``--quick`` or ``--full``); nothing here asserts a
performance number: a scenario fails only when the harness could not run it.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field
from typing import Any

from bench.loadgen import Fleet, Member
from bench.procs import HarnessError, summarize_samples
from bench.servers import Target

P99_LIMIT_MS = 100.0
KB = 1024
MB = 1024 * 1024


@dataclass
class Config:
    mode: str
    fanout_conns: int = 100
    fanout_senders: int = 10
    fanout_rates: list[int] = field(default_factory=list)  # messages/s into the room
    step_s: float = 4.0
    warmup_s: float = 1.0
    ramp_max_s: float = 150.0  # a rising-rate scenario stops raising the rate after this long
    scenario_timeout_s: float = 600.0  # a scenario still running after this long is a harness failure
    run_budget_s: float = 17 * 60.0  # past this, rising-rate scenarios stop raising the rate
    started_at: float = field(default_factory=time.monotonic)
    quiet_s: float = 1.5
    drain_max_s: float = 8.0
    many_rooms: int = 100
    many_conns: int = 10
    many_rates: list[int] = field(default_factory=list)
    idle_conns: int = 2000
    idle_settle_s: float = 3.0
    storm_conns: int = 10000
    storm_bystanders: int = 50
    storm_bystander_rate: float = 20.0  # messages/s into the bystanders' room
    storm_max_s: float = 180.0  # the bystanders' sending stops once both waves are done
    restart_conns: int = 10000
    restart_rooms: int = 100
    restart_rate: float = 50.0  # messages/s in total, spread over the rooms
    restart_window_s: float = 20.0  # the senders' window; the restart comes after a quarter of it
    restart_back_max_s: float = 60.0
    payload_sizes: list[int] = field(default_factory=list)
    payload_receivers: int = 10
    payload_seconds: float = 3.0
    # Enough messages that a stalled reader overflows the kernel buffers and
    # Kaiwa's default queue (1000 messages), at a rate Channels can fan out.
    slow_conns: int = 20
    slow_rate: int = 100
    slow_seconds: float = 15.0
    slow_large_conns: int = 20
    slow_large_rate: float = 3.0
    slow_large_seconds: float = 15.0
    # Offered faster than a database takes single-row inserts, so rows/s is the
    # persistence path's capacity rather than the offered rate.
    persist_rate: int = 2000
    persist_seconds: float = 3.0
    persist_timeout_s: float = 60.0
    calibration_rates: list[int] = field(default_factory=list)

    @classmethod
    def full(cls) -> Config:
        # Coarser than before: the Node generator takes every server further up
        # the ramp, and the whole run (three Kaiwa variants, 10,000-client
        # storms) must stay near 20 minutes.
        rates = [20, 50, 100, 200, 300, 400, 500, 600, 700, 850, 1000, 1200, 1500, 2000]
        return cls(
            mode="full",
            fanout_rates=rates,
            many_rates=[100, 300, 500, 700, 1000, 1500, 2000, 2500, 3000, 4000],
            idle_conns=10000,
            payload_sizes=[1 * KB, 64 * KB, 1 * MB, 8 * MB],
            calibration_rates=[100, 300, 600, 1000, 1500, 2000, 2500, 3000, 4000],
        )

    @classmethod
    def quick(cls) -> Config:
        return cls(
            mode="quick",
            fanout_conns=50,
            fanout_senders=5,
            fanout_rates=[20, 200],
            step_s=1.0,
            warmup_s=0.5,
            ramp_max_s=20.0,
            scenario_timeout_s=600.0,  # a slower machine (about half speed) ran the uploads scenario past 180 s
            run_budget_s=150.0,
            quiet_s=0.7,
            drain_max_s=3.0,
            many_rooms=20,
            many_conns=5,
            many_rates=[100],
            idle_conns=1000,
            idle_settle_s=1.0,
            storm_conns=300,
            storm_bystanders=10,
            storm_bystander_rate=10.0,
            storm_max_s=60.0,
            restart_conns=300,
            restart_rooms=10,
            restart_rate=20.0,
            restart_window_s=8.0,
            restart_back_max_s=30.0,
            payload_sizes=[1 * KB, 64 * KB, 1 * MB],
            payload_receivers=5,
            payload_seconds=1.0,
            slow_conns=20,
            slow_rate=50,
            slow_seconds=2.0,
            slow_large_conns=10,
            slow_large_rate=2.0,
            slow_large_seconds=2.0,
            persist_rate=300,
            persist_seconds=1.0,
            persist_timeout_s=20.0,
            calibration_rates=[20, 200],
        )

    def rooms(self) -> list[str]:
        """Every room slug the scenarios use (Kaiwa needs them to exist)."""
        rooms = ["fanout", "slow", "slow-large", "persist", "uploads"]
        rooms += [f"many-{i}" for i in range(self.many_rooms)]
        rooms += [f"idle-{i}" for i in range((self.idle_conns + 9) // 10)]
        rooms += [f"storm-{i}" for i in range(100)] + ["storm-bystanders"]
        rooms += [f"restart-{i}" for i in range(self.restart_rooms)]
        rooms += [f"payload-{p}-{s}" for p in ("default", "large") for s in self.payload_sizes]
        return rooms


def padding(size: int) -> str:
    """A body of ``size`` bytes once the ``<ns>|`` prefix is in front."""
    return "x" * max(1, size - 20)


class CpuMeter:
    """The load generator's own CPU (user + system) over a block, in % of one core."""

    def __enter__(self) -> CpuMeter:
        self.r0 = resource.getrusage(resource.RUSAGE_SELF)
        self.t0 = time.monotonic()
        self.percent = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = max(1e-6, time.monotonic() - self.t0)
        used = (r1.ru_utime - self.r0.ru_utime) + (r1.ru_stime - self.r0.ru_stime)
        self.percent = round(100 * used / wall, 1)


def _fleet(t: Target) -> Fleet:
    return Fleet(t.host, t.port, t.origin if t.kind.authenticates else None)


async def _open_or_fail(fleet: Fleet, members: list[Member], what: str, **kw: Any) -> list[float]:
    durations = await fleet.open_many(members, **kw)
    if not durations:
        raise HarnessError(f"{what}: no connection could be opened and joined: {fleet.connect_failures}")
    return durations


async def _close(fleet: Fleet) -> None:
    fleet.close_all()
    await fleet.wait_closed()


def _deliv(out: dict[str, Any], group: str = "normal") -> dict[str, int]:
    d: dict[str, int] = out["deliveries"].get(group, {"delivered": 0, "lost": 0, "refused": 0, "expected": 0})
    return d


# -- idle connections --------------------------------------------


async def idle(t: Target, cfg: Config, note: Any) -> dict[str, Any]:
    fleet = _fleet(t)
    n = cfg.idle_conns
    cookies = t.cookies(n)
    members = [fleet.add(cookies[i], [f"idle-{i // 10}"]) for i in range(n)]
    # Warm-up: the first connections load code and fill caches; measure after them.
    note("warm-up")
    warm_fleet = _fleet(t)
    warm = [warm_fleet.add(c, [f"idle-{i // 10}"]) for i, c in enumerate(t.reuse_cookies(min(100, n)))]
    await _open_or_fail(warm_fleet, warm, f"{t.kind.name}: idle warm-up", concurrency=100, open_timeout=60)
    await _close(warm_fleet)
    await asyncio.sleep(1.0)
    rss0 = t.sampler.rss_now()
    redis0 = t.sampler.redis_used_now()
    fds0 = t.sampler.open_files_now()
    clients0 = t.sampler.redis_clients_now()
    t0 = time.monotonic()
    with CpuMeter() as cpu:
        durations = await _open_or_fail(
            fleet,
            members,
            f"{t.kind.name}: idle",
            concurrency=100,
            open_timeout=60,
            tick=lambda k: note(f"{k}/{n} open"),
        )
    open_s = time.monotonic() - t0
    note("settling")
    await asyncio.sleep(cfg.idle_settle_s)
    rss1 = t.sampler.rss_now()
    redis1 = t.sampler.redis_used_now()
    fds1 = t.sampler.open_files_now()
    clients1 = t.sampler.redis_clients_now()
    still_open = sum(1 for m in members if m.conn is not None and m.conn.is_open)
    await _close(fleet)
    # Let the server finish tearing the connections down before the next scenario.
    await asyncio.sleep(cfg.idle_settle_s)
    opened = len(durations)
    return {
        "connections": n,
        "opened": opened,
        "still_open_after_settle": still_open,
        "connect_failures": fleet.connect_failures,
        "open_seconds": round(open_s, 2),
        "server_rss_before": rss0,
        "server_rss_after": rss1,
        "server_bytes_per_connection": round((rss1 - rss0) / opened) if opened else None,
        "redis_bytes_per_connection": round((redis1 - redis0) / opened) if opened else None,
        "server_open_files_per_connection": round((fds1 - fds0) / opened, 2) if opened else None,
        "redis_clients_per_connection": round((clients1 - clients0) / opened, 2) if opened else None,
        "loadgen_cpu_percent": cpu.percent,
    }


# -- payload sweep ------------------------------------------------------------------------


def _payload_plan(size: int, seconds: float) -> tuple[float, int]:
    """(messages/s, messages) for one payload size."""
    if size <= 4 * KB:
        rate = 50.0
    elif size <= 128 * KB:
        rate = 20.0
    elif size <= 2 * MB:
        rate = 5.0
    else:
        rate = 1.0
    return rate, max(3, int(rate * seconds))


async def payload(t: Target, cfg: Config, note: Any) -> list[dict[str, Any]]:
    results = []
    for size in cfg.payload_sizes:
        if not t.alive():
            raise HarnessError(f"{t.kind.name} died during the payload sweep:\n{t.process.log_tail()}")
        room = f"payload-{t.profile.name}-{size}"
        note(_size(size))
        fleet = _fleet(t)
        cookies = t.reuse_cookies(cfg.payload_receivers + 1)
        sender = fleet.add(cookies[0], [room], group="sender")
        receivers = [fleet.add(c, [room]) for c in cookies[1:]]
        for m in [sender, *receivers]:
            m.resume = True
        await _open_or_fail(fleet, [sender, *receivers], f"{t.kind.name}: payload")
        rate, count = _payload_plan(size, cfg.payload_seconds)
        step = fleet.new_step(str(size))
        with t.sampler.window() as samples, CpuMeter() as cpu:
            t0 = time.monotonic()
            sent, lag = await fleet.send_open_loop([(sender, room)], rate, count / rate, padding(size))
            drained = await fleet.drain(
                quiet=max(cfg.quiet_s, 2.0), maximum=cfg.drain_max_s * 2, expected=fleet.all_delivered(step)
            )
            wall = time.monotonic() - t0
        out = fleet.outcome(step, groups=["normal"])
        d = _deliv(out)
        await _close(fleet)
        results.append(
            {
                "size": size,
                "rate_msgs": rate,
                "sent": sent,
                "delivered_mb_per_s": round(d["delivered"] * size / MB / wall, 2) if wall > 0 else None,
                "worst_send_lag_ms": lag,
                "drain_s": drained,
                "sender_close_codes": sender.close_codes,
                "receiver_close_codes": sorted({c for m in receivers for c in m.close_codes if c is not None}),
                "receiver_reconnects": sum(m.reconnects for m in receivers),
                "loadgen_cpu_percent": cpu.percent,
                "resources": summarize_samples(samples),
                **out,
            }
        )
    return results


def _size(size: int) -> str:
    if size >= MB:
        return f"{size // MB} MB"
    if size >= KB:
        return f"{size // KB} KB"
    return f"{size} B"


# -- slow readers -----------------------------------------------------------------------------


async def slow_readers(
    t: Target, cfg: Config, note: Any, *, room: str, conns: int, rate: float, seconds: float, size: int
) -> dict[str, Any]:
    fleet = _fleet(t)
    n_slow = max(1, conns // 10)
    n_senders = max(1, min(10, conns // 2))
    cookies = t.reuse_cookies(conns)
    members = [fleet.add(c, [room], group="slow" if i >= conns - n_slow else "normal") for i, c in enumerate(cookies)]
    for m in members:
        m.resume = True
    await _open_or_fail(fleet, members, f"{t.kind.name}: slow readers")
    slow = [m for m in members if m.group == "slow"]
    senders = [(m, room) for m in members[:n_senders]]
    for m in slow:
        if m.conn is not None:
            m.conn.pause_reading()
    step = fleet.new_step("slow")
    note(f"{n_slow} of {conns} stop reading")
    with t.sampler.window() as samples, CpuMeter() as cpu:
        sent, lag = await fleet.send_open_loop(senders, rate, seconds, padding(size))
    note("slow readers read again")
    for m in slow:
        if m.conn is not None:
            m.conn.resume_reading()
    drained = await fleet.drain(quiet=max(cfg.quiet_s, 3.0), maximum=30.0, expected=fleet.all_delivered(step))
    out = fleet.outcome(step, groups=["normal", "slow"])
    await _close(fleet)
    return {
        "connections": conns,
        "slow": n_slow,
        "senders": n_senders,
        "size": size,
        "rate_msgs": rate,
        "sent": sent,
        "worst_send_lag_ms": lag,
        "drain_s": drained,
        "slow_close_codes": sorted({c for m in slow for c in m.close_codes if c is not None}),
        "slow_reconnects": sum(m.reconnects for m in slow),
        "normal_close_codes": sorted(
            {c for m in members if m.group == "normal" for c in m.close_codes if c is not None}
        ),
        "loadgen_cpu_percent": cpu.percent,
        "resources": summarize_samples(samples),
        **out,
    }


async def slow_small(t: Target, cfg: Config, note: Any) -> dict[str, Any]:
    return await slow_readers(
        t, cfg, note, room="slow", conns=cfg.slow_conns, rate=cfg.slow_rate, seconds=cfg.slow_seconds, size=KB
    )


async def slow_large(t: Target, cfg: Config, note: Any) -> dict[str, Any]:
    return await slow_readers(
        t,
        cfg,
        note,
        room="slow-large",
        conns=cfg.slow_large_conns,
        rate=cfg.slow_large_rate,
        seconds=cfg.slow_large_seconds,
        size=MB,
    )


# -- persistence ----------------------------------------------------------------------------


async def persistence(t: Target, cfg: Config, note: Any) -> dict[str, Any]:
    fleet = _fleet(t)
    room = "persist"
    members = [fleet.add(c, [room]) for c in t.reuse_cookies(10)]
    await _open_or_fail(fleet, members, f"{t.kind.name}: persistence")
    step = fleet.new_step("persist")
    note(f"{cfg.persist_rate} msg/s")
    with t.sampler.window() as samples, CpuMeter() as cpu:
        sent, lag = await fleet.send_open_loop(
            [(m, room) for m in members], cfg.persist_rate, cfg.persist_seconds, padding(200)
        )
    # A server that saves before it acks may still be working through the burst.
    await fleet.drain(quiet=max(cfg.quiet_s, 3.0), maximum=cfg.persist_timeout_s, expected=fleet.all_delivered(step))
    out = fleet.outcome(step)
    await _close(fleet)
    acked_seqs = {m.seq for m in fleet.msgs.values() if m.step == step.id and m.status == "acked"}
    note("waiting for the database")
    db = await asyncio.to_thread(t.dbstats, room, len(acked_seqs), cfg.persist_timeout_s)
    return {
        "offered_rate_msgs": cfg.persist_rate,
        "sent": sent,
        "acked": out["acked"],
        "refused": out["refused"],
        "unanswered": out["unanswered"],
        "worst_send_lag_ms": lag,
        "acked_missing_from_db": len(acked_seqs - set(db.pop("seqs"))),
        "db": db,
        "loadgen_cpu_percent": cpu.percent,
        "resources": summarize_samples(samples),
    }
