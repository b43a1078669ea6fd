"""The one ASGI entrypoint: ``uvicorn project.asgi:application``.

* ``lifespan`` goes to the FastAPI app: Django's handler refuses it, and a
  mounted sub-app would never see it, so the dispatcher hands it over itself.
* ``websocket`` (``/ws``), ``/healthz``, ``/readyz``, ``/metrics`` and the JSON API (``/api/...``) go to
  the FastAPI app; HEAD under ``/api/`` is answered as GET without a body. A ``/ws``
  socket goes straight to the app's endpoint: Starlette's middleware stack
  would wrap every frame the server sends on it (measured at about 4% of the
  server's CPU in the fan-out benchmark) and has nothing to add to a raw ASGI
  endpoint.
* ``STATIC_URL`` is served asynchronously by Starlette.
* ``/api/`` and static files keep Django's HTTPS rules (``SECURE_SSL_REDIRECT``,
  HSTS: ``wsapp/https.py``); ``/healthz``, ``/readyz`` and ``/metrics`` answer
  plain HTTP, as a load balancer or Prometheus inside the network asks them.
* everything else is Django: pages, auth, the admin.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from django.core.asgi import get_asgi_application

# Must run before anything that imports models.
django_application = get_asgi_application()

from django.conf import settings  # noqa: E402
from starlette.types import Receive, Scope, Send  # noqa: E402

from wsapp import controlframes  # noqa: E402
from wsapp.api import head_as_get  # noqa: E402
from wsapp.app import create_app  # noqa: E402
from wsapp.https import https_only  # noqa: E402
from wsapp.staticfiles import create_static_app  # noqa: E402

# uvicorn answers WebSocket pings itself: bound what a ping flood can cost (close 1008).
controlframes.install()

# Django's handler is typed with narrower ASGI types than Starlette's.
_django: Any = django_application
fastapi_application = create_app()
_ws_endpoint = fastapi_application.state.ws_endpoint
_api = https_only(head_as_get(fastapi_application))
static_application = https_only(create_static_app())
_FASTAPI_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_static_prefix = settings.STATIC_URL if settings.STATIC_URL.startswith("/") else "/" + settings.STATIC_URL


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "http":
        path: str = scope["path"]
        if path.startswith(_static_prefix):
            await static_application(scope, receive, send)
        elif path.startswith("/api/") or path == "/api":
            await _api(scope, receive, send)
        elif path in _FASTAPI_PATHS:
            await fastapi_application(scope, receive, send)
        else:
            await _django(scope, receive, send)
    elif kind == "websocket" and scope["path"] == "/ws":
        await _ws_endpoint(scope, receive, send)
    else:
        # "lifespan", and sockets on other paths (refused by the router)
        await fastapi_application(scope, receive, send)
