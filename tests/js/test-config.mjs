// config.js: the page's kaiwa-config JSON is the only source of server settings.
import assert from "node:assert/strict";
import { test } from "node:test";

import { parseConfig } from "../../chat/static/chat/js/config.js";
import { PAGE_CONFIG } from "./fakes.mjs";

test("the page's JSON becomes the client's configuration, every limit as the server set it", () => {
  const config = parseConfig(JSON.stringify({ ...PAGE_CONFIG, limits: { ...PAGE_CONFIG.limits, dedup_seconds: 5 } }));
  assert.equal(config.slug, "general");
  assert.equal(config.userId, 1);
  assert.equal(config.messagesUrl, "/api/rooms/general/messages");
  assert.equal(config.pageSize, 50);
  assert.equal(config.hasMore, false);
  assert.equal(config.dedupSeconds, 5);
  assert.equal(config.maxBodyChars, 4000);
  assert.equal(config.maxFrameBytes, 65536);
  assert.equal(config.maxRooms, 100);
  assert.equal(config.typingIntervalMs, 1000);
  assert.ok(Object.isFrozen(config));
});

test("a missing or mistyped setting is refused with what to fix, never replaced by a default", () => {
  const without = structuredClone(PAGE_CONFIG);
  delete without.limits.dedup_seconds;
  assert.throws(() => parseConfig(JSON.stringify(without)), /limits\.dedup_seconds.*room_detail/);
  const wrong = structuredClone(PAGE_CONFIG);
  wrong.limits.max_body_chars = "4000";
  assert.throws(() => parseConfig(JSON.stringify(wrong)), /limits\.max_body_chars \(a integer\)/);
  assert.throws(() => parseConfig("{"), /not JSON/);
  assert.throws(() => parseConfig("null"), /room\.slug/);
});
