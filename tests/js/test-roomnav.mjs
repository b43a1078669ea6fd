// roomnav.js's pure parts: naming a direct conversation, and the CSRF cookie.
import { test } from "node:test";
import assert from "node:assert/strict";

import { csrfToken, dmPartner } from "../../chat/static/chat/js/roomnav.js";

test("a direct conversation is named after the other member, or oneself when alone", () => {
  const me = { id: 1, username: "alice" };
  const both = { members: [{ id: 1, username: "alice" }, { id: 2, username: "bob" }] };
  assert.equal(dmPartner(both, me), "bob");
  assert.equal(dmPartner({ members: [{ id: 1, username: "alice" }] }, me), "alice");
  assert.equal(dmPartner({}, me), "alice");
});

test("the csrftoken cookie is found among others, decoded; absent gives an empty string", () => {
  assert.equal(csrfToken("sessionid=x; csrftoken=abc%3D; theme=dark"), "abc=");
  assert.equal(csrfToken("csrftoken=t1"), "t1");
  assert.equal(csrfToken("sessionid=x"), "");
  assert.equal(csrfToken(""), "");
});
