"""Playwright fixtures: Debian's headless Chromium, logging in through the real login page.

Database rows are created before Playwright starts (Playwright's sync API runs
an event loop in this thread, and Django refuses ORM calls next to one).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery"
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"


@dataclass
class Browsers:
    """One headless Chromium, started on first use; every ``context()`` is a separate cookie jar (user).

    Starting lazily lets a test create its database rows first: Playwright's
    sync API keeps an event loop running in this thread once it has started.
    """

    manager: Any = None
    browser: Any = None
    contexts: list[Any] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def context(self, **options: Any) -> Any:
        if self.browser is None:
            from playwright.sync_api import sync_playwright

            self.manager = sync_playwright().start()
            self.browser = self.manager.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        options.setdefault("viewport", {"width": 1280, "height": 800})
        ctx = self.browser.new_context(**options)
        ctx.set_default_timeout(15_000)
        self.contexts.append(ctx)
        return ctx

    def page(self, ctx: Any) -> Any:
        page = ctx.new_page()
        # Any alert()/confirm() would mean script ran that should not have.
        page.on("dialog", self._on_dialog)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        return page

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def close(self) -> None:
        for ctx in self.contexts:
            ctx.close()
        if self.browser is not None:
            self.browser.close()
        if self.manager is not None:
            self.manager.stop()


@pytest.fixture
def browsers() -> Iterator[Browsers]:
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium (the CI script does this)")
    holder = Browsers()
    try:
        yield holder
    finally:
        holder.close()
    assert holder.errors == [], f"uncaught errors in the page: {holder.errors}"


def log_in(page: Any, base_url: str, username: str, next_path: str, password: str = PASSWORD) -> None:
    """Log in through the real login form and land on ``next_path``."""
    page.goto(f"{base_url}/accounts/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}{next_path}")


@pytest.fixture
def login() -> Callable[..., None]:
    return log_in
