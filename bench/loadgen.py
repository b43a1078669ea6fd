"""The load generator: authenticated clients speaking Kaiwa's frames, and their bookkeeping.

* Every connection (a ``Member``) presents a real Django session cookie and an
  ``Origin`` the server trusts, joins its rooms and waits for ``joined``.
* Senders are open-loop: message ``n`` is due at ``t0 + n / rate`` whatever
  the server answers, and its *scheduled* time travels in the body
  (``"<monotonic ns>|<padding>"``), so a server (or a load generator) that
  falls behind shows up as latency instead of hiding it.
* Every receiver checks, per room, that ``seq`` only grows by one: a jump opens
  a gap, a lower ``seq`` either fills a gap (counted as out of order) or is a
  duplicate.
* Each message ends with one outcome per expected receiver: delivered, refused
  (the sender got an ``error`` frame, or its connection was closed with a
  code), or lost (accepted, or never answered, and never delivered).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.wsclient import Conn, connect


def now_ns() -> int:
    return time.monotonic_ns()


class Msg:
    """One message the load generator sent (or tried to)."""

    __slots__ = ("cid", "closed_code", "delivered", "refused", "room", "sender", "seq", "status", "step", "t_sched")

    def __init__(self, cid: str, room: str, sender: int, t_sched: int, step: int) -> None:
        self.cid = cid
        self.room = room
        self.sender = sender
        self.t_sched = t_sched
        self.step = step
        self.status = "pending"  # pending | acked | refused | unsent
        self.refused = ""  # error code, or "close <code>"
        self.seq = 0
        self.closed_code: int | None = None
        self.delivered: dict[str, int] = {}


@dataclass
class Member:
    """One client connection of the load generator."""

    idx: int
    cookie: str | None
    rooms: list[str]
    group: str = "normal"
    conn: Conn | None = None
    last_seq: dict[str, int] = field(default_factory=dict)
    missing: dict[str, set[int]] = field(default_factory=dict)
    joined_waiters: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    close_codes: list[int | None] = field(default_factory=list)
    reconnects: int = 0
    resume: bool = False
    stopped: bool = False  # the scenario closed it on purpose
    in_flight: dict[str, Msg] = field(default_factory=dict)
    received: int = 0

    def expected_in(self, room: str) -> bool:
        return room in self.rooms


@dataclass
class StepStats:
    """What happened during one measured step."""

    id: int
    label: str
    latencies: dict[str, array[float]] = field(default_factory=dict)  # group -> ms
    deliveries: int = 0
    late_or_stray: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)  # server-initiated closes, by code
    recovered_over_http: int = 0  # gaps filled from the history API after ``joined.reset``


def _pct(values: Any, p: float) -> float | None:
    n = len(values)
    if n == 0:
        return None
    ordered = sorted(values)
    k = min(n - 1, max(0, round(p / 100 * (n - 1))))
    return round(ordered[k], 2)


def latency_summary(values: Any) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": _pct(values, 50),
        "p90": _pct(values, 90),
        "p99": _pct(values, 99),
        "max": round(max(values), 2) if len(values) else None,
    }


class Fleet:
    """All connections of one scenario, and the bookkeeping of every message."""

    def __init__(self, host: str, port: int, origin: str | None, *, path: str = "/ws") -> None:
        self.host = host
        self.port = port
        self.origin = origin
        self.path = path
        self.members: list[Member] = []
        self.msgs: dict[str, Msg] = {}
        self.step: StepStats | None = None
        self.steps: list[StepStats] = []
        self.counter = 0
        self.presence_frames = 0
        self.other_frames: dict[str, int] = {}
        self.connect_failures: dict[str, int] = {}
        self.progress = 0  # deliveries + answers, to detect quiet periods
        self.on_frame: Callable[[Member, dict[str, Any]], None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -- connections -----------------------------------------------------------

    def add(self, cookie: str | None, rooms: list[str], group: str = "normal") -> Member:
        member = Member(idx=len(self.members), cookie=cookie, rooms=list(rooms), group=group)
        self.members.append(member)
        return member

    async def open(self, member: Member, *, since: bool = False, open_timeout: float = 30.0) -> float:
        """Connect and join the member's rooms; returns seconds until every ``joined``."""
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        member.joined_waiters = {room: loop.create_future() for room in member.rooms}
        conn = await connect(
            self.host,
            self.port,
            path=self.path,
            origin=self.origin,
            cookie=member.cookie,
            on_text=self._on_text,
            on_close=self._on_close,
            tag=member,
            open_timeout=open_timeout,
        )
        member.conn = conn
        sent_since: dict[str, int] = {}
        frames: dict[str, str] = {}
        try:
            for room in member.rooms:
                frame: dict[str, Any] = {"type": "join", "room": room}
                if since and room in member.last_seq:
                    frame["since"] = sent_since[room] = member.last_seq[room]
                frames[room] = json.dumps(frame)
                conn.send_text(frames[room])
            async with asyncio.timeout(open_timeout):
                for room in member.rooms:
                    while True:
                        waiter = member.joined_waiters[room]
                        either: set[asyncio.Future[Any]] = {waiter, conn.closed}
                        done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                        if waiter not in done:
                            raise ConnectionError(f"closed with {conn.close_code} before joined")
                        joined = waiter.result()
                        if joined.get("type") != "error":
                            break
                        # As the chat page does: unavailable is asked again after retry_after_ms.
                        code = str(joined.get("code"))
                        if code != "unavailable":
                            raise ConnectionError(f"join refused: {code}")
                        key = "join refused, sent again: unavailable"
                        self.connect_failures[key] = self.connect_failures.get(key, 0) + 1
                        await asyncio.sleep(max(250, int(joined.get("retry_after_ms") or 0)) / 1000)
                        member.joined_waiters[room] = loop.create_future()
                        conn.send_text(frames[room])
                    last = int(joined.get("last_seq", 0))
                    member.last_seq.setdefault(room, last)
                    if joined.get("reset") and room in sent_since:
                        # The backlog was too large to replay: as the contract
                        # says, the client reloads (since, last_seq] over HTTP.
                        self._reset_gap(member, room, sent_since[room], last)
        except BaseException:
            conn.abort()
            raise
        return time.monotonic() - t0

    async def open_many(
        self,
        members: list[Member],
        *,
        concurrency: int = 200,
        open_timeout: float = 30.0,
        tick: Callable[[int], None] | None = None,
    ) -> list[float]:
        """Open members with bounded concurrency; failures are counted, not raised."""
        sem = asyncio.Semaphore(concurrency)
        durations: list[float] = []
        done = 0

        async def one(m: Member) -> None:
            nonlocal done
            async with sem:
                try:
                    durations.append(await self.open(m, open_timeout=open_timeout))
                except Exception as exc:
                    key = type(exc).__name__ + (f" {exc}" if str(exc) else "")
                    self.connect_failures[key[:120]] = self.connect_failures.get(key[:120], 0) + 1
                done += 1
                if tick is not None:
                    tick(done)

        await asyncio.gather(*(one(m) for m in members))
        return durations

    def close_all(self) -> None:
        for m in self.members:
            m.stopped = True
            if m.conn is not None:
                m.conn.close()

    async def wait_closed(self, grace: float = 10.0) -> None:
        waits = [m.conn.closed for m in self.members if m.conn is not None]
        if waits:
            try:
                async with asyncio.timeout(grace):
                    await asyncio.gather(*waits)
            except TimeoutError:
                for m in self.members:
                    if m.conn is not None:
                        m.conn.abort()

    # -- incoming frames -----------------------------------------------------------

    def _on_text(self, conn: Conn, data: bytes) -> None:
        member: Member = conn.tag
        t = now_ns()
        try:
            frame = json.loads(data)
            kind = frame["type"]
        except (ValueError, KeyError, TypeError):
            self.other_frames["unparseable"] = self.other_frames.get("unparseable", 0) + 1
            return
        if kind == "message":
            self._on_message(member, frame, t)
        elif kind == "ack":
            self._on_ack(member, frame)
        elif kind == "joined":
            waiter = member.joined_waiters.get(frame.get("room"))
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)
        elif kind == "error":
            waiter = member.joined_waiters.get(frame.get("room")) if frame.get("ref") == "join" else None
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)  # open() decides: send the join again, or give up
            self._on_error(member, frame)
        elif kind == "presence":
            self.presence_frames += 1
        else:
            self.other_frames[kind] = self.other_frames.get(kind, 0) + 1
        if self.on_frame is not None:
            self.on_frame(member, frame)

    def _on_message(self, member: Member, frame: dict[str, Any], t: int, *, via_http: bool = False) -> None:
        member.received += 1
        room = frame.get("room")
        seq = frame.get("seq")
        step = self.step
        if isinstance(room, str) and isinstance(seq, int):
            last = member.last_seq.get(room, 0)
            if seq == last + 1:
                member.last_seq[room] = seq
            elif seq > last + 1:
                member.missing.setdefault(room, set()).update(range(last + 1, seq))
                member.last_seq[room] = seq
            else:
                gaps = member.missing.get(room)
                if gaps is not None and seq in gaps:
                    gaps.discard(seq)
                    if step is not None:
                        if via_http:
                            step.recovered_over_http += 1
                        else:
                            step.out_of_order += 1
                elif step is not None:
                    step.duplicates += 1
                    return
        msg = self.msgs.get(frame.get("client_id") or "")
        if msg is None:
            if step is not None:
                step.late_or_stray += 1
            return
        msg.delivered[member.group] = msg.delivered.get(member.group, 0) + 1
        self.progress += 1
        body = frame.get("body") or ""
        bar = body.find("|", 0, 24)
        sched = int(body[:bar]) if bar > 0 else msg.t_sched
        target = self.steps[msg.step] if msg.step < len(self.steps) else None
        if target is not None:
            target.deliveries += 1
            lat = target.latencies.get(member.group)
            if lat is None:
                lat = target.latencies[member.group] = array("d")
            lat.append((t - sched) / 1e6)

    def _on_ack(self, member: Member, frame: dict[str, Any]) -> None:
        msg = member.in_flight.pop(frame.get("client_id") or "", None)
        if msg is None:
            return
        msg.status = "acked"
        msg.seq = int(frame.get("seq") or 0)
        self.progress += 1

    def _on_error(self, member: Member, frame: dict[str, Any]) -> None:
        code = str(frame.get("code"))
        if self.step is not None:
            self.step.errors[code] = self.step.errors.get(code, 0) + 1
        msg = member.in_flight.pop(str(frame.get("ref")), None)
        if msg is not None:
            msg.status = "refused"
            msg.refused = code
            self.progress += 1

    def _on_close(self, conn: Conn) -> None:
        member: Member = conn.tag
        if member.conn is not conn:
            return
        code = conn.close_code
        member.close_codes.append(code)
        if self.step is not None and not member.stopped:
            key = str(code) if code is not None else "no close frame"
            self.step.closes[key] = self.step.closes.get(key, 0) + 1
        for msg in member.in_flight.values():
            msg.status = "refused"
            msg.refused = f"close {code}" if code is not None else "connection lost"
            msg.closed_code = code
        member.in_flight.clear()
        if member.resume and not member.stopped and code != 4401:
            member.reconnects += 1
            asyncio.get_running_loop().create_task(self._reopen(member))

    def _reset_gap(self, member: Member, room: str, since: int, last: int) -> None:
        if last > member.last_seq.get(room, 0):
            member.missing.setdefault(room, set()).update(range(member.last_seq.get(room, 0) + 1, last + 1))
            member.last_seq[room] = last
        task = asyncio.get_running_loop().create_task(self._history(member, room, since, last))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _history(self, member: Member, room: str, since: int, upto: int) -> None:
        """Fetch messages ``since < seq <= upto`` from the history API, as a browser does after ``reset``."""
        got: dict[int, dict[str, Any]] = {}
        try:
            # History may lag the live stream by the worker's delay: wait until it has ``upto``.
            for _ in range(40):
                page = await asyncio.to_thread(self._http_history, member, room, upto + 1, 1)
                if page["messages"] and page["messages"][-1]["seq"] >= upto:
                    break
                await asyncio.sleep(0.25)
            before = upto + 1
            while before > since + 1:
                page = await asyncio.to_thread(self._http_history, member, room, before, 100)
                msgs = [m for m in page["messages"] if m["seq"] > since]
                if not msgs:
                    break
                for m in msgs:
                    got[m["seq"]] = m
                before = min(m["seq"] for m in msgs)
                if not page.get("has_more"):
                    break
        except Exception as exc:
            key = "history " + type(exc).__name__
            self.connect_failures[key] = self.connect_failures.get(key, 0) + 1
        for seq in sorted(got):
            self._on_message(member, {**got[seq], "room": room}, now_ns(), via_http=True)

    def _http_history(self, member: Member, room: str, before: int, limit: int) -> dict[str, Any]:
        url = f"http://{self.host}:{self.port}/api/rooms/{room}/messages?before={before}&limit={limit}"
        req = urllib.request.Request(url, headers={"Cookie": member.cookie or "", "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            data: dict[str, Any] = json.load(resp)
        return data

    async def _reopen(self, member: Member) -> None:
        # A polite client backs off a little more on each consecutive reconnect.
        await asyncio.sleep(min(2.0, 0.1 * member.reconnects))
        if member.stopped:
            return
        try:
            await self.open(member, since=True, open_timeout=20)
        except Exception as exc:
            key = "reconnect " + type(exc).__name__
            self.connect_failures[key] = self.connect_failures.get(key, 0) + 1

    # -- sending ---------------------------------------------------------------------

    def new_step(self, label: str) -> StepStats:
        step = StepStats(id=len(self.steps), label=label)
        self.steps.append(step)
        self.step = step
        return step

    def send(self, member: Member, room: str, padding: str, t_sched: int) -> Msg:
        self.counter += 1
        cid = f"b{self.counter}"
        step = self.step.id if self.step is not None else -1
        msg = Msg(cid, room, member.idx, t_sched, step)
        self.msgs[cid] = msg
        conn = member.conn
        if conn is None or not conn.is_open:
            msg.status = "refused"
            code = conn.close_code if conn is not None else None
            msg.refused = f"close {code}" if code is not None else "not connected"
            return msg
        member.in_flight[cid] = msg
        body = f"{t_sched}|{padding}"
        try:
            conn.send_text(
                '{"type": "send", "room": '
                + json.dumps(room)
                + ', "body": '
                + json.dumps(body)
                + ', "client_id": "'
                + cid
                + '"}'
            )
        except ConnectionError:
            member.in_flight.pop(cid, None)
            msg.status = "refused"
            msg.refused = f"close {conn.close_code}" if conn.close_code is not None else "connection lost"
        return msg

    async def send_open_loop(
        self, senders: list[tuple[Member, str]], rate: float, duration: float, padding: str, max_msgs: int | None = None
    ) -> tuple[int, float]:
        """Send ``rate`` messages/s in total, spread over ``senders``, for ``duration`` s.

        Returns (messages sent, worst lag behind schedule in ms).
        """
        per_sender = rate / len(senders)
        interval = int(1e9 / per_sender)
        t0 = now_ns() + 20_000_000
        count = max(1, int(duration * per_sender))
        if max_msgs is not None:
            count = min(count, max(1, max_msgs // len(senders)))
        worst = 0.0
        sent = 0

        async def run(k: int, member: Member, room: str) -> None:
            nonlocal worst, sent
            start = t0 + (interval * k) // len(senders)
            for n in range(count):
                due = start + n * interval
                delay = (due - now_ns()) / 1e9
                if delay > 0.0005:
                    await asyncio.sleep(delay)
                lag = (now_ns() - due) / 1e6
                worst = max(worst, lag)
                self.send(member, room, padding, due)
                sent += 1

        await asyncio.gather(*(run(k, m, r) for k, (m, r) in enumerate(senders)))
        return sent, round(worst, 1)

    async def drain(self, *, quiet: float, maximum: float, expected: Callable[[], bool] | None = None) -> float:
        """Wait until ``expected()`` holds, or nothing arrived for ``quiet`` s, or ``maximum`` s passed."""
        t0 = time.monotonic()
        last_progress = self.progress
        last_change = t0
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if expected is not None and expected():
                break
            if self.progress != last_progress:
                last_progress = self.progress
                last_change = now
            elif now - last_change >= quiet:
                break
            if now - t0 >= maximum:
                break
        return round(time.monotonic() - t0, 2)

    # -- accounting -------------------------------------------------------------------

    def receivers(self, room: str, group: str | None = None) -> int:
        return sum(1 for m in self.members if m.expected_in(room) and (group is None or m.group == group))

    def outcome(self, step: StepStats, *, groups: list[str] | None = None) -> dict[str, Any]:
        """Per-message and per-delivery outcomes of one step."""
        msgs = [m for m in self.msgs.values() if m.step == step.id]
        groups = groups or sorted({m.group for m in self.members})
        expected_by_room: dict[str, dict[str, int]] = {}
        res: dict[str, Any] = {
            "messages": len(msgs),
            "acked": 0,
            "refused": {},
            "unanswered": 0,
            "deliveries": {g: {"delivered": 0, "lost": 0, "refused": 0, "expected": 0} for g in groups},
            "delivered_despite_refusal": 0,
        }
        for msg in msgs:
            if msg.status == "acked":
                res["acked"] += 1
            elif msg.status == "refused":
                res["refused"][msg.refused] = res["refused"].get(msg.refused, 0) + 1
            else:
                res["unanswered"] += 1
            exp = expected_by_room.get(msg.room)
            if exp is None:
                exp = expected_by_room[msg.room] = {g: self.receivers(msg.room, g) for g in groups}
            for g in groups:
                d = res["deliveries"][g]
                got = min(msg.delivered.get(g, 0), exp[g])
                d["expected"] += exp[g]
                d["delivered"] += got
                if msg.status == "refused":
                    d["refused"] += exp[g] - got
                    res["delivered_despite_refusal"] += got
                else:
                    d["lost"] += exp[g] - got
        res["latency_ms"] = {g: latency_summary(step.latencies.get(g, array("d"))) for g in groups}
        res["out_of_order"] = step.out_of_order
        res["duplicates"] = step.duplicates
        res["errors"] = step.errors
        res["closes"] = step.closes
        res["recovered_over_http"] = step.recovered_over_http
        res["gaps_open"] = sum(len(s) for m in self.members for s in m.missing.values())
        return res

    def all_delivered(self, step: StepStats) -> Callable[[], bool]:
        """A predicate for ``drain``: every answered message reached every expected receiver."""
        msgs = [m for m in self.msgs.values() if m.step == step.id]
        need = {room: self.receivers(room) for room in {m.room for m in msgs}}

        def check() -> bool:
            for msg in msgs:
                if msg.status == "pending":
                    return False
                if msg.status == "acked" and sum(msg.delivered.values()) < need[msg.room]:
                    return False
            return True

        return check
