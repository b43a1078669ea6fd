"""Django admin: rooms with their members, and the (read-only) message history.

The message list must stay fast at millions of rows, so it never runs a full
``COUNT(*)``: the paginator counts at most ``LargeTablePaginator.count_cap``
rows and estimates beyond that (see below).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import Max, QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.text import Truncator

from chat import attachmentadmin, moderationadmin
from chat.models import Membership, Message, Room

admin.site.site_header = "Kaiwa administration"
admin.site.site_title = "Kaiwa admin"
admin.site.index_title = "Rooms, messages and people"


class LargeTablePaginator(Paginator):
    """A paginator that never counts more than ``count_cap`` rows.

    Up to the cap the count is exact (a bounded ``COUNT`` over a ``LIMIT``
    subquery). Beyond it, an unfiltered list uses the table estimate
    (``pg_class.reltuples`` on PostgreSQL, the highest primary key elsewhere)
    and a filtered list reports the cap; ``count_is_estimate`` tells the
    template to say "about" or "more than". Filters, search and the date
    hierarchy narrow big lists down to exact counts.

    A filtered list (a search above all: ``body`` has no index to help) is
    evaluated once, not twice: one bounded query collects the primary keys of
    up to ``count_cap + 1`` matches in list order, which gives the count, and
    the page is then read by primary key.
    """

    count_cap = 10_000

    count_is_estimate = False
    count_is_lower_bound = False
    _matching_pks: list[Any] | None = None

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if not isinstance(qs, QuerySet):
            return super().count
        if qs.query.where:
            self._matching_pks = list(qs.values_list("pk", flat=True)[: self.count_cap + 1])
            capped = len(self._matching_pks)
        else:
            capped = qs.order_by()[: self.count_cap + 1].count()
        if capped <= self.count_cap:
            return capped
        if not qs.query.where:
            estimate = self._table_estimate(qs)
            if estimate > capped:
                self.count_is_estimate = True
                return estimate
        self.count_is_lower_bound = True
        return self.count_cap

    @property
    def matching_pks(self) -> list[Any] | None:
        """Every matching primary key, when the list is filtered and within the cap."""
        self.count  # noqa: B018 - computing the count collects the keys
        pks = self._matching_pks
        return pks if pks is not None and len(pks) <= self.count_cap else None

    def page(self, number: Any) -> Page:
        number = self.validate_number(number)
        pks = self._matching_pks
        if pks is None or not isinstance(self.object_list, QuerySet):
            return super().page(number)
        # count <= len(pks), so every valid page lies within the collected keys.
        bottom = (number - 1) * self.per_page
        rows = self.object_list.filter(pk__in=pks[bottom : bottom + self.per_page])
        return Page(rows, number, self)

    @staticmethod
    def _table_estimate(qs: QuerySet[Any]) -> int:
        connection = connections[qs.db]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [qs.model._meta.db_table]
                )
                row = cursor.fetchone()
            # -1 (never analysed) or 0 fall back to the capped count.
            return int(row[0]) if row and row[0] and row[0] > 0 else 0
        # An index lookup; an over-estimate only when rows were deleted.
        return int(qs.aggregate(top=Max("pk"))["top"] or 0)


class MessageChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # When everything fits on one page Django re-runs the filtered query
        # unpaginated; the paginator already has the matching keys, so read
        # the rows by key instead of scanning again.
        pks = getattr(self.paginator, "matching_pks", None)
        if pks is not None and (not self.multi_page or (self.show_all and self.can_show_all)):
            self.result_list = self.queryset.filter(pk__in=pks)
        # The page's attachments in one query (they are found by room and seq, not by a key).
        attachmentadmin.preload_for_messages(list(self.result_list))


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    readonly_fields = ["added_at"]
    verbose_name = "member"
    verbose_name_plural = "members (private rooms only)"


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "private", "kind", "created_by", "created_at", "attachment_storage"]
    list_filter = ["private", "kind", "created_at"]
    list_select_related = ["created_by"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ("name",)}
    autocomplete_fields = ["created_by"]
    # A direct conversation is made by POST /api/dms (chat.dms), never turned into a room or back.
    readonly_fields = ["kind", "created_at", "attachment_storage"]
    inlines = [MembershipInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Room]:
        return attachmentadmin.with_storage_total(super().get_queryset(request))

    @admin.display(description="attachments (storage)", ordering="attachment_bytes")
    def attachment_storage(self, obj: Room) -> str:
        return attachmentadmin.storage_total(obj)

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        # Django's default lists every related row on the confirmation page:
        # millions of messages would make it unusable. Summarise instead.
        rooms = list(objs)
        room_ids = [room.pk for room in rooms]
        counts = {
            "rooms": len(rooms),
            "members": Membership.objects.filter(room_id__in=room_ids).count(),
            "messages": Message.objects.filter(room_id__in=room_ids).count(),
        }
        summary = [f"{room} (/rooms/{room.slug}/) with all its members and messages" for room in rooms]
        return summary, {k: v for k, v in counts.items() if v}, set(), []


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["seq", "room", "author_name", "created_at", "excerpt", "state", "attachments", "in_room"]
    list_display_links = ["seq", "excerpt"]
    # No date_hierarchy: its drill-down runs MIN()/MAX(created_at) over the
    # filtered list, which for one room walked most of the created_at index
    # (moderationadmin.py). The "created_at" filter's ranges need no aggregate.
    list_filter = ["room", moderationadmin.AuthorFilter, moderationadmin.StateFilter, "created_at"]
    list_select_related = ["room"]
    search_fields = ["body", "author_username"]
    # Newest first, read backwards along an index (Django adds -pk as a
    # tie-breaker; the created_at index covers it on SQLite, and PostgreSQL's
    # incremental sort handles it): no sort of the whole table.
    ordering = ["-created_at"]
    raw_id_fields = ["room", "author"]
    fields = readonly_fields = (
        "room", "seq", "author", "author_username", "created_at", "persisted_at", "client_id", "body", "attachments",
        "reply_to", "state", "deleted_by", "in_room", "versions",
    )  # fmt: skip
    actions = [moderationadmin.delete_messages]
    paginator = LargeTablePaginator
    show_full_result_count = False
    # Facet counts run one COUNT per filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return MessageChangeList

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # Django's "delete selected" would remove rows from the record; moderation deletes through the room's log.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def get_ordering(self, request: HttpRequest) -> list[str] | tuple[str, ...]:
        # Within one room, walk the (room, seq) unique index instead of
        # filtering the created_at index, which is slow for a small room.
        if "room__id__exact" in request.GET:
            return ["-seq"]
        return super().get_ordering(request)

    @admin.display(description="author", ordering="author_username")
    def author_name(self, obj: Message) -> str:
        # The name stored with the message: no join, and it survives account deletion.
        # It links to the author's messages (the author filter).
        return moderationadmin.author_link_html(obj)

    @admin.display(description="message")
    def excerpt(self, obj: Message) -> str:
        return Truncator(" ".join(obj.body.split())).chars(80)

    @admin.display(description="attachments")
    def attachments(self, obj: Message) -> str:
        return attachmentadmin.thumbnails_html(attachmentadmin.attachments_of(obj))

    @admin.display(description="state")
    def state(self, obj: Message) -> str:
        return moderationadmin.state_text(obj)

    @admin.display(description="in its room")
    def in_room(self, obj: Message) -> str:
        return moderationadmin.room_link_html(obj)

    @admin.display(description="previous versions")
    def versions(self, obj: Message) -> str:
        return moderationadmin.versions_html(obj)

    # History is a record: every accepted message stays exactly once in the
    # database (protocol.md §3), so admins never add or change rows. They
    # moderate with the "delete messages" action, which appends a deletion to
    # the room's log like a user's (the row stays, emptied). Deleting a room
    # removes its history with it.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        # Needed to offer the action; rows are never deleted (get_actions drops "delete selected").
        return bool(obj is None and request.user.is_staff and request.user.has_perm("chat.delete_message"))
