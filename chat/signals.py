"""Django signal handlers: tell every server process when a session ends.

Open WebSockets authenticated once at the handshake; these handlers publish on
the Redis control channel (``chat.messagelog.CONTROL_CHANNEL``) so that every
server process re-checks, or closes with 4401, the affected sockets at once:

* a session deleted (logout flushes it, the admin or ``clearsessions``
  deletes it): ``{"kind": "session", "user_id": N, "session_key": K}``;
  sockets on that session close without further checks;
* a private-room membership deleted (``room_member_remove``, the admin
  inline, the room deleted): ``{"kind": "access", "user_id": N, "room_id": R}``;
  a room made private or deleted: ``{"kind": "room", "room_id": R}``; the
  hub re-checks the sockets joined to it and ends those no longer allowed
  with an unsolicited ``left``;
* a user whose password hash or ``is_active`` changed:
  ``{"kind": "user", "user_id": N}``; that user's sockets re-check their
  session (the new hash no longer matches old sessions).

The same handlers drop the handshake's cached session check
(``chat.authcache``) of the sessions and users concerned, also once the
transaction commits.

Signals run in sync code (a request, the admin, a shell). A Redis error must
never break a logout or a password change: it is logged, and the periodic
re-check (``KAIWA_SESSION_RECHECK_SECONDS``) catches up.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.models import Session
from django.db.models.signals import post_delete, post_init, post_save
from django.dispatch import receiver

from chat import roomevents
from chat.authcache import invalidate_sessions, invalidate_users
from chat.messagelog import CONTROL_CHANNEL
from chat.models import Membership, Room
from chat.redisclient import sync_client

logger = logging.getLogger("kaiwa.signals")

_WATCHED = "_kaiwa_auth_state"


def publish_revocation(event: dict[str, Any]) -> None:
    try:
        sync_client().publish(CONTROL_CHANNEL, json.dumps(event))
    except Exception as exc:
        logger.warning(
            "could not publish session revocation %s (%r); open sockets re-check within KAIWA_SESSION_RECHECK_SECONDS",
            event,
            exc,
        )


@receiver(user_logged_out)
def on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is None or user.pk is None:
        return
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    # Sent before the session is flushed: name the session, do not ask for a re-check.
    event: dict[str, Any] = {"kind": "session", "user_id": user.pk}
    if session_key:
        event["session_key"] = session_key
        invalidate_sessions([session_key])
    publish_revocation(event)


@receiver(post_delete, sender=Session)
def on_session_deleted(sender: Any, instance: Session, **kwargs: Any) -> None:
    invalidate_sessions([instance.session_key])
    try:
        user_id = instance.get_decoded().get("_auth_user_id")
    except Exception:
        return  # undecodable (old secret): no socket can be using it
    if user_id is None:
        return
    try:
        uid = int(user_id)
    except (TypeError, ValueError):
        return
    publish_revocation({"kind": "session", "user_id": uid, "session_key": instance.session_key})


@receiver(post_save, sender=Session, dispatch_uid="kaiwa_session_saved")
def on_session_saved(sender: Any, instance: Session, created: bool, **kwargs: Any) -> None:
    """A session's data or expiry changed: the handshake's cached check of it is no longer proof."""
    if not created:
        invalidate_sessions([instance.session_key])


def _auth_state(instance: Any) -> tuple[Any, Any]:
    # __dict__, not getattr: a deferred field must not cost a query per instance.
    fields = instance.__dict__
    return (fields.get("password"), fields.get("is_active"))


def _on_user_init(sender: Any, instance: Any, **kwargs: Any) -> None:
    setattr(instance, _WATCHED, _auth_state(instance))


def _on_user_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    before = getattr(instance, _WATCHED, None)
    now = _auth_state(instance)
    setattr(instance, _WATCHED, now)
    if created or instance.pk is None:
        return
    # Any change, not only the auth state: the cached record also carries the
    # username and the other fields the socket shows.
    invalidate_users([instance.pk])
    if before == now:
        return
    publish_revocation({"kind": "user", "user_id": instance.pk})


def _on_user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    # Sessions are not tied to users by a foreign key: a deleted user's sessions
    # stay in the database, and only the user lookup ends them.
    invalidate_users([instance.pk])


# -- room access: sockets joined to a room the user may no longer see -----------------

_ROOM_WATCHED = "_kaiwa_room_private"


@receiver(post_delete, sender=Membership, dispatch_uid="kaiwa_membership_deleted")
def on_membership_deleted(sender: Any, instance: Membership, **kwargs: Any) -> None:
    """A user left a private room (room_member_remove, the admin inline, the room deleted)."""
    publish_revocation({"kind": "access", "user_id": instance.user_id, "room_id": instance.room_id})


@receiver(post_init, sender=Room, dispatch_uid="kaiwa_room_init")
def _on_room_init(sender: Any, instance: Room, **kwargs: Any) -> None:
    setattr(instance, _ROOM_WATCHED, instance.__dict__.get("private"))


@receiver(post_save, sender=Room, dispatch_uid="kaiwa_room_saved")
def on_room_saved(sender: Any, instance: Room, created: bool, **kwargs: Any) -> None:
    before = getattr(instance, _ROOM_WATCHED, None)
    setattr(instance, _ROOM_WATCHED, instance.private)
    if not created and instance.private and before is False:
        publish_revocation({"kind": "room", "room_id": instance.pk})


@receiver(post_delete, sender=Room, dispatch_uid="kaiwa_room_deleted")
def on_room_deleted(sender: Any, instance: Room, **kwargs: Any) -> None:
    publish_revocation({"kind": "room", "room_id": instance.pk})


_user_model = get_user_model()
post_init.connect(_on_user_init, sender=_user_model, dispatch_uid="kaiwa_user_init")
post_save.connect(_on_user_saved, sender=_user_model, dispatch_uid="kaiwa_user_saved")
post_delete.connect(_on_user_deleted, sender=_user_model, dispatch_uid="kaiwa_user_deleted")


# -- the user's own room events (protocol.md 7.5, chat.roomevents) ----------------------

_ROOM_SEEN = "_kaiwa_room_seen"


@receiver(post_init, sender=Room, dispatch_uid="kaiwa_room_seen")
def _on_room_seen(sender: Any, instance: Room, **kwargs: Any) -> None:
    fields = instance.__dict__
    setattr(instance, _ROOM_SEEN, (fields.get("name"), fields.get("private")))


@receiver(post_save, sender=Room, dispatch_uid="kaiwa_room_events")
def on_room_changed(sender: Any, instance: Room, created: bool, raw: bool = False, **kwargs: Any) -> None:
    """A room created, renamed, or made public or private: tell who can now (or no longer) see it."""
    before_name, before_private = getattr(instance, _ROOM_SEEN, (None, None))
    setattr(instance, _ROOM_SEEN, (instance.name, instance.private))
    if raw:
        return
    room_id = instance.pk
    if created or (before_private is True and not instance.private):

        def added() -> dict[str, Any] | None:
            room = Room.objects.filter(pk=room_id).first()
            if room is None:
                return None
            # A private room's members were added in the same transaction (bulk_create sends no signal).
            users = roomevents.member_ids(room_id) if room.private else None
            return roomevents.event(roomevents.ADDED, room_id=room_id, room=roomevents.room_dict(room), users=users)

        roomevents.publish_on_commit(added)
        return
    if instance.private and before_private is False:
        slug = instance.slug

        def removed() -> dict[str, Any]:
            members = roomevents.member_ids(room_id)
            return roomevents.event(roomevents.REMOVED, room_id=room_id, room=slug, everyone_except=members)

        roomevents.publish_on_commit(removed)
        return
    if before_name is not None and before_name != instance.name:

        def updated() -> dict[str, Any] | None:
            room = Room.objects.filter(pk=room_id).first()
            if room is None:
                return None
            users = roomevents.member_ids(room_id) if room.private else None
            return roomevents.event(roomevents.UPDATED, room_id=room_id, room=roomevents.room_dict(room), users=users)

        roomevents.publish_on_commit(updated)


@receiver(post_save, sender=Membership, dispatch_uid="kaiwa_membership_added")
def on_membership_added(sender: Any, instance: Membership, created: bool, raw: bool = False, **kwargs: Any) -> None:
    """Someone added to a private room (room_member_add, the admin inline) now sees it."""
    if not created or raw:
        return
    room_id, user_id = instance.room_id, instance.user_id

    def added() -> dict[str, Any] | None:
        room = Room.objects.filter(pk=room_id, private=True).first()
        if room is None or not Membership.objects.filter(room_id=room_id, user_id=user_id).exists():
            return None
        return roomevents.event(roomevents.ADDED, room_id=room_id, room=roomevents.room_dict(room), users=[user_id])

    roomevents.publish_on_commit(added)


@receiver(post_delete, sender=Membership, dispatch_uid="kaiwa_membership_removed")
def on_membership_removed(sender: Any, instance: Membership, **kwargs: Any) -> None:
    """Someone removed from a private room (or the room deleted) no longer sees it."""
    # Read now: when the room itself is being deleted, its row goes right after its memberships.
    row = Room.objects.filter(pk=instance.room_id).values_list("slug", "private").first()
    if row is None or not row[1]:
        return
    data = roomevents.event(roomevents.REMOVED, room_id=instance.room_id, room=row[0], users=[instance.user_id])
    roomevents.publish_on_commit(lambda: data)


@receiver(post_delete, sender=Room, dispatch_uid="kaiwa_room_removed")
def on_room_removed(sender: Any, instance: Room, **kwargs: Any) -> None:
    """A public room deleted disappears for everybody (a private room's members are told per membership)."""
    if instance.private:
        return
    data = roomevents.event(roomevents.REMOVED, room_id=instance.pk, room=instance.slug, everyone_except=())
    roomevents.publish_on_commit(lambda: data)
