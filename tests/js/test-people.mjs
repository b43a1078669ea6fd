// people.js: which members the people panel lists as not here.
import { test } from "node:test";
import assert from "node:assert/strict";

import { awayMembers } from "../../chat/static/chat/js/people.js";

test("members who are not present, by name", () => {
  const members = [
    { id: 3, username: "carol" },
    { id: 1, username: "alice" },
    { id: 2, username: "bob" },
  ];
  assert.deepEqual(awayMembers(members, new Set([2])).map((m) => m.username), ["alice", "carol"]);
  assert.deepEqual(awayMembers(members, new Set([1, 2, 3])), []);
  assert.deepEqual(awayMembers([], new Set()), []);
});
