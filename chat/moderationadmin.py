"""The admin's moderation of messages (protocol.md 7.4): the delete action, filters, state, versions.

A staff deletion goes through the room's log like a user's
(``services.message_delete_as_staff``): it gets its own seq, every member
sees ``deleted`` live, and the worker empties the row. The admin keeps the
body and attachments (``MessageVersion``) with who deleted it and when until
the purge (``KAIWA_DELETED_RETENTION_DAYS``).

The list stays fast at millions of rows: no date hierarchy (its drill-down
asks ``MIN``/``MAX(created_at)`` of the filtered list, which for one room
walked most of the ``created_at`` index), and the author filter lists only
the author chosen (from the "author" link of a row), never every user.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from chat import services
from chat.models import Message, MessageKind


class AuthorFilter(admin.SimpleListFilter):
    """``?author=<user id>``: one author's messages (the author's name in a row links here)."""

    title = "author"
    parameter_name = "author"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        chosen = self.value()
        if not chosen or not chosen.isdigit():
            return []
        user = get_user_model().objects.filter(pk=int(chosen)).first()
        return [(chosen, user.get_username() if user is not None else f"user #{chosen}")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        chosen = self.value()
        if chosen and chosen.isdigit():
            return queryset.filter(author_id=int(chosen))
        return queryset


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("edited", "edited"), ("deleted", "deleted"), ("events", "edit and delete events")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "events":
            return queryset.filter(kind__gt=MessageKind.MESSAGE)
        if self.value() == "edited":
            return queryset.filter(edited_at__isnull=False, deleted_at__isnull=True)
        if self.value() == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


def state_text(message: Message) -> str:
    # Edit and delete events are rows of the room's sequence too (protocol.md 7.4), listed as such.
    if message.kind == MessageKind.EDIT:
        return f"edit of #{message.target_seq}"
    if message.kind == MessageKind.DELETE:
        return f"deletion of #{message.target_seq}"
    if message.deleted_at is not None:
        when = timezone.localtime(message.deleted_at).strftime("%Y-%m-%d %H:%M")
        by = f" by user #{message.deleted_by_id}" if message.deleted_by_id else ""
        return f"deleted {when}{by}"
    if message.edited_at is not None:
        return f"edited {timezone.localtime(message.edited_at).strftime('%Y-%m-%d %H:%M')}"
    return ""


def room_link_html(message: Message) -> str:
    """A link to the message in its room's page (the page scrolls to it and marks it)."""
    return format_html('<a href="{}">open in room</a>', room_url(message))


def room_url(message: Message) -> str:
    """The room's page that ends with this message (its older-history view), scrolled to it."""
    return reverse("chat:room_detail", args=[message.room.slug]) + f"?before={message.seq + 1}#m{message.seq}"


def author_link_html(message: Message) -> str:
    if message.author_id is None:
        return message.author_username
    return format_html('<a href="?author={}">{}</a>', message.author_id, message.author_username)


def versions_html(message: Message) -> str:
    """The bodies the message showed before, oldest first, with who replaced them and when."""
    versions = list(message.versions.order_by("event_seq"))
    if not versions:
        return "-"
    rows = (
        (
            timezone.localtime(v.replaced_at).strftime("%Y-%m-%d %H:%M:%S"),
            "deleted" if v.deletion else "edited",
            f"user #{v.replaced_by_id}" if v.replaced_by_id else "-",
            Truncator(v.body).chars(2000),
        )
        for v in versions
    )
    return format_html(
        "<table><tr><th>replaced</th><th>by</th><th>who</th><th>body</th></tr>{}</table>",
        format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
    )


@admin.action(description="Delete the selected messages (members see them disappear)", permissions=["delete"])
def delete_messages(model_admin: Any, request: HttpRequest, queryset: QuerySet[Message]) -> None:
    # Events are not messages: selecting one deletes nothing.
    chosen = list(queryset.select_related("room").filter(kind=MessageKind.MESSAGE, deleted_at__isnull=True)[:1000])
    assert isinstance(request.user, AbstractBaseUser), "the admin runs for a signed-in staff user"
    try:
        deleted = services.message_delete_as_staff(messages=chosen, user=request.user)
    except services.MessageUnavailable as exc:
        model_admin.message_user(
            request, f"Nothing was deleted: {exc}. Try again when Redis is back.", level=messages.ERROR
        )
        return
    model_admin.message_user(
        request,
        f"Deleted {deleted} message(s); members see them disappear now, and the database follows within a moment.",
        level=messages.SUCCESS,
    )
