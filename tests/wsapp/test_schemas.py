"""Frame parsing never fails with anything but a clear bad_request, and ``ref`` follows the contract."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from wsapp import schemas

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=80),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
frames = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["join", "leave", "send", "typing", "ping", "dance"]) | json_values,
        "room": st.sampled_from(["lobby", "a-b", "-bad", "UPPER", ""]) | json_values,
        "since": st.integers(min_value=-3, max_value=10**12) | json_values,
        "body": st.text(max_size=50) | json_values,
        "client_id": st.text(min_size=0, max_size=70) | json_values,
    },
)


def expected_ref(data: object) -> str | None:
    if not isinstance(data, dict):
        return None
    cid = data.get("client_id")
    if isinstance(cid, str) and 1 <= len(cid) <= 64 and _utf8(cid):
        return cid
    kind = data.get("type")
    return kind if isinstance(kind, str) and _utf8(kind) else None


def _utf8(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(frames | json_values)
def test_parse_accepts_or_refuses_with_the_contract_ref(data):
    """Any JSON value: a typed request, or BadFrame whose ref is client_id / type / null as the contract says."""
    text = json.dumps(data)
    try:
        request = schemas.parse(text)
    except schemas.BadFrame as bad:
        assert bad.ref == expected_ref(data)
        assert bad.message
        return
    assert isinstance(data, dict)
    assert request.ref == expected_ref(data) or (request.ref == "ping" and data["type"] == "ping")
    if isinstance(request, schemas.Send):
        assert isinstance(request.body, str)
        assert request.client_id is None or 1 <= len(request.client_id) <= 64


@given(st.text(max_size=200))
def test_parse_of_arbitrary_text_never_crashes(text):
    """Any text frame parses or raises BadFrame, nothing else."""
    with contextlib.suppress(schemas.BadFrame):
        schemas.parse(text)
