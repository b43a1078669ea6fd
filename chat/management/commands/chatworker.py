"""``python manage.py chatworker``: the persistence worker as a process of its own.

Server processes run a worker each by default (``KAIWA_WORKER_EMBEDDED``);
this command adds one more, or replaces them when the embedded ones are off.
SIGTERM or SIGINT writes and acknowledges the current batch, then exits 0.
``--status`` prints what is waiting to be persisted and exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection
from redis.exceptions import RedisError

from chat import embedded_redis
from chat.clusterlog import message_log
from chat.messagelog import RoomBacklog
from chat.models import Message, Room, UnstoredMessage
from chat.redisclient import make_async_client
from chat.worker import Worker

logger = logging.getLogger("kaiwa.worker")

UNSTORED_LISTED = 50


def _age(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f} s"


class Command(BaseCommand):
    help = "Run the persistence worker (Redis -> database), or print its backlog with --status."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--status",
            action="store_true",
            help="Print the backlog (entries not yet in the database, age of the oldest) and exit.",
        )
        parser.add_argument("--rooms", action="store_true", help="With --status: one line per room that has a backlog.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rooms"] and not options["status"]:
            raise CommandError("--rooms goes with --status: python manage.py chatworker --status --rooms")
        embedded = None
        if settings.KAIWA_EMBEDDED_REDIS_SOCKET is not None:
            embedded = embedded_redis.ensure_running(settings.KAIWA_EMBEDDED_REDIS_SOCKET)
        try:
            if options["status"]:
                try:
                    asyncio.run(self._status(per_room=options["rooms"]))
                except RedisError as exc:
                    raise CommandError(f"Redis at REDIS_URL is not reachable ({exc}); check REDIS_URL.") from None
            else:
                self._check_database()
                asyncio.run(self._run())
        finally:
            embedded_redis.stop(embedded)

    def _check_database(self) -> None:
        """Refuse to start against a database without Kaiwa's tables: it would retry forever."""
        try:
            tables = connection.introspection.table_names()
        except DatabaseError as exc:
            # Not fatal: the worker waits for the database like during an outage.
            logger.warning("database not reachable at start (%s); the worker will retry", exc)
            return
        finally:
            connection.close()
        if Message._meta.db_table not in tables:
            raise CommandError(
                f"The database at DATABASE_URL has no {Message._meta.db_table} table: run "
                "python manage.py migrate first."
            )

    async def _run(self) -> None:
        worker = Worker()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    async def _status(self, *, per_room: bool) -> None:
        client = make_async_client()
        try:
            log = message_log(
                client, dedup_seconds=settings.KAIWA_DEDUP_SECONDS, stream_keep=settings.KAIWA_STREAM_KEEP
            )
            rooms = await log.backlog_by_room(await log.active_rooms())
        finally:
            await client.aclose()
        total = sum(r.total for r in rooms)
        pending = sum(r.pending for r in rooms)
        ages = [r.oldest_age_ms for r in rooms if r.oldest_age_ms is not None]
        if not total:
            self.stdout.write("backlog: 0 entries not yet in the database")
            await self._unstored()
            return
        self.stdout.write(
            f"backlog: {total} entries not yet in the database ({pending} being written or held by a "
            f"stopped worker, {total - pending} not read yet); oldest {_age(max(ages) if ages else None)} old"
        )
        if per_room:
            slugs = await self._slugs(rooms)
            for r in sorted(rooms, key=lambda r: -r.total):
                name = slugs.get(r.room_id, "(deleted)")
                self.stdout.write(
                    f"room {name} (id {r.room_id}): {r.total} entries ({r.pending} pending, "
                    f"{r.undelivered} not read), oldest {_age(r.oldest_age_ms)} old"
                )
        await self._unstored()

    async def _unstored(self) -> None:
        """Acked messages the worker kept because storing them would contradict the history (protocol.md 7.1)."""
        try:
            count = await UnstoredMessage.objects.acount()
            kept = [m async for m in UnstoredMessage.objects.order_by("room_id", "seq")[:UNSTORED_LISTED]]
        except DatabaseError as exc:
            self.stdout.write(f"unstored: unknown, the database is not reachable ({exc})")
            return
        if not count:
            return
        self.stdout.write(
            f"unstored: {count} acked messages could not be stored without a conflict; they are kept in the "
            "table chat_unstoredmessage until an operator acts"
        )
        for m in kept:
            self.stdout.write(
                f"  room {m.room_id} seq {m.seq} epoch {m.epoch or '-'} by {m.author_username!r} at "
                f"{m.created_at.isoformat()}: {m.reason}"
            )
        if count > len(kept):
            self.stdout.write(f"  ... and {count - len(kept)} more")

    async def _slugs(self, rooms: list[RoomBacklog]) -> dict[int, str]:
        ids = [r.room_id for r in rooms]
        return {pk: slug async for pk, slug in Room.objects.filter(pk__in=ids).values_list("pk", "slug")}
