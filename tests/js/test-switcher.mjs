// switcher.js's filtering: what the quick switcher lists for a query, in which order.
import { test } from "node:test";
import assert from "node:assert/strict";

import { filterItems, mergeItems, rank } from "../../chat/static/chat/js/switcher.js";

const items = [
  { kind: "room", label: "General", slug: "general" },
  { kind: "room", label: "Product launch", slug: "launch" },
  { kind: "room", label: "Random", slug: "random" },
  { kind: "dm", label: "bob", slug: "dm-1" },
  { kind: "person", label: "carol", username: "carol" },
  { kind: "person", label: "gerald", username: "gerald" },
];

test("prefix before word start before substring; rooms before people at equal rank", () => {
  assert.equal(rank("Product launch", "lau"), 1);
  assert.equal(rank("General", "gen"), 0);
  assert.equal(rank("General", "era"), 2);
  assert.equal(rank("General", "xyz"), -1);
  assert.deepEqual(
    filterItems(items, "ge").map((i) => i.label),
    ["General", "gerald", "Message @ge"],
  );
  assert.deepEqual(filterItems(items, "la").map((i) => i.label), ["Product launch", "Message @la"]);
});

test("an empty query lists everything (up to 8); # and @ are ignored; a known person is not offered twice", () => {
  assert.equal(filterItems(items, "").length, items.length);
  assert.deepEqual(filterItems(items, "#rand").map((i) => i.label), ["Random", "Message @rand"]);
  assert.deepEqual(filterItems(items, "@BOB").map((i) => i.label), ["bob"]);
  assert.deepEqual(filterItems(items, "carol").map((i) => i.kind), ["person"]);
  const many = Array.from({ length: 20 }, (_, n) => ({ kind: "room", label: `room ${n}` }));
  assert.equal(filterItems(many, "room").length, 9); // 8 matches and the "Message @room" guess
  assert.deepEqual(filterItems(items, "no such thing!").map((i) => i.label), []);
});

test("people with a conversation appear as the conversation; oneself and duplicates are left out", () => {
  const merged = mergeItems([{ kind: "dm", label: "bob", slug: "dm-1" }], ["bob", "alice", "carol", "Carol"], "alice");
  assert.deepEqual(merged.map((i) => `${i.kind}:${i.label}`), ["dm:bob", "person:carol"]);
});
