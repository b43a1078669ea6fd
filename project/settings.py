"""Kaiwa settings: every value is read from the environment here, once.

Production is the default. ``DEBUG=1`` switches on development conveniences
(a generated secret key, local hosts, an embedded Redis); nothing else in the
code base reads the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from chat import logformat

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = BASE_DIR / ".kaiwa"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use 1/true/yes/on or 0/false/no/off.")


def _env_int(name: str, default: int, *, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number; set it to e.g. {default}.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is too small: it must be at least {minimum} (default {default}).")
    return value


def _env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number; set it to e.g. {default}.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is too small: it must be at least {minimum} (default {default}).")
    return value


def _env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = _env_bool("DEBUG", False)

_secret = os.environ.get("SECRET_KEY", "")
if not _secret:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Production mode (the default) needs a long random secret: "
            "export SECRET_KEY=\"$(python -c 'import secrets; print(secrets.token_urlsafe(50))')\", "
            "or set DEBUG=1 for local development."
        )
    # A development key that is stable per checkout, so sessions survive restarts.
    _secret = "django-insecure-dev-" + hashlib.sha256(str(BASE_DIR).encode()).hexdigest()
SECRET_KEY = _secret
SECRET_KEY_FALLBACKS = _env_list("SECRET_KEY_FALLBACKS", [])

ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # Before the admin: chat's admin/base_site.html (the site's name and icon) overrides the admin's.
    "chat",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "chat.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database -----------------------------------------------------------------

_default_db_url = f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
DATABASE_URL = os.environ.get("DATABASE_URL") or _default_db_url
try:
    _db: dict[str, Any] = dict(dj_database_url.parse(DATABASE_URL, conn_max_age=0))
except ValueError as exc:
    raise ImproperlyConfigured(
        f"DATABASE_URL={DATABASE_URL!r} is not understood ({exc}). "
        "Use e.g. sqlite:////abs/path/db.sqlite3 or postgres://user@host:5432/dbname."
    ) from None

if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL plus IMMEDIATE transactions: concurrent writers wait for the lock
    # instead of failing at once with "database is locked". The WAL is copied
    # back into the database every 10,000 pages (40 MB) rather than SQLite's
    # 1,000: the worker's batches dirty the same index pages again and again,
    # and each checkpoint writes (and syncs) them once (docs/architecture.md).
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 5,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=10000;",
    }
elif _db["ENGINE"] == "django.db.backends.postgresql":
    _db["OPTIONS"] = {
        "pool": {
            "min_size": 1,
            "max_size": _env_int("KAIWA_DB_POOL_MAX", 10),
            "timeout": 10,
            # Django adds check=ConnectionPool.check_connection: every connection
            # is checked on checkout, so a restarted PostgreSQL heals by itself.
            # psycopg_pool retries a lost server with doubling delays until this
            # many seconds, then starts afresh on the next request: without it,
            # after a 30 s outage the pool waited ~30 s more before reconnecting.
            "reconnect_timeout": 10,
        }
    }
# Under ASGI every request runs in a different thread; persistent connections
# would leak. The PostgreSQL pool above does the reuse instead.
_db["CONN_MAX_AGE"] = 0
_db["CONN_HEALTH_CHECKS"] = False
DATABASES = {"default": _db}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis ----------------------------------------------------------------------


def _embedded_redis_socket() -> Path:
    path = STATE_DIR / "redis.sock"
    if len(str(path)) < 100:
        return path
    # Unix socket paths are limited to ~107 bytes; deep checkouts use /tmp.
    digest = hashlib.sha256(str(BASE_DIR).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"kaiwa-{digest}" / "redis.sock"


def _host_port(item: str, name: str) -> tuple[str, int]:
    host, _, port = item.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ImproperlyConfigured(f"{name}: {item.strip()!r} is not host:port; write e.g. 10.0.0.5:26379.")
    return host.strip("[]"), int(port)


# Redis deployment (protocol 7.2): one server, Sentinel, or Cluster; see docs/redis-deployments.md.
KAIWA_REDIS_MODE = os.environ.get("KAIWA_REDIS_MODE", "").strip().lower() or "single"
if KAIWA_REDIS_MODE not in {"single", "sentinel", "cluster"}:
    raise ImproperlyConfigured(
        f"KAIWA_REDIS_MODE={KAIWA_REDIS_MODE!r} is not a Redis deployment: use single (one server at REDIS_URL), "
        "sentinel (with KAIWA_REDIS_SENTINELS and KAIWA_REDIS_SENTINEL_SERVICE) or cluster (seed nodes in REDIS_URL)."
    )
KAIWA_REDIS_SENTINELS = [_host_port(s, "KAIWA_REDIS_SENTINELS") for s in _env_list("KAIWA_REDIS_SENTINELS", [])]
KAIWA_REDIS_SENTINEL_SERVICE = os.environ.get("KAIWA_REDIS_SENTINEL_SERVICE", "").strip()
KAIWA_REDIS_CLUSTER_NODES: list[tuple[str, int]] = []
# An ack waits for this many replicas (Redis WAIT) for at most the timeout, else the sender gets `unavailable`.
KAIWA_ACK_REPLICAS = _env_int("KAIWA_ACK_REPLICAS", 0, minimum=0)
KAIWA_ACK_REPLICA_TIMEOUT_MS = _env_int("KAIWA_ACK_REPLICA_TIMEOUT_MS", 500)
if KAIWA_ACK_REPLICA_TIMEOUT_MS > 4000:
    raise ImproperlyConfigured(
        f"KAIWA_ACK_REPLICA_TIMEOUT_MS={KAIWA_ACK_REPLICA_TIMEOUT_MS} is longer than a Redis command may take "
        "(5 s socket timeout): use at most 4000 (default 500)."
    )
if KAIWA_REDIS_MODE == "sentinel":
    if not KAIWA_REDIS_SENTINELS or not KAIWA_REDIS_SENTINEL_SERVICE:
        raise ImproperlyConfigured(
            "KAIWA_REDIS_MODE=sentinel needs KAIWA_REDIS_SENTINELS (comma-separated host:port of your Sentinels, "
            "e.g. 10.0.0.5:26379,10.0.0.6:26379,10.0.0.7:26379) and KAIWA_REDIS_SENTINEL_SERVICE (the master's "
            "name in their 'sentinel monitor' line)."
        )
elif KAIWA_REDIS_SENTINELS or KAIWA_REDIS_SENTINEL_SERVICE:
    raise ImproperlyConfigured(
        f"KAIWA_REDIS_SENTINELS/KAIWA_REDIS_SENTINEL_SERVICE are set but KAIWA_REDIS_MODE={KAIWA_REDIS_MODE}: "
        "set KAIWA_REDIS_MODE=sentinel to use them, or unset them."
    )

REDIS_URL = os.environ.get("REDIS_URL", "").strip()
if KAIWA_REDIS_MODE == "sentinel":
    # Sentinel names the master; REDIS_URL may still carry the database, credentials and rediss://.
    REDIS_URL = REDIS_URL or "redis:///0"
    if "," in REDIS_URL:
        raise ImproperlyConfigured("REDIS_URL lists several hosts, which only KAIWA_REDIS_MODE=cluster reads.")
elif KAIWA_REDIS_MODE == "cluster":
    if not REDIS_URL:
        raise ImproperlyConfigured(
            "KAIWA_REDIS_MODE=cluster needs REDIS_URL with one or more seed nodes: "
            "export REDIS_URL=redis://10.0.0.5:7000,10.0.0.6:7000/0."
        )
    _scheme, _, _rest = REDIS_URL.partition("://")
    _netloc, _, _path = _rest.partition("/")
    _path = _path.partition("?")[0]
    if _scheme not in {"redis", "rediss"}:
        raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r}: a cluster is reached with redis:// or rediss://.")
    if _path not in {"", "0"}:
        raise ImproperlyConfigured(
            f"REDIS_URL={REDIS_URL!r} selects database {_path}: Redis Cluster has only database 0; end it in /0."
        )
    KAIWA_REDIS_CLUSTER_NODES = [
        _host_port(item, "REDIS_URL") for item in _netloc.rpartition("@")[2].split(",") if item.strip()
    ]
    if not KAIWA_REDIS_CLUSTER_NODES:
        raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r} names no seed node: write redis://host:7000/0.")
elif "," in REDIS_URL:
    raise ImproperlyConfigured(
        "REDIS_URL lists several hosts: set KAIWA_REDIS_MODE=cluster for a Redis Cluster, or give one server."
    )
KAIWA_EMBEDDED_REDIS_SOCKET: Path | None = None
if not REDIS_URL:
    if not DEBUG:
        raise ImproperlyConfigured(
            "REDIS_URL is not set. Kaiwa relays and stores messages through Redis: "
            "export REDIS_URL=redis://host:6379/0 (a Redis with appendonly yes), "
            "or set DEBUG=1 to start an embedded Redis for development."
        )
    KAIWA_EMBEDDED_REDIS_SOCKET = _embedded_redis_socket()
    REDIS_URL = f"unix://{KAIWA_EMBEDDED_REDIS_SOCKET}"
KAIWA_EMBEDDED_REDIS_DIR = KAIWA_EMBEDDED_REDIS_SOCKET.parent if KAIWA_EMBEDDED_REDIS_SOCKET else None

# Sessions live in the database and are cached in Redis: fast to check on every
# WebSocket handshake, and deleting a session (logout) takes effect at once.
CACHES = {
    "default": {
        # Django's backend takes one server URL; Sentinel and Cluster need Kaiwa's client.
        "BACKEND": "django.core.cache.backends.redis.RedisCache"
        if KAIWA_REDIS_MODE == "single"
        else "chat.redistopology.TopologyRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "kaiwa:cache",
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_COOKIE_AGE = _env_int("SESSION_COOKIE_AGE", 60 * 60 * 24 * 14)

# Auth -----------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The throttle backend refuses a throttled attempt before ModelBackend hashes a password (chat/throttle.py).
AUTHENTICATION_BACKENDS = [
    "chat.throttle.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
KAIWA_LOGIN_FAILURES = _env_int("KAIWA_LOGIN_FAILURES", 10)
KAIWA_LOGIN_WINDOW_SECONDS = _env_int("KAIWA_LOGIN_WINDOW_SECONDS", 900)
KAIWA_SIGNUP_PER_ADDRESS = _env_int("KAIWA_SIGNUP_PER_ADDRESS", 20)
KAIWA_SIGNUP_WINDOW_SECONDS = _env_int("KAIWA_SIGNUP_WINDOW_SECONDS", 3600)
# 0: the client address is the connection's peer. N: the N-th entry from the right of X-Forwarded-For.
KAIWA_TRUSTED_PROXY_HOPS = _env_int("KAIWA_TRUSTED_PROXY_HOPS", 0, minimum=0)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:room_list"
LOGOUT_REDIRECT_URL = "login"

# Internationalisation --------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files -----------------------------------------------------------------

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# Security -----------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = _env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_HSTS_SECONDS = _env_int("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", True)
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
    if _env_bool("SECURE_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# One line per event; json for log shippers; no traceback for a client's fault (chat/logformat.py).
KAIWA_LOG_FORMAT = os.environ.get("KAIWA_LOG_FORMAT", "").strip().lower() or "text"
if KAIWA_LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"KAIWA_LOG_FORMAT={KAIWA_LOG_FORMAT!r} is not a log format: use text or json.")
LOGGING: dict[str, Any] = logformat.logging_config(
    fmt=KAIWA_LOG_FORMAT, level=os.environ.get("KAIWA_LOG_LEVEL", "INFO")
)

# Kaiwa limits (docs/protocol.md section 4, plus the ones the contract leaves open)

KAIWA_MAX_BODY_CHARS = _env_int("KAIWA_MAX_BODY_CHARS", 4000)
KAIWA_MAX_FRAME_BYTES = _env_int("KAIWA_MAX_FRAME_BYTES", 65536, minimum=256)
KAIWA_RATE_BURST = _env_int("KAIWA_RATE_BURST", 20)
KAIWA_RATE_PER_SECOND = _env_float("KAIWA_RATE_PER_SECOND", 10.0, minimum=0.001)
KAIWA_MAX_ROOMS_PER_CONNECTION = _env_int("KAIWA_MAX_ROOMS_PER_CONNECTION", 100)
# Handshakes and joins worked on at once per process (wsapp.admission): the rest
# wait their turn, so a reconnect storm cannot stall the clients already connected.
KAIWA_ADMISSION_CONCURRENCY = _env_int("KAIWA_ADMISSION_CONCURRENCY", 64)
KAIWA_BACKLOG_LIMIT = _env_int("KAIWA_BACKLOG_LIMIT", 1000)
KAIWA_SESSION_RECHECK_SECONDS = _env_float("KAIWA_SESSION_RECHECK_SECONDS", 60.0, minimum=0.1)
# The handshake's cached session check (wsapp.sessioncheck): how long a checked
# session is trusted without the database (revocations drop it at once; this
# bounds changes that bypass model signals, e.g. QuerySet.update()), how long a
# check that needs the database may wait before "try again later" (1013), and
# the threads (each with its own kept-open SQLite connection) those checks use.
KAIWA_AUTH_CACHE_SECONDS = _env_int("KAIWA_AUTH_CACHE_SECONDS", 300, minimum=0)
KAIWA_AUTH_DB_TIMEOUT_SECONDS = _env_float("KAIWA_AUTH_DB_TIMEOUT_SECONDS", 0.5, minimum=0.05)
KAIWA_AUTH_DB_THREADS = _env_int("KAIWA_AUTH_DB_THREADS", 4, minimum=1)
# A join's room access, remembered per process (wsapp/roomaccess.py); 0 turns it off.
KAIWA_ROOM_ACCESS_CACHE_SECONDS = _env_float("KAIWA_ROOM_ACCESS_CACHE_SECONDS", 60.0, minimum=0.0)
KAIWA_ROOM_ACCESS_CACHE_ENTRIES = _env_int("KAIWA_ROOM_ACCESS_CACHE_ENTRIES", 100_000, minimum=1)
KAIWA_SEND_QUEUE_MAX_MESSAGES = _env_int("KAIWA_SEND_QUEUE_MAX_MESSAGES", 1000)
KAIWA_SEND_QUEUE_MAX_BYTES = _env_int("KAIWA_SEND_QUEUE_MAX_BYTES", 4 * 1024 * 1024, minimum=1024)

# Beyond the contract: each has a safe default and is documented in README.md.
KAIWA_DEDUP_SECONDS = _env_int("KAIWA_DEDUP_SECONDS", 600)
KAIWA_STREAM_KEEP = _env_int("KAIWA_STREAM_KEEP", 10000)
KAIWA_BAD_FRAMES_PER_MINUTE = _env_int("KAIWA_BAD_FRAMES_PER_MINUTE", 30)
KAIWA_FRAME_RATE_BURST = _env_int("KAIWA_FRAME_RATE_BURST", 200)
KAIWA_FRAME_RATE_PER_SECOND = _env_float("KAIWA_FRAME_RATE_PER_SECOND", 100.0, minimum=0.001)
KAIWA_TYPING_INTERVAL_MS = _env_int("KAIWA_TYPING_INTERVAL_MS", 1000, minimum=0)
KAIWA_PRESENCE_TTL_SECONDS = _env_float("KAIWA_PRESENCE_TTL_SECONDS", 30.0, minimum=1.0)
KAIWA_UNAVAILABLE_RETRY_MS = _env_int("KAIWA_UNAVAILABLE_RETRY_MS", 1000)
KAIWA_SHUTDOWN_GRACE_SECONDS = _env_float("KAIWA_SHUTDOWN_GRACE_SECONDS", 5.0)
KAIWA_REDIS_POOL_SIZE = _env_int("KAIWA_REDIS_POOL_SIZE", 64)
KAIWA_HISTORY_PAGE_SIZE = _env_int("KAIWA_HISTORY_PAGE_SIZE", 50)
# Unsent bytes on a socket past which a client that keeps pinging is closed with 1008 (wsapp/controlframes.py).
KAIWA_WS_WRITE_BUFFER_MAX_BYTES = _env_int("KAIWA_WS_WRITE_BUFFER_MAX_BYTES", 1024 * 1024, minimum=65536)
# Off: every frame goes through the writer task's plain ``await send()`` (docs/architecture.md, "Write-through").
KAIWA_WS_WRITE_THROUGH = _env_bool("KAIWA_WS_WRITE_THROUGH", True)

KAIWA_WORKER_EMBEDDED = _env_bool("KAIWA_WORKER_EMBEDDED", True)
KAIWA_WORKER_BATCH_SIZE = _env_int("KAIWA_WORKER_BATCH_SIZE", 500)
KAIWA_WORKER_BATCH_MS = _env_int("KAIWA_WORKER_BATCH_MS", 50, minimum=0)
KAIWA_WORKER_CLAIM_IDLE_MS = _env_int("KAIWA_WORKER_CLAIM_IDLE_MS", 30000)
KAIWA_WORKER_BACKLOG_WARN = _env_int("KAIWA_WORKER_BACKLOG_WARN", 10000)
# KAIWA_REDIS_MODE=cluster: an idle worker reads every room slot again after this (no blocking read spans nodes).
KAIWA_WORKER_CLUSTER_POLL_MS = _env_int("KAIWA_WORKER_CLUSTER_POLL_MS", 50, minimum=1)

# Operations (protocol.md 7.7, docs/operations.md) ------------------------------

# GET /metrics answers only "Authorization: Bearer <token>"; empty: /metrics is 404.
KAIWA_METRICS_TOKEN = os.environ.get("KAIWA_METRICS_TOKEN", "").strip()
# Where the processes of one server share their figures (prometheus-client's
# multi-process mode); empty: uvicorn --workers N gets a private directory of
# its own (chat/metricsmode.py). PROMETHEUS_MULTIPROC_DIR is honoured too.
KAIWA_METRICS_DIR = (
    os.environ.get("KAIWA_METRICS_DIR", "").strip() or os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip() or None
)
KAIWA_METRICS_SAMPLE_SECONDS = _env_float("KAIWA_METRICS_SAMPLE_SECONDS", 5.0, minimum=0.1)
# GET /readyz is 503 past these (0 turns the lag check off), or when a check takes longer than the timeout.
KAIWA_READY_MAX_BACKLOG = _env_int("KAIWA_READY_MAX_BACKLOG", 10000)
KAIWA_READY_MAX_LAG_SECONDS = _env_float("KAIWA_READY_MAX_LAG_SECONDS", 0.0, minimum=0.0)
KAIWA_READY_TIMEOUT_SECONDS = _env_float("KAIWA_READY_TIMEOUT_SECONDS", 2.0, minimum=0.05)

# Attachments (protocol.md 7.3) ------------------------------------------------

# Uploaded files live in the "attachments" storage: by default a directory
# under MEDIA_ROOT; any Django storage (e.g. django-storages' S3Storage, see
# README "Attachment storage") by naming its class and options. They are never
# served from MEDIA_URL: every download goes through the API's room check.
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", "").strip() or STATE_DIR / "media")
KAIWA_ATTACHMENT_STORAGE = (
    os.environ.get("KAIWA_ATTACHMENT_STORAGE", "").strip() or "django.core.files.storage.FileSystemStorage"
)
_attachment_options_raw = os.environ.get("KAIWA_ATTACHMENT_STORAGE_OPTIONS", "").strip()
if _attachment_options_raw:
    try:
        KAIWA_ATTACHMENT_STORAGE_OPTIONS: dict[str, Any] = json.loads(_attachment_options_raw)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"KAIWA_ATTACHMENT_STORAGE_OPTIONS is not JSON ({exc}); give a JSON object, "
            'e.g. {"bucket_name": "kaiwa-attachments"}.'
        ) from None
    if not isinstance(KAIWA_ATTACHMENT_STORAGE_OPTIONS, dict):
        raise ImproperlyConfigured("KAIWA_ATTACHMENT_STORAGE_OPTIONS must be a JSON object of the storage's options.")
elif KAIWA_ATTACHMENT_STORAGE == "django.core.files.storage.FileSystemStorage":
    KAIWA_ATTACHMENT_STORAGE_OPTIONS = {"location": str(MEDIA_ROOT / "attachments")}
else:
    KAIWA_ATTACHMENT_STORAGE_OPTIONS = {}
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "attachments": {"BACKEND": KAIWA_ATTACHMENT_STORAGE, "OPTIONS": KAIWA_ATTACHMENT_STORAGE_OPTIONS},
}

KAIWA_MAX_UPLOAD_BYTES = _env_int("KAIWA_MAX_UPLOAD_BYTES", 25 * 1024 * 1024)
KAIWA_UPLOAD_TYPES = _env_list(
    "KAIWA_UPLOAD_TYPES",
    [
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/heic",
        "image/heif",
        "application/pdf",
        "text/plain",
    ],
)
KAIWA_MAX_IMAGE_PIXELS = _env_int("KAIWA_MAX_IMAGE_PIXELS", 50_000_000)
KAIWA_THUMBNAIL_PX = _env_int("KAIWA_THUMBNAIL_PX", 640, minimum=16)
KAIWA_ATTACHMENT_ORPHAN_HOURS = _env_float("KAIWA_ATTACHMENT_ORPHAN_HOURS", 24.0, minimum=0.01)
# A user's upload budget: bursts of KAIWA_UPLOAD_RATE_BURST, then this many per minute.
KAIWA_UPLOAD_RATE_BURST = _env_int("KAIWA_UPLOAD_RATE_BURST", 20)
KAIWA_UPLOAD_RATE_PER_MINUTE = _env_float("KAIWA_UPLOAD_RATE_PER_MINUTE", 30.0, minimum=0.01)
# Worker processes per server process that decode images and make thumbnails
# (each needs up to ~13 bytes per pixel of the largest image while it works).
KAIWA_IMAGE_WORKERS = _env_int("KAIWA_IMAGE_WORKERS", 2)
KAIWA_MAX_ATTACHMENTS_PER_MESSAGE = _env_int("KAIWA_MAX_ATTACHMENTS_PER_MESSAGE", 10)
KAIWA_ATTACHMENT_SWEEP_SECONDS = _env_float("KAIWA_ATTACHMENT_SWEEP_SECONDS", 3600.0, minimum=1.0)

# Edits and deletions (protocol.md 7.4) -------------------------------------------

# How long after sending an author may edit a message; 0 (the default): no limit.
KAIWA_EDIT_WINDOW_SECONDS = _env_int("KAIWA_EDIT_WINDOW_SECONDS", 0, minimum=0)
# How long the admin keeps a deleted message's body, previous versions and
# attachments before the worker's purge (every KAIWA_ATTACHMENT_SWEEP_SECONDS, or manage.py purgedeleted).
KAIWA_DELETED_RETENTION_DAYS = _env_float("KAIWA_DELETED_RETENTION_DAYS", 30.0, minimum=0.0)
