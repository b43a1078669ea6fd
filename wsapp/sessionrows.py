"""The two rows a handshake's database check reads, without building a query each time.

A session that is not in the auth cache costs two ORM lookups: the session
row, then the user. Building those queries (``QuerySet.filter`` ->
``SQLCompiler.as_sql``) costs several times more CPU than SQLite takes to
answer them: about 1.2 ms per check on the benchmark's machine, most of a
cold handshake. In a connect storm those checks compete with the event loop
for the one core.

So each thread compiles each lookup once, with the ORM's own compiler, and
then only executes the SQL and applies the same converters ``ModelIterable``
applies: the rows, types and time zones are exactly what ``Manager.get``
would give. This is used only where it is provably the same query as
Django's: the database session stores' ``_get_session_from_db`` and
``ModelBackend.get_user``, on managers that do not change ``get_queryset``.
Anything else (a custom backend, manager or store) goes through the ORM as
before (``wsapp.sessioncheck.check_in_db``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.contrib.sessions.backends.db import SessionStore as DbSessionStore
from django.db import connections, router
from django.db.models import Field, Model
from django.db.models.manager import BaseManager
from django.utils import timezone


@dataclass(frozen=True)
class _Plan:
    sql: str
    param_fields: tuple[Field[Any, Any], ...]
    converters: dict[int, Any]
    compiler: Any
    init_list: tuple[str, ...]


_local = threading.local()


def _plain(manager: Any) -> bool:
    """A manager whose queryset is the model's plain one (no filtering ``get_queryset``)."""
    return type(manager).get_queryset is BaseManager.get_queryset


def _plan(manager: Any, alias: str, lookups: tuple[str, ...], values: tuple[Any, ...]) -> _Plan | None:
    # Per thread: a compiler holds its thread's connection (its converters may read it).
    plans: dict[tuple[Any, ...], _Plan | None] = _local.__dict__.setdefault("plans", {})
    key = (manager.model, alias, lookups)
    if key in plans:
        return plans[key]
    model = manager.model
    fields = tuple(model._meta.pk if name == "pk" else model._meta.get_field(name) for name in (
        lookup.partition("__")[0] for lookup in lookups))  # fmt: skip
    compiler = manager.using(alias).filter(**dict(zip(lookups, values, strict=True))).query.get_compiler(using=alias)
    sql, params = compiler.as_sql()
    select_fields = compiler.klass_info["select_fields"]
    plan: _Plan | None = None
    connection = connections[alias]
    prepared = [f.get_db_prep_value(v, connection, prepared=False) for f, v in zip(fields, values, strict=True)]
    # Only the plain shape ModelIterable reads: the model's own columns, and the
    # parameters exactly the values prepared in this order (else: the ORM).
    if list(params) == prepared and select_fields == list(range(len(select_fields))):
        selected = [column for column, _, _ in compiler.select[: len(select_fields)]]
        plan = _Plan(
            sql=sql,
            param_fields=fields,
            converters=compiler.get_converters(selected),
            compiler=compiler,
            init_list=tuple(column.target.attname for column in selected),
        )
    plans[key] = plan
    return plan


def _get(manager: Any, lookups: tuple[str, ...], values: tuple[Any, ...]) -> tuple[bool, Any | None]:
    """(handled, ``manager.get(**dict(zip(lookups, values)))`` or None): the same row, the same types."""
    model = manager.model
    alias = router.db_for_read(model)
    # The ORM orders keyword lookups by name (Q sorts them): so do the parameters.
    ordered = sorted(zip(lookups, values, strict=True), key=lambda pair: pair[0])
    lookups, values = tuple(p[0] for p in ordered), tuple(p[1] for p in ordered)
    plan = _plan(manager, alias, lookups, values)
    if plan is None:
        return False, None
    connection = connections[alias]
    params = [
        field.get_db_prep_value(value, connection, prepared=False)
        for field, value in zip(plan.param_fields, values, strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(plan.sql, params)
        rows = cursor.fetchmany(2)
    if len(rows) != 1:
        return True, None  # none, or several (impossible on these unique lookups), as .get() would refuse
    if plan.converters:
        rows = list(plan.compiler.apply_converters(rows, plan.converters))
    return True, model.from_db(alias, list(plan.init_list), list(rows[0])[: len(plan.init_list)])


def session_row(store: Any) -> tuple[bool, Any | None]:
    """(handled, the row ``store._get_session_from_db()`` would return); handled False: ask the store."""
    own: Any = getattr(type(store), "_get_session_from_db", None)
    if own is not getattr(DbSessionStore, "_get_session_from_db"):  # noqa: B009 (not in django-stubs)
        return False, None
    manager = store.model.objects
    if not _plain(manager):
        return False, None
    if store.session_key is None:
        return True, None
    return _get(manager, ("session_key", "expire_date__gt"), (store.session_key, timezone.now()))


def backend_user(backend: Any, user_model: type[Model], user_id: Any) -> tuple[bool, Any | None]:
    """(handled, what ``backend.get_user(user_id)`` would return); handled False: ask the backend."""
    manager = user_model._default_manager
    if type(backend) is not ModelBackend or not _plain(manager):
        return False, None
    handled, user = _get(manager, ("pk",), (user_id,))
    if not handled:
        return False, None
    if user is None or not backend.user_can_authenticate(user):
        return True, None
    return True, user
