"""Log lines: one line per event, as text or JSON (``KAIWA_LOG_FORMAT``), and no traceback for a client's fault.

``project/settings.py`` routes Kaiwa's, Django's and uvicorn's loggers through
one handler with these pieces:

* ``TextFormatter``: ``<time> <LEVEL> <logger>: <message>``; a newline in the
  message or a traceback is written as ``\\n``, so a line is always one event
  (``grep`` and ``journalctl`` see whole events).
* ``JsonFormatter``: one JSON object per line for log shippers (``time``,
  ``level``, ``logger``, ``message``, ``pid``, and ``exc_type`` /
  ``exception`` when there is a traceback).
* ``ClientFaultFilter``: a client that sends garbage is not a server error.
  Records that carry such an exception (a bad ``Host``, a suspicious request,
  invalid UTF-8 in a WebSocket frame) lose the traceback and drop to WARNING,
  with the exception's one-line text kept in the message.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent

# Exceptions that mean "the client sent something wrong": never worth a traceback.
CLIENT_FAULTS: tuple[type[BaseException], ...] = (
    SuspiciousOperation,  # DisallowedHost, bad session data, ...
    BadRequest,
    RequestDataTooBig,
    TooManyFieldsSent,
    UnicodeDecodeError,  # uvicorn: "Invalid UTF-8 sequence received from client." (closes 1007)
)


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ClientFaultFilter(logging.Filter):
    """Turn a client's fault into one quiet line: WARNING (at most), no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and isinstance(exc, CLIENT_FAULTS):
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno = logging.WARNING
                record.levelname = logging.getLevelName(logging.WARNING)
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(record)

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "\\r").replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": os.getpid(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a message argument that is not JSON must never lose the line.
        return json.dumps(entry, ensure_ascii=False, default=str)


def _uvicorn_logger(name: str, handler: dict[str, Any]) -> dict[str, Any]:
    # uvicorn configured its loggers from its command line before Django reads
    # settings: keep its level (--log-level) and an access log it switched off
    # (--no-access-log leaves "uvicorn.access" without handlers).
    logger = logging.getLogger(name)
    level = logging.getLevelName(logger.level) if logger.level else "INFO"
    if name == "uvicorn.access" and not logger.handlers:
        return {"handlers": [], "propagate": False, "level": level}
    return {**handler, "level": level}


def logging_config(*, fmt: str, level: str) -> dict[str, Any]:
    """The ``LOGGING`` dict for ``fmt`` (``text`` or ``json``), Kaiwa's loggers at ``level``."""
    formatter = "json" if fmt == "json" else "text"
    handler: dict[str, Any] = {"handlers": ["console"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"client_fault": {"()": "chat.logformat.ClientFaultFilter"}},
        "formatters": {
            "text": {"()": "chat.logformat.TextFormatter"},
            "json": {"()": "chat.logformat.JsonFormatter"},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": formatter, "filters": ["client_fault"]},
        },
        "root": {"handlers": ["console"], "level": "WARNING"},
        "loggers": {
            "kaiwa": {**handler, "level": level},
            "django": {**handler, "level": "INFO"},
            # Replaces uvicorn's own handlers: Django configures logging after uvicorn did.
            "uvicorn": {**handler, "level": "INFO"},
            "uvicorn.error": {**_uvicorn_logger("uvicorn.error", handler), "handlers": [], "propagate": True},
            "uvicorn.access": _uvicorn_logger("uvicorn.access", handler),
        },
    }
