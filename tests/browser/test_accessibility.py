"""axe-core on the room page in real Chromium, light and dark: no serious or critical violation (issue #16).

axe-core comes from the npm registry, pinned in tests/js/package.json and
installed with ``npm ci --prefix tests/js`` (never a CDN). The pages forbid
inline scripts (CSP), so the test contexts bypass the CSP to inject it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chat import dms, services
from tests.browser.conftest import ROOT, SCREENSHOTS, Browsers
from tests.browser.test_room_page import expect, log_in_and_wait, send, wait_for_bodies

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = ROOT / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")


def axe_source() -> Path:
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `npm ci --prefix tests/js` (axe-core, pinned in tests/js/package.json)")
    return AXE


def violations(page: Any) -> list[str]:
    """axe's serious and critical WCAG 2 A/AA violations of the page as it is now, one line each."""
    page.add_script_tag(path=str(axe_source()))
    found = page.evaluate(
        """async () => {
            const tags = ["wcag2a", "wcag2aa", "wcag21aa"];
            const result = await axe.run(document, { runOnly: { type: "tag", values: tags } });
            return result.violations.map(v => ({ id: v.id, impact: v.impact,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ") + ": " + (n.failureSummary || ""))}));
        }"""
    )
    return [f"{v['id']} ({v['impact']}): {v['nodes']}" for v in found if v["impact"] in SERIOUS]


def alice_with_a_mention(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any, scheme: str, **alice_context: Any
) -> Any:
    """alice's room page (with a conversation in her sidebar), once bob's message naming her has arrived."""
    alice, _bob = make_user("alice"), make_user("bob")
    services.room_create(name="General", slug="general", creator=alice)
    dms.dm_open(user=alice, username="bob")
    server = start_server()
    a = browsers.page(browsers.context(color_scheme=scheme, bypass_csp=True, **alice_context))
    log_in_and_wait(a, login, server, "alice", "general")
    b = browsers.page(browsers.context(color_scheme=scheme))
    log_in_and_wait(b, login, server, "bob", "general")
    send(b, "hello @alice, see https://example.com")
    wait_for_bodies(a, ["hello @alice, see https://example.com"])
    return a


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_room_page_has_no_serious_accessibility_violation(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any, scheme: str
) -> None:
    """The room page with messages, a conversation in the sidebar, the people list and the quick switcher open."""
    a = alice_with_a_mention(browsers, login, start_server, make_user, scheme)
    assert violations(a) == []
    a.keyboard.press("Control+k")
    a.keyboard.type("b")
    expect(a.get_by_role("dialog", name="Jump to a room or person")).to_be_visible()
    assert violations(a) == []
    a.screenshot(path=str(SCREENSHOTS / f"a11y-{scheme}.png"))


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_phone_size_room_page_and_its_panels_have_no_serious_accessibility_violation(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any, scheme: str
) -> None:
    """At phone size (390x844): the room page, then with the Rooms panel slid in, then the people panel."""
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True}
    a = alice_with_a_mention(browsers, login, start_server, make_user, scheme, **phone)
    settled = "() => document.getAnimations().every(a => a.playState !== 'running')"
    assert violations(a) == []
    a.get_by_role("button", name="Rooms").click()
    expect(a.locator(".rooms")).to_be_in_viewport(ratio=1)
    a.wait_for_function(settled)
    assert violations(a) == []
    a.keyboard.press("Escape")
    expect(a.locator(".rooms")).not_to_be_in_viewport()
    a.locator(".chat__people-toggle").click()
    expect(a.locator(".presence")).to_be_in_viewport(ratio=1)
    a.wait_for_function(settled)
    assert violations(a) == []
    a.screenshot(path=str(SCREENSHOTS / f"a11y-phone-{scheme}.png"))
