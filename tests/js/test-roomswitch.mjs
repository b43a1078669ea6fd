// roomswitch.js's pure parts: a room's URLs from the page's config, and the slug of a path.
import { test } from "node:test";
import assert from "node:assert/strict";

import { roomUrls, slugOfPath } from "../../chat/static/chat/js/roomswitch.js";

const config = { roomsUrl: "/rooms/", messagesTemplate: "/api/rooms/{slug}/messages" };

test("a room's page and history URLs come from the config's templates", () => {
  assert.deepEqual(roomUrls(config, "dm-1a2b"), { page: "/rooms/dm-1a2b/", messages: "/api/rooms/dm-1a2b/messages" });
  const mounted = { roomsUrl: "/chat/rooms/", messagesTemplate: "/chat/api/rooms/{slug}/messages" };
  assert.deepEqual(roomUrls(mounted, "a"), { page: "/chat/rooms/a/", messages: "/chat/api/rooms/a/messages" });
});

test("the slug of a room page's path, and null for any other path", () => {
  assert.equal(slugOfPath(config, "/rooms/general/"), "general");
  assert.equal(slugOfPath(config, "/rooms/general"), null);
  assert.equal(slugOfPath(config, "/rooms/general/members/"), null);
  assert.equal(slugOfPath(config, "/accounts/login/"), null);
});
