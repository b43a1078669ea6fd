// notify.js's decisions: who is mentioned, when a message notifies, the favicon badge.
import { test } from "node:test";
import assert from "node:assert/strict";

import { badgeIcon, mentionsMe, shouldNotify } from "../../chat/static/chat/js/notify.js";

const me = { id: 1, username: "alice" };
const bob = { id: 2, username: "bob" };
const message = (body, extra = {}) => ({ type: "message", room: "general", user: bob, body, ...extra });

test("a mention is the server's mentions list, or @username as a word in the body", () => {
  assert.equal(mentionsMe(message("hi", { mentions: [1] }), me), true);
  assert.equal(mentionsMe(message("hi @alice!"), me), true);
  assert.equal(mentionsMe(message("@Alice: look"), me), true);
  assert.equal(mentionsMe(message("hi @alicex"), me), false);
  assert.equal(mentionsMe(message("mail alice@alice.org"), me), false);
  assert.equal(mentionsMe(message("hi alice"), me), false);
  assert.equal(mentionsMe(message("hi", { mentions: [2] }), me), false);
});

test("direct messages and mentions notify while hidden or in another room; never own, muted or ordinary ones", () => {
  const base = { me, isDm: false, isOpen: false, hidden: false, muted: false };
  assert.equal(shouldNotify({ ...base, frame: message("@alice hi") }), true);
  assert.equal(shouldNotify({ ...base, frame: message("hi"), isDm: true }), true);
  assert.equal(shouldNotify({ ...base, frame: message("hi") }), false);
  assert.equal(shouldNotify({ ...base, frame: message("@alice hi"), isOpen: true }), false);
  assert.equal(shouldNotify({ ...base, frame: message("@alice hi"), isOpen: true, hidden: true }), true);
  assert.equal(shouldNotify({ ...base, frame: message("hi"), isDm: true, muted: true }), false);
  assert.equal(shouldNotify({ ...base, frame: { ...message("@alice"), user: me } }), false);
  assert.equal(shouldNotify({ ...base, frame: { type: "typing", room: "general", user: bob } }), false);
});

test("the favicon badge is an SVG data URL with the count, capped at 99+", () => {
  const one = decodeURIComponent(badgeIcon(3));
  assert.ok(one.startsWith("data:image/svg+xml,<svg"));
  assert.ok(one.includes(">3</text>"));
  assert.ok(decodeURIComponent(badgeIcon(250)).includes(">99+</text>"));
});
