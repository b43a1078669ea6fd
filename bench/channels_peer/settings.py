"""Settings of the Channels reference server: its own, never Kaiwa's.

Same database engine and options as Kaiwa (SQLite in WAL mode or PostgreSQL
with Django's pool), sessions in the database cached in the same Redis,
channel layer on the same Redis.
"""

import os
from typing import Any

import dj_database_url

SECRET_KEY = os.environ["SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()]
REDIS_URL = os.environ["REDIS_URL"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
    "bench.channels_peer",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.channels_peer.urls"
ASGI_APPLICATION = "bench.channels_peer.asgi.application"

_db: dict[str, Any] = dict(dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=0))
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 5,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif _db["ENGINE"] == "django.db.backends.postgresql":
    _db["OPTIONS"] = {"pool": {"min_size": 1, "max_size": 10, "timeout": 10}}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "peer:cache",
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

CHANNEL_LAYERS = {
    "default": {
        # channels_redis defaults: capacity 100 per channel, expiry 60 s.
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8's pool raises MaxConnectionsError past 100 connections,
        # which a connect storm reaches at once (every handshake does a
        # group_add); a Channels operator raises the pool size, so we do too.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "max_connections": 2000}]},
    }
}

USE_TZ = True
TIME_ZONE = "UTC"
