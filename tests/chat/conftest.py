"""Fixtures for the chat tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def fast_passwords(settings):
    """A fast password hasher, for tests that create many accounts in this process only.

    Not autouse: tests that start server processes need hashes those processes can check.
    """
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
