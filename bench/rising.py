"""Rising-rate scenarios (calibration, fan-out, many rooms), on the Node load generator.

The offered rate rises step by step until p99 passes ``P99_LIMIT_MS`` or any
delivery is lost, refused or unanswered; a step that failed on latency alone is
measured once more before the ramp ends. Every step records the generator's own
CPU: a step where it was near a full core measured the generator, not the
server, and the report says so.
"""

from __future__ import annotations

import time
from typing import Any

from bench.nodefleet import NodeCpu, NodeFleet
from bench.procs import HarnessError, summarize_samples
from bench.scenarios import P99_LIMIT_MS, Config
from bench.servers import Target

BODY_BYTES = 200


def _deliv(out: dict[str, Any], group: str = "normal") -> dict[str, int]:
    d: dict[str, int] = out["deliveries"].get(group, {"delivered": 0, "lost": 0, "refused": 0, "expected": 0})
    return d


def _failure_reason(step: dict[str, Any]) -> str:
    d = _deliv(step)
    why = []
    p99 = step["latency_ms"]["normal"]["p99"]
    if p99 is None or p99 > P99_LIMIT_MS:
        why.append(f"p99 {p99} ms")
    if d["lost"]:
        why.append(f"{d['lost']} of {d['expected']} deliveries lost")
    if step["refused"]:
        why.append(f"refused {step['refused']}")
    if step["unanswered"]:
        why.append(f"{step['unanswered']} sends unanswered")
    return f"at {step['rate_msgs']} msg/s: " + ", ".join(why)


async def rising_rate(
    t: Target,
    cfg: Config,
    *,
    rooms: list[str],
    conns_per_room: int,
    senders_per_room: int,
    rates: list[int],
    note: Any,
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    stopped_early: str | None = None
    async with NodeFleet(t.host, t.port, t.origin if t.kind.authenticates else None) as fleet:
        cookies = t.reuse_cookies(len(rooms) * conns_per_room)
        # A receiver closed for reading too slowly reconnects and resumes, as clients should.
        members = await fleet.add(cookies, [[r] for r in rooms for _ in range(conns_per_room)], resume=True)
        durations = await fleet.open(members)
        if not durations:
            raise HarnessError(f"{t.kind.name}: no connection could be opened and joined: {fleet.failures}")
        senders = [
            (m, rooms[i // conns_per_room]) for i, m in enumerate(members) if i % conns_per_room < senders_per_room
        ]
        # Warm-up (not recorded): first connections to Redis and the database, code paths, caches.
        note("warm-up")
        await fleet.new_step("warm-up")
        await fleet.send_open_loop(senders, rates[0], cfg.warmup_s, BODY_BYTES)
        await fleet.drain(quiet=cfg.quiet_s, maximum=cfg.drain_max_s)
        queue = list(rates)
        retried: set[int] = set()
        ramp_start = time.monotonic()
        while queue:
            if time.monotonic() - ramp_start > cfg.ramp_max_s:
                stopped_early = f"stopped raising the rate after {cfg.ramp_max_s:.0f} s (time budget)"
                break
            if best is not None and time.monotonic() - cfg.started_at > cfg.run_budget_s:
                stopped_early = f"stopped raising the rate: the whole run passed its {cfg.run_budget_s:.0f} s budget"
                break
            rate = queue.pop(0)
            if not t.alive():
                raise HarnessError(f"{t.kind.name} died during the run:\n{t.process.log_tail()}")
            note(f"{rate} msg/s")
            step_id = await fleet.new_step(f"{rate}")
            with t.sampler.window() as samples:
                async with NodeCpu(fleet) as cpu:
                    t0 = time.monotonic()
                    sent, lag = await fleet.send_open_loop(senders, rate, cfg.step_s, BODY_BYTES)
                    send_s = time.monotonic() - t0
            drained = await fleet.drain(quiet=cfg.quiet_s, maximum=cfg.drain_max_s)
            out = await fleet.outcome(step_id, ["normal"])
            d = _deliv(out)
            lat = out["latency_ms"]["normal"]
            refused = sum(out["refused"].values())
            ok = (
                lat["p99"] is not None
                and lat["p99"] <= P99_LIMIT_MS
                and d["lost"] == 0
                and refused == 0
                and out["unanswered"] == 0
                and not out["closes"]
            )
            res = {
                "rate_msgs": rate,
                "offered_deliveries_per_s": rate * conns_per_room,
                "sent": sent,
                "send_seconds": round(send_s, 2),
                # Over the scheduled window (n messages at `rate`), stretched by how far sending fell behind.
                "delivered_per_s": round(d["delivered"] / (sent / rate + max(0.0, lag) / 1000), 1) if sent else None,
                "worst_send_lag_ms": lag,
                "drain_s": drained,
                "sustainable": ok,
                "loadgen_cpu_percent": cpu.percent,
                "resources": summarize_samples(samples),
                **out,
            }
            steps.append(res)
            if ok:
                best = res
            elif rate not in retried and d["lost"] == 0 and not out["closes"] and refused == 0:
                # Latency alone failed: measure this rate once more before
                # concluding, so one scheduling hiccup does not end the ramp.
                retried.add(rate)
                res["retried"] = True
                queue.insert(0, rate)
            else:
                break
        failures = dict(fleet.failures)
    return {
        "rooms": len(rooms),
        "connections_per_room": conns_per_room,
        "senders_per_room": senders_per_room,
        "load_generator": "node",
        "connect_failures": failures,
        "steps": steps,
        "max_sustainable_deliveries_per_s": best["delivered_per_s"] if best else 0,
        "max_sustainable_rate_msgs": best["rate_msgs"] if best else 0,
        "loadgen_limited": bool(best and best["loadgen_cpu_percent"] >= LOADGEN_BUSY)
        or bool(steps and not steps[-1]["sustainable"] and steps[-1]["loadgen_cpu_percent"] >= LOADGEN_BUSY),
        "first_failure": _failure_reason(steps[-1]) if steps and not steps[-1]["sustainable"] else None,
        "stopped_early": stopped_early,
    }


# A generator past this share of its core is the limit of the measurement.
LOADGEN_BUSY = 90.0


async def fanout(t: Target, cfg: Config, note: Any) -> dict[str, Any]:
    return await rising_rate(
        t,
        cfg,
        rooms=["fanout"],
        conns_per_room=cfg.fanout_conns,
        senders_per_room=cfg.fanout_senders,
        rates=cfg.fanout_rates,
        note=note,
    )


async def calibration(t: Target, cfg: Config, note: Any) -> dict[str, Any]:
    return await rising_rate(
        t,
        cfg,
        rooms=["fanout"],
        conns_per_room=cfg.fanout_conns,
        senders_per_room=cfg.fanout_senders,
        rates=cfg.calibration_rates,
        note=note,
    )


async def many_rooms(t: Target, cfg: Config, note: Any) -> dict[str, Any]:
    return await rising_rate(
        t,
        cfg,
        rooms=[f"many-{i}" for i in range(cfg.many_rooms)],
        conns_per_room=cfg.many_conns,
        senders_per_room=1,
        rates=cfg.many_rates,
        note=note,
    )
