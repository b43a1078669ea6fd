"""Static files served by Starlette, asynchronously (whitenoise is sync-only)."""

from __future__ import annotations

from pathlib import Path

from django.apps import apps
from django.conf import settings
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _CachingStaticFiles:
    """Adds ``Cache-Control`` to what StaticFiles answers."""

    def __init__(self, app: ASGIApp, prefix: str, max_age: int) -> None:
        self.app = app
        self.prefix = prefix
        self.header = f"public, max-age={max_age}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # StaticFiles resolves paths against its own root, so strip STATIC_URL.
        inner = dict(scope)
        inner["path"] = "/" + scope["path"][len(self.prefix) :]
        inner["root_path"] = scope.get("root_path", "") + self.prefix.rstrip("/")

        async def send_with_cache(message: Message) -> None:
            if message["type"] == "http.response.start" and message.get("status") == 200:
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (b"cache-control", self.header)]
            await send(message)

        try:
            await self.app(inner, receive, send_with_cache)
        except HTTPException as exc:
            # StaticFiles expects an exception middleware around it; we are bare.
            await PlainTextResponse(exc.detail, status_code=exc.status_code)(scope, receive, send)


def create_static_app() -> ASGIApp:
    """``STATIC_ROOT`` after ``collectstatic``, else each app's ``static/`` dir."""
    root = settings.STATIC_ROOT
    directory = str(root) if root and Path(root).is_dir() else None
    packages: list[str | tuple[str, str]] = []
    for config in apps.get_app_configs():
        if (Path(config.path) / "static").is_dir():
            packages.append((config.name, "static"))
    prefix = settings.STATIC_URL if settings.STATIC_URL.startswith("/") else "/" + settings.STATIC_URL
    static = StaticFiles(directory=directory, packages=packages, check_dir=False)
    return _CachingStaticFiles(static, prefix, max_age=3600)
