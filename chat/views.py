"""HTML pages: sign up, the room list, a room's page and its members page."""

from __future__ import annotations

from urllib.parse import quote

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from chat import roomevents, selectors, services
from chat.forms import MemberAddForm, RoomCreateForm, SignupForm
from chat.models import Room
from chat.paging import BadParameter, parse_before

# The paths the FastAPI app answers (project/asgi.py): not Django URLs, so
# they cannot be reversed; protocol.md fixes them.
WS_PATH = "/ws"
API_MESSAGES_PATH = "/api/rooms/{slug}/messages"
API_DMS_PATH = "/api/dms"
API_MEMBERS_PATH = "/api/rooms/{slug}/members"
# Avatar colours; render.js's avatarColour() picks the same one for a name.
AVATAR_COLOURS = 8


def avatar_colour(username: str) -> int:
    """The avatar colour of a name: the same hash as render.js, so live and server-rendered messages agree."""
    value = 0
    for char in username:
        value = (value * 31 + ord(char)) & 0xFFFFFFFF
    return value % AVATAR_COLOURS


def _visible_room_or_404(request: HttpRequest, slug: str) -> Room:
    room = selectors.room_get_for_user(user=request.user, slug=slug)
    if room is None:
        # Unknown and not-visible private rooms look the same.
        raise Http404(f"No room {slug!r} that you can see.")
    return room


