"""The handshake's auth cache in Redis: its keys, and the invalidation Django's signals run.

``wsapp.auth`` keeps one record per session that Django's rules accepted
(session exists and is unexpired, backend configured, user active, session
auth hash matching): a WebSocket handshake then costs one Redis read and no
database. The record must never outlive a revocation, so every change that can
end a session drops it here, in the process that made the change:

* a session deleted or saved (logout, ``cycle_key``, the admin,
  ``clearsessions``, ``set_expiry``): that session's record;
* a user saved (password hash, ``is_active``, but also the username the
  record carries) or deleted: every record of that user (a per-user set lists
  them).

Each invalidation also increments ``REV_KEY``. A handshake that missed the
cache reads ``REV_KEY`` *before* it reads the database and writes its record
only if ``REV_KEY`` is unchanged (one atomic script), so a check that read the
database just before a revocation cannot put a stale record back after it.
Inside a transaction the invalidation runs again once it commits: a check that
read the old, still visible rows in between is dropped then.

Changes that bypass model signals (``QuerySet.update()``, raw SQL) are bounded
by the record's lifetime, ``KAIWA_AUTH_CACHE_SECONDS``.

Keys hash the session key with ``SECRET_KEY`` and the settings the rules
depend on (``SECRET_KEY_FALLBACKS``, ``AUTHENTICATION_BACKENDS``,
``AUTH_USER_MODEL``, ``SESSION_ENGINE``): changing any of them (a deploy that
drops a fallback secret) orphans every record instead of trusting it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils.crypto import salted_hmac

from chat.redisclient import sync_client

logger = logging.getLogger("kaiwa.authcache")

# One hash tag: in Redis Cluster every auth key lives in one slot, so the
# handshake's MGET and the scripts below never span slots.
KEY_PREFIX = "kaiwa:auth:{auth}:"
REV_KEY = KEY_PREFIX + "rev"

# KEYS: rev, every user's record set  (records of users: deleted with their set)
_DROP_USERS = """
redis.call('INCR', KEYS[1])
for i = 2, #KEYS do
  local records = redis.call('SMEMBERS', KEYS[i])
  for _, key in ipairs(records) do redis.call('DEL', key) end
  redis.call('DEL', KEYS[i])
end
return 1
"""


def _context() -> str:
    return "|".join(
        [
            *settings.SECRET_KEY_FALLBACKS,
            *settings.AUTHENTICATION_BACKENDS,
            settings.AUTH_USER_MODEL,
            settings.SESSION_ENGINE,
        ]
    )


def session_record_key(session_key: str) -> str:
    """The Redis key of a session's record (the session key itself never appears in Redis here)."""
    digest = salted_hmac("kaiwa.authcache.session", session_key + "\x00" + _context(), algorithm="sha256")
    return KEY_PREFIX + "s:" + digest.hexdigest()[:40]


def user_set_key(user_id: Any) -> str:
    """The set of record keys written for one user."""
    return f"{KEY_PREFIX}u:{user_id}"


def _run(what: str, fn: Any) -> None:
    try:
        fn()
    except Exception as exc:
        logger.warning(
            "could not drop the cached auth of %s (%r); it expires within KAIWA_AUTH_CACHE_SECONDS "
            "(check that Redis at REDIS_URL is reachable)",
            what,
            exc,
        )


def _now_and_on_commit(what: str, fn: Any) -> None:
    _run(what, fn)
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: _run(what, fn), robust=True)


def invalidate_sessions(session_keys: list[str]) -> None:
    """Drop the records of these sessions (logout, session deleted or saved)."""
    keys = [session_record_key(k) for k in session_keys if k]
    if not keys:
        return

    def drop() -> None:
        pipe = sync_client().pipeline(transaction=True)
        pipe.incr(REV_KEY)
        pipe.delete(*keys)
        pipe.execute()

    _now_and_on_commit(f"{len(keys)} session(s)", drop)


def invalidate_users(user_ids: list[Any]) -> None:
    """Drop every record of these users (password or ``is_active`` changed, user deleted)."""
    if not user_ids:
        return
    keys = [REV_KEY, *(user_set_key(u) for u in user_ids)]

    def drop() -> None:
        sync_client().eval(_DROP_USERS, len(keys), *keys)

    _now_and_on_commit(f"user(s) {user_ids}", drop)
