// render.js: the parts that need no DOM.
import assert from "node:assert/strict";
import { test } from "node:test";

import { avatarColour, safeHref } from "../../chat/static/chat/js/render.js";

test("a name gets the same avatar colour as the server gives it (tests/chat/test_views.py has the same table)", () => {
  assert.deepEqual(["alice", "bob", "Zoë", "?"].map(avatarColour), [0, 5, 6, 7]);
});

test("only absolute http(s) URLs become links", () => {
  assert.equal(safeHref("https://example.com/a?b=1"), "https://example.com/a?b=1");
  assert.equal(safeHref("http://example.com"), "http://example.com/");
  assert.equal(safeHref("javascript:alert(1)"), null);
  assert.equal(safeHref("data:text/html,x"), null);
  assert.equal(safeHref("/relative"), null);
});
