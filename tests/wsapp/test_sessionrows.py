"""wsapp.sessionrows: the handshake's two database rows, read with SQL compiled once, exactly as the ORM reads them."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import AllowAllUsersModelBackend, ModelBackend
from django.contrib.sessions.models import Session
from django.test import Client as DjangoClient
from django.utils import timezone

from tests.wsapp.conftest import PASSWORD
from wsapp import sessioncheck, sessionrows

pytestmark = pytest.mark.django_db


def _store(key: str | None) -> Any:
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key=key)


def _logged_in(user: Any) -> str:
    client = DjangoClient()
    assert client.login(username=user.get_username(), password=PASSWORD)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def _fields(model_instance: Any) -> dict[str, Any]:
    return {f.attname: getattr(model_instance, f.attname) for f in model_instance._meta.concrete_fields}


def test_the_session_row_is_the_one_the_store_reads(make_user: Any) -> None:
    """Same row, same values and types (the expiry an aware datetime) as _get_session_from_db; None when expired."""
    key = _logged_in(make_user("alice"))
    handled, row = sessionrows.session_row(_store(key))
    expected = _store(key)._get_session_from_db()
    assert handled and row is not None and expected is not None
    assert _fields(row) == _fields(expected)
    assert {k: type(v) for k, v in _fields(row).items()} == {k: type(v) for k, v in _fields(expected).items()}
    assert timezone.is_aware(row.expire_date)
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    assert sessionrows.session_row(_store(key)) == (True, None)
    assert sessionrows.session_row(_store("nosuchsessionkey0123456789abcdef")) == (True, None)
    assert sessionrows.session_row(_store(None)) == (True, None)


def test_the_user_is_the_one_model_backend_returns(make_user: Any) -> None:
    """Same fields and types as ModelBackend.get_user; an inactive or missing user is None, as there."""
    alice = make_user("alice", email="alice@example.com", is_staff=True)
    alice.last_login = timezone.now()
    alice.save()
    backend = ModelBackend()
    handled, user = sessionrows.backend_user(backend, get_user_model(), alice.pk)
    expected = backend.get_user(alice.pk)
    assert handled and user is not None and expected is not None
    assert _fields(user) == _fields(expected)
    assert {k: type(v) for k, v in _fields(user).items()} == {k: type(v) for k, v in _fields(expected).items()}
    assert user.get_session_auth_hash() == expected.get_session_auth_hash()
    assert sessionrows.backend_user(backend, get_user_model(), 10**9) == (True, None)
    get_user_model().objects.filter(pk=alice.pk).update(is_active=False)
    assert sessionrows.backend_user(backend, get_user_model(), alice.pk) == (True, None)


def test_anything_but_the_plain_backend_is_left_to_the_orm(make_user: Any) -> None:
    """A backend subclass (it may override get_user) is not handled: the check asks the backend itself."""
    alice = make_user("alice")
    assert sessionrows.backend_user(AllowAllUsersModelBackend(), get_user_model(), alice.pk) == (False, None)


def test_the_check_answers_the_same_with_and_without_the_compiled_rows(make_user: Any, monkeypatch: Any) -> None:
    """check_in_db gives the same user and expiry whichever way the rows are read."""
    key = _logged_in(make_user("alice", email="a@example.com"))
    fast_user, fast_expiry = sessioncheck.check_in_db(key)
    monkeypatch.setattr(sessionrows, "session_row", lambda store: (False, None))
    monkeypatch.setattr(sessionrows, "backend_user", lambda backend, model, user_id: (False, None))
    orm_user, orm_expiry = sessioncheck.check_in_db(key)
    assert fast_user is not None and orm_user is not None
    assert (_fields(fast_user), fast_expiry) == (_fields(orm_user), orm_expiry)
