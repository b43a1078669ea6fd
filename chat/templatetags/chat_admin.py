"""Admin template tags for big tables.

Django's ``{% date_hierarchy %}`` lists the years, months or days that have
rows with ``SELECT DISTINCT date_trunc(...)`` over every row in range: a full
scan, seconds at a million messages (SQLite truncates dates in Python).
``{% cheap_date_hierarchy %}`` renders the same widget from two index lookups
(the oldest and newest row in range) and offers every period between them; a
period without messages simply shows an empty list.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from django import template
from django.contrib.admin.templatetags.admin_list import date_hierarchy
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.contrib.admin.views.main import ChangeList
from django.db.models import Max, Min, QuerySet
from django.template.base import Parser, Token
from django.utils import timezone

register = template.Library()


def _periods(first: datetime, last: datetime, kind: str) -> list[datetime]:
    out: list[datetime] = []
    if kind == "year":
        current = first.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    elif kind == "month":
        current = first.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        current = first.replace(hour=0, minute=0, second=0, microsecond=0)
    while current <= last:
        out.append(current)
        if kind == "year":
            current = current.replace(year=current.year + 1)
        elif kind == "month":
            current = current.replace(year=current.year + current.month // 12, month=current.month % 12 + 1)
        else:
            current = current + timedelta(days=1)
    return out


class _RangeQuerySet:
    """Stands in for ``cl.queryset`` in Django's date_hierarchy: periods from MIN/MAX."""

    def __init__(self, queryset: QuerySet[Any]) -> None:
        self._queryset = queryset
        self._cache: dict[str, Any] = {}

    def aggregate(self, **kwargs: Any) -> dict[str, Any]:
        # One query per aggregate: SQLite answers a lone MIN() or MAX() from the
        # index, but scans the table for MIN() and MAX() together. Cached: the
        # widget asks for the same bounds twice.
        result: dict[str, Any] = {}
        for name, expression in kwargs.items():
            key = repr(expression)
            if key not in self._cache:
                self._cache[key] = self._queryset.aggregate(value=expression)["value"]
            result[name] = self._cache[key]
        return result

    def datetimes(self, field_name: str, kind: str) -> list[datetime]:
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None or bounds["last"] is None:
            return []
        first, last = (
            timezone.localtime(bounds[k]) if timezone.is_aware(bounds[k]) else bounds[k] for k in ("first", "last")
        )
        return _periods(first, last, kind)

    dates = datetimes


class _ChangeListView:
    def __init__(self, cl: Any) -> None:
        self._cl = cl
        bounds = cl.queryset
        # When the paginator already collected every matching key (a search, a
        # filter), read the bounds from those rows instead of filtering again.
        pks = getattr(getattr(cl, "paginator", None), "matching_pks", None)
        if pks is not None:
            bounds = cl.model._default_manager.filter(pk__in=pks)
        self.queryset = _RangeQuerySet(bounds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cl, name)


def cheap_date_hierarchy(cl: Any) -> Any:
    # Django's function only reads attributes, which _ChangeListView forwards.
    return date_hierarchy(cast(ChangeList, _ChangeListView(cl)))


@register.tag(name="cheap_date_hierarchy")
def cheap_date_hierarchy_tag(parser: Parser, token: Token) -> InclusionAdminNode:
    return InclusionAdminNode(
        parser, token, func=cheap_date_hierarchy, template_name="date_hierarchy.html", takes_context=False
    )
