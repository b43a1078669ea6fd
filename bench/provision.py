"""Database-side helpers the harness runs in a child process, under a server's own settings.

The harness cannot import two Django settings modules in one process, so it
runs ``python -m bench.provision ...`` with the server's environment
(``DJANGO_SETTINGS_MODULE``, ``DATABASE_URL``, ``REDIS_URL`` ...):

* ``sessions``: create real users and real Django sessions (the same rows and
  the same signed session data ``django.contrib.auth.login`` writes), plus the
  rooms when the server has a room model; prints the session keys as JSON.
* ``dbstats``: wait until the persisted messages of one room reach a count,
  then print row count, duplicates and ack-to-database lag.

Users get an unusable password: hashing 10,000 passwords would take minutes
and is not what a chat server does per connection.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta
from typing import Any


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()


def sessions(count: int, prefix: str, rooms: list[str], room_model: str | None) -> dict[str, Any]:
    from django.apps import apps
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore as DbStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    user_model = get_user_model()
    names = [f"{prefix}-{i}" for i in range(count)]
    existing = set(user_model.objects.filter(username__in=names).values_list("username", flat=True))
    user_model.objects.bulk_create(
        [user_model(username=n, password="!bench-unusable") for n in names if n not in existing], batch_size=1000
    )
    users = {u.username: u for u in user_model.objects.filter(username__in=names)}
    store = DbStore()
    expire = timezone.now() + timedelta(days=1)
    keys: list[str] = []
    rows = []
    for n in names:
        user = users[n]
        key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
        data = {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
        rows.append(Session(session_key=key, session_data=store.encode(data), expire_date=expire))
        keys.append(key)
    Session.objects.bulk_create(rows, batch_size=1000)
    if room_model and rooms:
        model = apps.get_model(room_model)
        model.objects.bulk_create(
            [model(slug=slug, name=slug) for slug in rooms], ignore_conflicts=True, batch_size=500
        )
    return {"cookie_name": settings.SESSION_COOKIE_NAME, "sessions": keys}


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def dbstats(model_label: str, room_field: str, room: str, expect: int, timeout: float) -> dict[str, Any]:
    from django.apps import apps
    from django.db import close_old_connections

    model = apps.get_model(model_label)
    filt = {room_field: room}
    deadline = time.monotonic() + timeout
    waited_from = time.monotonic()
    count = 0
    while True:
        close_old_connections()
        count = model.objects.filter(**filt).count()
        if count >= expect or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    rows = list(model.objects.filter(**filt).values_list("seq", "created_at", "persisted_at"))
    seqs = [r[0] for r in rows]
    lags = [(r[2] - r[1]).total_seconds() * 1000 for r in rows]
    created = [r[1] for r in rows]
    persisted = [r[2] for r in rows]
    span = (max(persisted) - min(created)).total_seconds() if rows else 0.0
    pspan = (max(persisted) - min(persisted)).total_seconds() if rows else 0.0
    return {
        "rows": len(rows),
        "seqs": sorted(set(seqs)),
        "distinct_seq": len(set(seqs)),
        "expected": expect,
        "waited_s": round(time.monotonic() - waited_from, 2),
        "lag_ms_p50": _pct(lags, 50),
        "lag_ms_p99": _pct(lags, 99),
        "lag_ms_max": max(lags) if lags else None,
        "first_accept_to_last_row_s": round(span, 3),
        "rows_per_s": round(len(rows) / span, 1) if span > 0 else None,
        "rows_per_s_insert_window": round(len(rows) / pspan, 1) if pspan > 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.provision")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sessions")
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--prefix", required=True)
    s.add_argument("--rooms", default="")
    s.add_argument("--room-model", default="")
    d = sub.add_parser("dbstats")
    d.add_argument("--model", required=True)
    d.add_argument("--room-field", required=True)
    d.add_argument("--room", required=True)
    d.add_argument("--expect", type=int, required=True)
    d.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    _setup()
    if args.cmd == "sessions":
        rooms = [r for r in args.rooms.split(",") if r]
        out = sessions(args.count, args.prefix, rooms, args.room_model or None)
    else:
        out = dbstats(args.model, args.room_field, args.room, args.expect, args.timeout)
    json.dump(out, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
