"""Script calls of one event-loop iteration sent to Redis as one pipeline (auto-pipelining).

Each call through redis-py costs about as much client CPU as a whole small
pipeline (pool checkout, packing, a socket write, a reply read). Under load
many calls start in the same loop iteration (the appends of frames that came
in together, the joins of a reconnect storm): those go out as one pipeline,
so one write and one read serve them all; a lone call pays one extra loop turn.

A batch also waits for the one before it to be answered, for at most
``FOLLOW_SECONDS``: the calls that come in meanwhile go out with it. Under a
steady load of lone calls (100 rooms each getting a message now and then)
nearly every loop iteration had one call, so each paid redis-py's whole
per-command cost (about 48 us of client CPU against 7 us for a command in a
pipeline, measured here) and a socket write that wakes Redis on the core the
server shares with it. While nothing is in flight a call goes out at once, as
before; the bound keeps a batch stuck on a dead connection from holding up the
next for longer than that (each batch has its own connection from the pool).

Every call gets its own reply or its own error, in order, as if it had been
sent alone. A batch that fails as a whole (connection lost, timeout) fails
each of its calls with that error; whether Redis ran them is as unknown as
for a single call, and callers already cope (Kaiwa re-sends carry their
``client_id``). Scripts Redis does not know (restarted, ``SCRIPT FLUSH``) are
loaded and their calls run again. A Redis Cluster client calls directly:
its pipelines split by slot anyway.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

# How long a batch waits for the previous one's answer before going out beside it.
FOLLOW_SECONDS = 0.005


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(eq=False, slots=True)
class _Call:
    script: AsyncScript
    keys: list[Any]
    args: list[Any]
    future: asyncio.Future[Any]


class ScriptBatch:
    """Batches the script calls made on one client (one per client and event loop)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.direct = isinstance(client, RedisCluster)
        self._pending: list[_Call] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._in_flight: asyncio.Task[None] | None = None  # the newest batch sent

    async def call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """``script(keys=keys, args=args)``, sent with the other calls of this loop iteration."""
        future = self.enqueue(script, keys, args)
        if future is None:
            return await script(keys=keys, args=args)
        return await future

    def enqueue(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> asyncio.Future[Any] | None:
        """Queue a call; its reply arrives on the returned future (None: call it directly, no batching here)."""
        if self.direct:
            return None
        loop = asyncio.get_running_loop()
        if not self._pending:
            # Runs after the callbacks already scheduled for this iteration:
            # the calls they make land in the same batch.
            task = loop.create_task(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        future: asyncio.Future[Any] = loop.create_future()
        future.add_done_callback(_retrieved)  # a shared reply whose callers all gave up is still answered
        self._pending.append(_Call(script, keys, args, future))
        return future

    def on_flush(self) -> None:
        """Called as a batch leaves (subclasses drop what they shared within it)."""

    async def _flush(self) -> None:
        previous = self._in_flight
        self._in_flight = asyncio.current_task()
        if previous is not None and not previous.done():
            try:
                # Calls keep joining self._pending meanwhile.
                await asyncio.wait((previous,), timeout=FOLLOW_SECONDS)
            except BaseException:
                batch, self._pending = self._pending, []
                for call in batch:
                    call.future.cancel()
                raise
        batch, self._pending = self._pending, []
        self.on_flush()
        try:
            replies = await self._execute(batch)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                for script in {id(batch[i].script): batch[i].script for i in missing}.values():
                    await self.client.script_load(script.script)
                for i, reply in zip(missing, await self._execute([batch[i] for i in missing]), strict=True):
                    replies[i] = reply
        except Exception as exc:
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        except BaseException:
            for call in batch:
                call.future.cancel()
            raise
        for call, reply in zip(batch, replies, strict=True):
            if call.future.done():
                continue
            if isinstance(reply, Exception):
                call.future.set_exception(reply)
            else:
                call.future.set_result(reply)

    async def _execute(self, calls: list[_Call]) -> list[Any]:
        if len(calls) == 1:
            # Alone: a plain EVALSHA costs less than a pipeline of one.
            call = calls[0]
            try:
                return [await self.client.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)]
            except NoScriptError as exc:
                return [exc]
        async with self.client.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
