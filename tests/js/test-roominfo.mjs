// roominfo.js: what the page knows about each room (who "@" offers, the user's rights), per room.
import { test } from "node:test";
import assert from "node:assert/strict";

import { RoomInfo, UNKNOWN, infoOf } from "../../chat/static/chat/js/roominfo.js";

const url = (slug) => `/api/rooms/${slug}/members`;

test("the page's own room is known from the page, without a request", () => {
  const fetched = [];
  const info = new RoomInfo({
    fetchJson: async (u) => fetched.push(u),
    url,
    slug: "general",
    seed: { mentionable: [{ id: 2, username: "bob" }], moderator: true, can_manage: false },
  });
  const own = info.get("general");
  assert.deepEqual(own.mentionable, [{ id: 2, username: "bob" }]);
  assert.equal(own.moderator, true);
  assert.equal(own.canManage, false);
  assert.equal(info.get("other"), null, "another room is unknown until read");
  assert.equal(info.has("general"), false, "its member list is still read from the API");
  assert.deepEqual(fetched, []);
});

test("another room is read once, however many ask at the same time", async () => {
  const fetched = [];
  const info = new RoomInfo({
    fetchJson: async (u) => {
      fetched.push(u);
      return { members: [{ id: 3, username: "carol" }], mentionable: [{ id: 3, username: "carol" }], moderator: false, can_manage: true };
    },
    url,
    slug: "general",
    seed: { mentionable: [], moderator: false, can_manage: false },
  });
  const [a, b] = await Promise.all([info.load("secret"), info.load("secret")]);
  assert.equal(a, b);
  assert.equal(a.canManage, true);
  assert.deepEqual(a.members, [{ id: 3, username: "carol" }]);
  await info.load("secret");
  assert.deepEqual(fetched, ["/api/rooms/secret/members"]);
  assert.equal(info.get("secret"), a);
});

test("a room the API could not answer for grants nothing, and is read again once forgotten", async () => {
  let fail = true;
  const info = new RoomInfo({
    fetchJson: async () => {
      if (fail) throw new Error("offline");
      return { members: [], mentionable: [], moderator: true, can_manage: false };
    },
    url,
    slug: "general",
    seed: { mentionable: [], moderator: false, can_manage: false },
  });
  assert.equal(await info.load("other"), UNKNOWN);
  fail = false;
  assert.equal(await info.load("other"), UNKNOWN, "not asked again on every render");
  info.forget("other");
  assert.equal((await info.load("other")).moderator, true);
});

test("a malformed answer counts as no rights and nobody to offer", () => {
  const info = infoOf({ members: "x", mentionable: [{ id: "1", username: "a" }, { id: 2, username: "b" }], moderator: "yes" });
  assert.deepEqual(info.members, []);
  assert.deepEqual(info.mentionable, [{ id: 2, username: "b" }]);
  assert.equal(info.moderator, false);
  assert.equal(info.canManage, false);
});
