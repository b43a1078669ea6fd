"""The admin's side of attachments: thumbnails beside messages, storage per room, the upload list.

Thumbnails are served to staff by an admin view (``<id>/thumbnail/``), so the
admin shows them for every room, private ones included, without the room
check of the API's download routes. They are small (at most
``KAIWA_THUMBNAIL_PX`` on the long side) and read whole.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from chat import attachmentstore, selectors
from chat.models import Attachment, Message, Room

_PRELOADED = "_kaiwa_attachments"
_THUMB_PX = 64


def preload_for_messages(messages: list[Message]) -> None:
    """Fetch the attachments of a page of messages in one query."""
    found = selectors.attachments_by_message(keys=[(m.room_id, m.seq) for m in messages])
    for message in messages:
        setattr(message, _PRELOADED, found.get((message.room_id, message.seq), []))


def attachments_of(message: Message) -> list[Attachment]:
    preloaded = getattr(message, _PRELOADED, None)
    if preloaded is not None:
        return list(preloaded)
    return selectors.attachments_of_message(room_id=message.room_id, seq=message.seq)


def thumbnail_html(attachment: Attachment, px: int = _THUMB_PX) -> str:
    link = reverse("admin:chat_attachment_change", args=[attachment.pk])
    if not attachment.thumbnail:
        return format_html('<a href="{}">{} ({})</a>', link, attachment.name, filesizeformat(attachment.size))
    width, height = attachment.thumbnail_width or px, attachment.thumbnail_height or px
    scale = min(1.0, px / max(width, height))
    return format_html(
        '<a href="{}" title="{}"><img src="{}" width="{}" height="{}" alt="{}" loading="lazy"></a>',
        link,
        attachment.name,
        reverse("admin:chat_attachment_thumbnail", args=[attachment.pk]),
        round(width * scale),
        round(height * scale),
        attachment.name,
    )


def thumbnails_html(attachments: list[Attachment]) -> str:
    if not attachments:
        return "-"
    return format_html_join(" ", "{}", ((thumbnail_html(a),) for a in attachments))


def with_storage_total(rooms: QuerySet[Room]) -> QuerySet[Room]:
    """Rooms annotated with ``attachment_bytes``: files and thumbnails stored for them."""
    total = (
        Attachment.objects.filter(room=OuterRef("pk"))
        .order_by()
        .values("room")
        .annotate(total=Sum("size") + Sum("thumbnail_size"))
        .values("total")
    )
    return rooms.annotate(attachment_bytes=Subquery(total))


def storage_total(room: Room) -> str:
    if hasattr(room, "attachment_bytes"):
        total = room.attachment_bytes
    else:
        total = selectors.room_attachment_bytes(room_ids=[room.pk]).get(room.pk) if room.pk else 0
    return filesizeformat(total or 0)


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    list_display = ["preview", "name", "room", "uploader", "content_type", "size_shown", "message_seq", "created_at"]
    list_display_links = ["preview", "name"]
    list_filter = ["content_type", "created_at"]
    list_select_related = ["room", "uploader"]
    search_fields = ["name", "id"]
    date_hierarchy = "created_at"
    raw_id_fields = ["room", "uploader"]
    fields = readonly_fields = (
        "preview_large", "id", "name", "room", "uploader", "content_type", "size", "width", "height",
        "message_seq", "created_at", "claimed_at", "file", "thumbnail",
    )  # fmt: skip
    show_facets = admin.ShowFacets.NEVER

    @admin.display(description="")
    def preview(self, obj: Attachment) -> str:
        return thumbnail_html(obj)

    @admin.display(description="picture")
    def preview_large(self, obj: Attachment) -> str:
        return thumbnail_html(obj, px=320)

    @admin.display(description="size", ordering="size")
    def size_shown(self, obj: Attachment) -> str:
        return filesizeformat(obj.size)

    def get_urls(self) -> list[Any]:
        thumbnail = path(
            "<str:object_id>/thumbnail/",
            self.admin_site.admin_view(self.thumbnail_view),
            name="chat_attachment_thumbnail",
        )
        return [thumbnail, *super().get_urls()]

    def thumbnail_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        attachment = self.get_object(request, object_id)
        if attachment is None or not self.has_view_permission(request, attachment) or not attachment.thumbnail:
            raise Http404("No such picture.")
        try:
            with attachmentstore.open_file(attachment.thumbnail) as fp:
                data = fp.read()
        except FileNotFoundError:
            raise Http404("The thumbnail is gone from the storage.") from None
        response = HttpResponse(data, content_type=attachment.thumbnail_content_type)
        response["Cache-Control"] = "private, max-age=3600"
        return response

    # Uploads arrive through the API only; the admin reads them, and deleting
    # one removes its files too (chat.models deletes them with the row).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Attachment | None = None) -> bool:
        return False
