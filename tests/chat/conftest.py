"""Fixtures for the chat tests."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import Client

T = TypeVar("T")


@pytest.fixture
def alice(make_user: Any) -> Any:
    """A user named alice."""
    return make_user("alice")


@pytest.fixture
def client_alice(client: Client, alice: Any) -> Client:
    """Django's test client, logged in as alice."""
    client.force_login(alice)
    return client


@pytest.fixture
def fast_passwords(settings):
    """A fast password hasher, for tests that create many accounts in this process only.

    Not autouse: tests that start server processes need hashes those processes can check.
    """
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def run_async(coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run async ORM code from a sync test, with a timeout.

    The async ORM runs its queries on asgiref's thread-sensitive executor
    thread; that thread's connection must be closed (given back to the
    PostgreSQL pool) or the test database cannot be dropped at the end.
    """

    async def main() -> T:
        try:
            return await asyncio.wait_for(coroutine, timeout=timeout)
        finally:
            await sync_to_async(connections.close_all)()

    return asyncio.run(main())
