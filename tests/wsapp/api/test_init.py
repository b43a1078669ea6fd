"""The API as a whole: one router behind the shared dependencies, its OpenAPI schema, HEAD, the README's sample."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from chat import services
from tests.wsapp.api.conftest import Api, login
from wsapp import api
from wsapp.api.errors import V1ErrorRoute

pytestmark = pytest.mark.django_db(transaction=True)

README = Path(__file__).resolve().parents[3] / "README.md"


def api_routes() -> list[tuple[str, str, APIRoute]]:
    """(method, path, route) of every route of every router in ``wsapp.api.ROUTERS``."""
    found: list[tuple[str, str, APIRoute]] = []
    for router in api.ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute), f"{route!r}: every API route is a FastAPI route"
            found.extend((method, api.PREFIX + route.path, route) for method in sorted(route.methods or ()))
    return found


def test_openapi_schema_lists_every_route_with_its_models(anonymous: Api):
    """/api/openapi.json (public) lists every API route, its answer model and its refusals' model."""
    response = anonymous.get("/api/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    components = schema["components"]["schemas"]
    listed = {
        (method.upper(), path) for path, ops in schema["paths"].items() for method in ops if path.startswith("/api/")
    }
    expected = api_routes()
    assert listed == {(method, path) for method, path, _ in expected}
    assert {("GET", "/api/rooms/"), ("GET", "/api/rooms/{slug}/messages")} <= listed
    for method, path, route in expected:
        operation = schema["paths"][path][method.lower()]
        answers = operation["responses"]
        success = next(status for status in answers if status.startswith("2"))
        if route.response_model is None:
            # A file download: its answer is the file, not JSON; every JSON route has a model.
            response_class: Any = getattr(route.response_class, "value", route.response_class)
            assert not issubclass(response_class, JSONResponse), f"{method} {path} answers JSON without a model"
        else:
            model = route.response_model.__name__
            schema_ref = answers[success]["content"]["application/json"]["schema"]
            assert schema_ref == {"$ref": f"#/components/schemas/{model}"}
            assert components[model]["properties"], model
        error_model = "V1ErrorBody" if isinstance(route, V1ErrorRoute) else "ErrorBody"
        refusals = [status for status in answers if status.startswith("4")]
        assert "403" in refusals, f"{method} {path}: the session check's 403 is documented"
        for status in refusals:
            ref = answers[status]["content"]["application/json"]["schema"]
            assert ref == {"$ref": f"#/components/schemas/{error_model}"}, (method, path, status)
        assert operation["security"] == [{"APIKeyCookie": []}]
    assert schema["components"]["securitySchemes"]["APIKeyCookie"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": "sessionid",
        "description": "Django's session cookie, set by logging in on the site's pages (/accounts/login/).",
    }
    # Invalid input is refused with 400 bad_request: FastAPI's 422 body is never documented.
    assert "HTTPValidationError" not in components
    for name in ("RoomList", "Room", "MessagePage", "Message", "User", "V1ErrorBody"):
        assert name in components


def test_history_parameters_are_typed_in_the_schema(anonymous: Api):
    """before and limit are integers with their bounds and default in the schema."""
    operation = anonymous.get("/api/openapi.json").json()["paths"]["/api/rooms/{slug}/messages"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert params["slug"]["in"] == "path"
    limit = params["limit"]["schema"]
    assert (limit["type"], limit["minimum"], limit["maximum"], limit["default"]) == ("integer", 1, 100, 50)
    before = params["before"]["schema"]["anyOf"][0]
    assert (before["type"], before["minimum"], before["maximum"]) == ("integer", 1, 2**63 - 1)


def readme_sample() -> str:
    """The Python code block of the README's 'Adding your own API endpoint' section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Adding your own API endpoint", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's API section has no python code block"
    return match.group(1)


@pytest.fixture
def sample_app():
    """A FastAPI app serving Kaiwa's routers plus the README's sample router, as ROUTERS would."""
    module = types.ModuleType("myapp_api")
    exec(compile(readme_sample(), "README.md", "exec"), module.__dict__)
    app = FastAPI(openapi_url=api.OPENAPI_URL)
    api.install(app, api.api_router(*api.ROUTERS, module.router))
    return app


def test_readme_sample_endpoint_knows_the_django_user(sample_app, alice, make_user):
    """The README's sample, added to the routers, greets the logged-in user and refuses anonymous requests."""
    services.room_create(name="Lobby", creator=alice)
    client = login(Api(sample_app), alice)
    response = client.get("/api/hello")
    assert response.status_code == 200
    assert response.json() == {"text": "Hello, alice!"}
    assert response.headers["Cache-Control"] == "private, no-store"
    assert client.get("/api/rooms/").json()["rooms"][0]["slug"] == "lobby"
    anonymous = Api(sample_app).get("/api/hello")
    assert anonymous.status_code == 403
    assert anonymous.json()["error"]["code"] == "forbidden"
    schema = client.get("/api/openapi.json").json()
    answer = schema["paths"]["/api/hello"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/Greeting"}
    forbidden = schema["paths"]["/api/hello"]["get"]["responses"]["403"]["content"]["application/json"]["schema"]
    assert forbidden == {"$ref": "#/components/schemas/ErrorBody"}
    assert "ErrorDetail" in schema["components"]["schemas"]


def test_head_is_get_without_a_body_for_every_api_path(api_alice: Api):
    """HEAD under /api/ answers as GET would, refusals included, with no body."""
    for path in ("/api/rooms/", "/api/nope", "/api/rooms/x/messages?limit=0"):
        get = api_alice.get(path)
        head = api_alice.request("HEAD", path)
        assert (head.status_code, head.content) == (get.status_code, b"")
        assert head.headers["Content-Type"] == get.headers["Content-Type"] == "application/json"