def _bad_request(request: HttpRequest, reason: str) -> HttpResponse:
    # Django's own 400 handler renders without the request; this keeps the nav and says what was wrong.
    return render(request, "400.html", {"reason": reason}, status=400)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def room_list(request: HttpRequest) -> HttpResponse:
    form = RoomCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            room = services.room_create(
                name=data["name"],
                slug=data["slug"] or None,
                private=data["private"],
                creator=request.user if request.user.is_authenticated else None,
                members=data["members"],
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Room “{room.name}” created.")
            return redirect("chat:room_detail", slug=room.slug)
    rooms = selectors.room_list_for_user(user=request.user)
    status = 400 if request.method == "POST" else 200
    return render(request, "chat/room_list.html", {"rooms": rooms, "form": form}, status=status)


@login_required
@require_http_methods(["GET", "HEAD"])
def room_detail(request: HttpRequest, slug: str) -> HttpResponse:
    room = _visible_room_or_404(request, slug)
    try:
        before = parse_before(request.GET)
    except BadParameter as exc:
        return _bad_request(request, str(exc))
    history, has_more = selectors.message_page(room=room, before=before, limit=settings.KAIWA_HISTORY_PAGE_SIZE)
    frames = [selectors.message_frame(m, slug=room.slug) for m in history]
    rooms = selectors.room_list_for_user(user=request.user)
    sidebar = roomevents.room_dicts(rooms)
    for item in sidebar:
        if item["kind"] == "dm":
            # Named after the other person (oneself, for a conversation with oneself).
            others = [m["username"] for m in item["members"] if m["id"] != request.user.pk]
            item["dm_with"] = others[0] if others else request.user.get_username()
    title = next((r["dm_with"] for r in sidebar if r["slug"] == room.slug and r["kind"] == "dm"), room.name)
    context = {
        "room": room,
        "room_title": title,
        # The live client binds to this markup (chat/static/chat/js/view.js):
        # each <li> carries the message frame's fields, so the first page is
        # read from the page, never fetched a second time.
        "history": [
            {
                "frame": frame,
                "own": message.author_id == request.user.pk,
                "avatar_colour": avatar_colour(message.author_username),
                "initial": message.author_username[:1].upper() or "?",
                "created_at": message.created_at,
            }
            for message, frame in zip(history, frames, strict=True)
        ],
        "has_more": has_more,
        "oldest_seq": history[0].seq if history else None,
        # With ?before= the page is a look at older history, not the live view.
        "archive": before is not None,
        # The sidebar: every room the user may see, with the seq the unread counts start from.
        "rooms": [r for r in sidebar if r["kind"] != "dm"],
        "dms": [r for r in sidebar if r["kind"] == "dm"],
        "can_manage": selectors.room_rights(room=room, user=request.user)["can_manage"],
        "client_config": _client_config(request, room, has_more=has_more, title=title),
    }
    return render(request, "chat/room_detail.html", context)


def _client_config(request: HttpRequest, room: Room, *, has_more: bool, title: str) -> dict[str, object]:
    """What room.js needs from the server, embedded with json_script (static/chat/js/config.js reads it).

    Every server limit the client obeys is here, from the settings, so the
    JavaScript has no copy that could disagree with the server.
    """
    return {
        # name: what the page calls the room (a direct conversation: the other person).
        "room": {"slug": room.slug, "name": title, "private": room.private, "kind": room.kind},
        # moderator: may delete anyone's message (protocol.md 7.4); can_manage: the "Members" page.
        # Another room opened in place reads its own from /api/rooms/<slug>/members.
        "user": {
            "id": request.user.pk,
            "username": request.user.get_username(),
            **selectors.room_rights(room=room, user=request.user),
        },
        # Who "@" offers in the composer (with the people online and the authors on screen).
        "members": selectors.room_mentionable(room=room),
        "urls": {
            "ws": WS_PATH,
            "messages": API_MESSAGES_PATH.format(slug=quote(room.slug)),
            "login": resolve_url(settings.LOGIN_URL),
            "dms": API_DMS_PATH,
            # Any room's history: {slug} replaced (switching rooms in place, static/chat/js/roomswitch.js).
            "messages_template": API_MESSAGES_PATH,
            "members_template": API_MEMBERS_PATH,
            # A private room's members page, for its creator: {slug} replaced.
            "members_page_template": reverse("chat:room_members", kwargs={"slug": "x"})[: -len("x/members/")]
            + "{slug}/members/",
            # Where a room's page is: this + slug + "/" (chat.urls).
            "rooms": reverse("chat:room_detail", kwargs={"slug": "x"})[: -len("x/")],
        },
        "history": {"has_more": has_more, "page_size": settings.KAIWA_HISTORY_PAGE_SIZE},
        "limits": {
            "max_body_chars": settings.KAIWA_MAX_BODY_CHARS,
            "max_frame_bytes": settings.KAIWA_MAX_FRAME_BYTES,
            "max_rooms_per_connection": settings.KAIWA_MAX_ROOMS_PER_CONNECTION,
            "dedup_seconds": settings.KAIWA_DEDUP_SECONDS,
            "typing_interval_ms": settings.KAIWA_TYPING_INTERVAL_MS,
        },
    }


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def room_members(request: HttpRequest, slug: str) -> HttpResponse:
    room = _visible_room_or_404(request, slug)
    if not room.private:
        raise Http404("Public rooms have no member list: everyone can join them.")
    if not selectors.room_rights(room=room, user=request.user)["can_manage"]:
        raise PermissionDenied("Only the room's creator can manage its members.")
    form = MemberAddForm(request.POST if request.method == "POST" and "add" in request.POST else None)
    status = 200
    if request.method == "POST":
        if "remove" in request.POST:
            raw = request.POST.get("remove", "").strip()
            user = (
                get_user_model()._default_manager.filter(pk=int(raw)).first()
                if raw.isascii() and raw.isdigit() and len(raw) <= 18
                else None
            )
            if user is None:
                return _bad_request(request, "That account does not exist any more; reload the page.")
            try:
                removed = services.room_member_remove(room=room, user=user)
            except ValidationError as exc:
                messages.error(request, " ".join(exc.messages))
            else:
                if removed:
                    messages.success(request, f"{user.username} is no longer a member.")
            return redirect("chat:room_members", slug=room.slug)
        if form.is_valid():
            user = form.cleaned_data["username"]
            services.room_member_add(room=room, user=user)
            messages.success(request, f"{user.username} is now a member.")
            return redirect("chat:room_members", slug=room.slug)
        status = 400
    context = {"room": room, "members": selectors.room_members(room=room), "form": form}
    return render(request, "chat/room_members.html", context, status=status)


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse(settings.LOGIN_REDIRECT_URL)


@require_http_methods(["GET", "HEAD", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect(_next_url(request))
    form = SignupForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                user = services.user_signup(
                    username=form.cleaned_data["username"], password=form.cleaned_data["password"]
                )
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                if user.is_superuser:
                    messages.info(request, "Welcome! As the first account in development mode you are an admin.")
                else:
                    messages.success(request, f"Welcome, {user.username}!")
                return redirect(_next_url(request))
        status = 400
    first_account_admin = settings.DEBUG and not get_user_model()._default_manager.exists()
    context = {"form": form, "first_account_admin": first_account_admin, "next": _next_url(request)}
    return render(request, "registration/signup.html", context, status=status)
