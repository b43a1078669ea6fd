"""Settings come from the environment, with production defaults and clear errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = {
    "SECRET_KEY": "k" * 20 + "-production-secret-" + "z" * 30,
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "ALLOWED_HOSTS": "chat.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
}


def run_manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_without_secret_key():
    """With DEBUG off (the default) and no SECRET_KEY, startup stops and says how to make one."""
    result = run_manage({"REDIS_URL": "redis://127.0.0.1:6379/0"}, "check")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "secrets.token_urlsafe" in result.stderr


def test_production_refuses_to_start_without_redis_url():
    """With DEBUG off and no REDIS_URL, startup stops with a message naming REDIS_URL."""
    env = dict(PRODUCTION_ENV)
    del env["REDIS_URL"]
    result = run_manage(env, "check")
    assert result.returncode != 0
    assert "REDIS_URL is not set" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("KAIWA_RATE_BURST", "abc", "is not a whole number"),
        ("KAIWA_MAX_BODY_CHARS", "0", "must be at least 1"),
        ("KAIWA_RATE_PER_SECOND", "fast", "is not a number"),
        ("DEBUG", "maybe", "is not a boolean"),
        ("DATABASE_URL", "nosuchdb://x", "DATABASE_URL"),
        ("KAIWA_ATTACHMENT_STORAGE_OPTIONS", "{not json", "is not JSON"),
        ("KAIWA_ATTACHMENT_STORAGE_OPTIONS", "[1, 2]", "must be a JSON object"),
        ("KAIWA_MAX_UPLOAD_BYTES", "25MB", "is not a whole number"),
    ],
)
def test_bad_setting_values_give_a_clear_error(name, value, expected):
    """A malformed environment value stops startup with a message naming the variable."""
    result = run_manage({**PRODUCTION_ENV, name: value}, "check")
    assert result.returncode != 0
    assert expected in result.stderr
    assert name in result.stderr


def test_check_deploy_is_clean_in_the_documented_production_environment():
    """`manage.py check --deploy` reports nothing under the README's production environment."""
    result = run_manage(PRODUCTION_ENV, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_every_setting_read_from_the_environment_is_documented_in_the_readme():
    """The README's configuration table names every variable settings.py reads."""
    source = (ROOT / "project" / "settings.py").read_text()
    names = set(re.findall(r'_env_(?:int|bool|float|list)\("([A-Z_]+)"', source))
    names |= set(re.findall(r'os\.environ\.get\("([A-Z_]+)"', source))
    assert "KAIWA_MAX_BODY_CHARS" in names  # the pattern above still finds settings
    readme = (ROOT / "README.md").read_text()
    table = {m.group(1) for m in re.finditer(r"^\| `([A-Z_]+)` \|", readme, re.MULTILINE)}
    missing = sorted(names - table)
    assert not missing, f"README.md configuration table lacks: {missing}"
