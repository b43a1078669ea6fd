"""Connect storms and a restart under load, on the Node load generator.

* ``storm``: ``storm_conns`` authenticated clients connect and join at once,
  twice: first with sessions the server never saw (its session check reads the
  database), then again after they all closed (the deploy case: every client
  reconnects with a session checked before). Meanwhile ``storm_bystanders``
  clients already joined to another room keep receiving messages: their p99
  and losses show what a storm does to the people already connected. Server
  CPU per connection is the server's CPU time over the storm minus what the
  bystanders' traffic cost before it.
* ``restart``: ``restart_conns`` clients joined to ``restart_rooms`` rooms, a
  sender in each room, then the server is stopped (SIGTERM: graceful, 1012) and
  started again on the same port while the senders go on. Every client
  reconnects with backoff and ``join`` + ``since``; what any of them missed is
  counted (it must be 0), and how long until every one was joined again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.loadgen import latency_summary
from bench.nodefleet import NodeCpu, NodeFleet
from bench.procs import HarnessError, summarize_samples
from bench.scenarios import Config
from bench.servers import Target, settled

BODY_BYTES = 200


async def _wave(
    t: Target, fleet: NodeFleet, members: list[int], baseline_cpu_per_s: float, note: Any, what: str
) -> dict[str, Any]:
    n = len(members)
    note(f"{what}: {n} clients at once")
    cpu0, rcpu0 = t.sampler.cpu_seconds_now(), t.sampler.redis_cpu_seconds_now()
    t0 = time.monotonic()
    with t.sampler.window() as samples:
        async with NodeCpu(fleet) as gen:
            durations = await fleet.open(members, concurrency=n, join_within=60)
    wall = time.monotonic() - t0
    server_cpu = t.sampler.cpu_seconds_now() - cpu0 - baseline_cpu_per_s * wall
    redis_cpu = t.sampler.redis_cpu_seconds_now() - rcpu0
    ok = len(durations)
    last = max(durations) if durations else wall
    return {
        "clients": n,
        "succeeded": ok,
        "seconds_to_last_joined": round(last, 3),
        "handshakes_per_s": round(ok / last, 1) if last > 0 else None,
        "connect_to_joined_ms": latency_summary([d * 1000 for d in durations]),
        "server_cpu_ms_per_connection": round(1000 * server_cpu / ok, 3) if ok else None,
        "redis_cpu_ms_per_connection": round(1000 * redis_cpu / ok, 3) if ok else None,
        "loadgen_cpu_percent": gen.percent,
        "resources": summarize_samples(samples),
    }


async def storm(t: Target, cfg: Config, note: Any) -> dict[str, Any]:
    n = cfg.storm_conns
    async with NodeFleet(t.host, t.port, t.origin if t.kind.authenticates else None) as fleet:
        room = "storm-bystanders"
        bystanders = await fleet.add(t.reuse_cookies(cfg.storm_bystanders), [[room]] * cfg.storm_bystanders,
                                     group="bystander")  # fmt: skip
        if not await fleet.open(bystanders):
            raise HarnessError(f"{t.kind.name}: no bystander could join: {fleet.failures}")
        members = await fleet.add(t.cookies(n), [[f"storm-{i % 100}"] for i in range(n)])
        # Bystander traffic runs through both waves; its cost alone is measured first.
        step = await fleet.new_step("storm")
        duration = cfg.storm_max_s
        sending = asyncio.get_running_loop().create_task(
            fleet.send_open_loop([(bystanders[0], room)], cfg.storm_bystander_rate, duration, BODY_BYTES)
        )
        await asyncio.sleep(0.5)
        c0, t0 = t.sampler.cpu_seconds_now(), time.monotonic()
        await asyncio.sleep(1.5)
        baseline = (t.sampler.cpu_seconds_now() - c0) / (time.monotonic() - t0)
        cold = await _wave(t, fleet, members, baseline, note, "first connection")
        cold["failures"] = dict(fleet.failures)
        note("closing")
        await fleet.call("close_some", indices=members)
        # The second wave is the deploy case: every client comes back to a
        # server with nothing else to do. 10,000 sockets closing leave the server
        # busy for seconds (each user's leave goes out to the room), and that
        # work would be booked to the reconnecting clients.
        closing_s = await settled(t, busy_cpu_per_s=baseline)
        warm = await _wave(t, fleet, members, baseline, note, "reconnect, sessions checked before")
        warm["waited_after_closing_s"] = closing_s
        warm["failures"] = {k: v - cold["failures"].get(k, 0) for k, v in fleet.failures.items()}
        await fleet.call("stop_send")
        await sending
        # After a storm the server may still be behind by tens of seconds: a
        # message counts as lost only if it has not arrived once the deliveries
        # stopped for 20 s (or after two minutes), never because it was late.
        # 20 s, not less: a server that far behind can stall its deliveries for
        # one Redis command timeout (5 s) or one keepalive period (20 s), and a
        # shorter window once booked such a stall's tail as 335 lost deliveries.
        drain_max = max(cfg.drain_max_s, 120.0)
        drained_s = await fleet.drain(quiet=max(cfg.quiet_s, 20.0), maximum=drain_max)
        out = await fleet.outcome(step, ["bystander"])
    return {
        "clients": n,
        "bystanders": cfg.storm_bystanders,
        "bystander_rate_msgs": cfg.storm_bystander_rate,
        "baseline_server_cpu_percent": round(100 * baseline, 1),
        "cold": cold,
        "warm": warm,
        "bystander": {
            "latency_ms": out["latency_ms"]["bystander"],
            **out["deliveries"]["bystander"],
            "closes": out["closes"],
            "refused": out["refused"],
            "acked": out["acked"],
            "unanswered": out["unanswered"],
            "gaps_open": out["gaps_open"],
            "lost_detail": out["lost_detail"]["bystander"],
            "drain_s": drained_s,
            "drain_hit_maximum": drained_s >= drain_max,
        },
        # The older table and ratio read these: the first wave.
        "succeeded": cold["succeeded"],
        "failures": cold["failures"],
        "handshakes_per_s": cold["handshakes_per_s"],
        "connect_to_joined_ms": cold["connect_to_joined_ms"],
    }


async def restart(t: Target, cfg: Config, note: Any) -> dict[str, Any]:
    if not t.kind.resumes:
        raise HarnessError(f"{t.kind.name} does not resume (join.since): a restart would lose messages by design")
    n, rooms = cfg.restart_conns, cfg.restart_rooms
    async with NodeFleet(t.host, t.port, t.origin if t.kind.authenticates else None) as fleet:
        members = await fleet.add(t.reuse_cookies(n), [[f"restart-{i % rooms}"] for i in range(n)], resume=True)
        note(f"opening {n}")
        await fleet.open(members, concurrency=500, join_within=60)
        # Those that joined are the ones measured (a client that never got in
        # cannot come back); senders are the first joined member of each room.
        status = await fleet.members(members)
        joined = [m for m, s in zip(members, status, strict=True) if s["open"]]
        if not joined:
            raise HarnessError(f"{t.kind.name}: no client joined before the restart: {fleet.failures}")
        await fleet.call("forget", indices=[m for m, s in zip(members, status, strict=True) if not s["open"]])
        senders = []
        for i in range(rooms):
            first = next((m for m in joined if m % rooms == members[i] % rooms), None)
            if first is not None:
                senders.append((first, f"restart-{i}"))
        step = await fleet.new_step("restart")
        sending = asyncio.get_running_loop().create_task(
            fleet.send_open_loop(senders, cfg.restart_rate, cfg.restart_window_s, BODY_BYTES)
        )
        await asyncio.sleep(cfg.restart_window_s / 4)
        note("restarting the server")
        t_stop = time.monotonic()
        down_s = await asyncio.to_thread(t.restart)
        note("waiting for every client to rejoin")
        back_s = None
        deadline = time.monotonic() + cfg.restart_back_max_s
        while time.monotonic() < deadline:
            status = await fleet.members(joined)
            if all(m["open"] for m in status):
                back_s = round(time.monotonic() - t_stop, 2)
                break
            await asyncio.sleep(0.2)
        sent, lag = await sending
        await fleet.drain(quiet=max(cfg.quiet_s, 2.0), maximum=cfg.drain_max_s * 2)
        out = await fleet.outcome(step, ["normal"])
        status = await fleet.members(joined)
    d = out["deliveries"]["normal"]
    return {
        "clients": n,
        "joined_before_restart": len(joined),
        "rooms": rooms,
        "rate_msgs": cfg.restart_rate,
        "sent": sent,
        "worst_send_lag_ms": lag,
        "server_stop_and_start_s": round(down_s, 2),
        "seconds_until_all_rejoined": back_s,
        "waited_s": cfg.restart_back_max_s,
        "still_out": sum(1 for m in status if not m["open"]),
        "reconnects": sum(m["reconnects"] for m in status),
        "missed": d["lost"],
        **out,
    }
