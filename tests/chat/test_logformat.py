"""Log lines: one per event, JSON with KAIWA_LOG_FORMAT=json, no traceback for a client's fault."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import httpx
import pytest
from django.core.exceptions import DisallowedHost

from chat.logformat import ClientFaultFilter, JsonFormatter, TextFormatter, logging_config
from tests.conftest import ROOT
from tests.wsapp.conftest import session_cookie
from tests.wsapp.rawclient import OP_CLOSE, OP_TEXT, RawSocket, frame


def record(level: int, msg: str, exc: BaseException | None = None, name: str = "kaiwa.test") -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, level, __file__, 1, msg, None, exc_info)


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_json_formatter_writes_one_object_per_line_with_the_traceback_as_a_field():
    """A record with a multi-line message and a traceback is one JSON line with time, level, logger, exception."""
    line = JsonFormatter().format(record(logging.ERROR, "two\nlines", raised(ZeroDivisionError("boom"))))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "kaiwa.test" and entry["message"] == "two\nlines"
    assert entry["exc_type"] == "ZeroDivisionError"
    assert "Traceback" in entry["exception"] and "boom" in entry["exception"]
    assert entry["time"].endswith("Z") and isinstance(entry["pid"], int)


def test_text_formatter_keeps_an_event_on_one_line():
    """Text lines escape newlines in the message and the traceback, so one event is one line."""
    line = TextFormatter().format(record(logging.ERROR, "two\nlines", raised(ValueError("bad"))))
    assert "\n" not in line
    assert " ERROR kaiwa.test: two\\nlines\\nTraceback" in line


@pytest.mark.parametrize(
    "exc", [DisallowedHost("Invalid HTTP_HOST header: 'evil'"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")]
)
def test_client_faults_lose_the_traceback_and_drop_to_warning(exc):
    """A client's fault (bad Host, invalid UTF-8, ...) logs one WARNING line with the exception's text, no traceback."""
    rec = record(logging.ERROR, "Invalid input", raised(exc))
    assert ClientFaultFilter().filter(rec)
    assert rec.levelno == logging.WARNING and rec.levelname == "WARNING"
    assert rec.exc_info is None
    assert rec.getMessage() == f"Invalid input ({type(exc).__name__}: {exc})"
    assert "exception" not in json.loads(JsonFormatter().format(rec))


def test_server_errors_keep_their_traceback():
    """A bug's exception is not a client's fault: level and traceback stay."""
    rec = record(logging.ERROR, "unexpected", raised(KeyError("x")))
    ClientFaultFilter().filter(rec)
    assert rec.levelno == logging.ERROR and rec.exc_info is not None


def test_logging_config_routes_django_and_uvicorn_through_one_handler():
    """The LOGGING dict sends kaiwa, django and uvicorn loggers to the one formatter chosen by KAIWA_LOG_FORMAT."""
    config = logging_config(fmt="json", level="DEBUG")
    assert config["handlers"]["console"]["formatter"] == "json"
    assert config["loggers"]["kaiwa"]["level"] == "DEBUG"
    for name in ("django", "uvicorn"):
        assert config["loggers"][name]["handlers"] == ["console"]
    assert logging_config(fmt="text", level="INFO")["handlers"]["console"]["formatter"] == "text"


def test_an_unknown_log_format_stops_startup_with_a_clear_message(tmp_path):
    """KAIWA_LOG_FORMAT=xml is refused at startup, naming the allowed values."""
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "project.settings", "DEBUG": "1", "KAIWA_LOG_FORMAT": "xml", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "KAIWA_LOG_FORMAT='xml' is not a log format: use text or json." in result.stderr


@pytest.mark.django_db(transaction=True)
def test_server_logs_json_lines_and_client_faults_without_tracebacks(start_server, make_user):
    """Under uvicorn with KAIWA_LOG_FORMAT=json every line is JSON; a bad Host and invalid UTF-8 log no traceback."""
    server = start_server(env={"KAIWA_LOG_FORMAT": "json"})
    bad_host = httpx.get(server.http + "/accounts/login/", headers={"Host": "evil.example"}, timeout=10)
    assert bad_host.status_code == 400
    raw = RawSocket.connect(server.port, session_cookie(make_user("garbler")))
    try:
        raw.send(frame(OP_TEXT, b'{"type": "ping", "x": "\xff"}'))
        raw.sock.settimeout(10)
        closing = raw.recv_until({OP_CLOSE})
        assert closing.close_code == 1007
    finally:
        raw.close()
    server.wait_for_line("Invalid UTF-8")
    server.stop()
    entries = [json.loads(line) for line in server.lines if line.strip()]
    assert any(e["message"].startswith("Application startup complete") for e in entries)
    faults = [e for e in entries if "DisallowedHost" in e["message"] or "Invalid UTF-8" in e["message"]]
    assert len(faults) == 2, faults
    for entry in faults:
        assert entry["level"] == "WARNING" and "exception" not in entry, entry
