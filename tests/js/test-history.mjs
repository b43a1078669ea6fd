// history.js: paging over HTTP, and the reload after a reset that waits for the worker.
import assert from "node:assert/strict";
import { test } from "node:test";

import { History } from "../../chat/static/chat/js/history.js";
import { RoomState } from "../../chat/static/chat/js/store.js";

const msg = (seq) => ({ type: "message", room: "r", seq, ts: "2026-11-21T12:00:00.000Z", user: { id: 1, username: "a" }, body: "" });

function setup(answers) {
  const fetched = [];
  const slept = [];
  const errors = [];
  const inserted = [];
  const view = {
    insertMessage: (m) => inserted.push(m.seq),
    renderHistoryEdge: () => {},
    scrollToBottom: () => {},
    showHistoryError: (text) => errors.push(text),
    hideHistoryError: () => {},
    setLoadingOlder: () => {},
    keepPosition: (change) => change(),
  };
  const room = new RoomState("r");
  const history = new History({
    room,
    view,
    fetchJson: async (url) => {
      fetched.push(url);
      return answers.shift();
    },
    messagesUrl: "/api/rooms/r/messages",
    pageSize: 3,
    settle: () => {},
    sleep: async (ms) => {
      slept.push(ms);
    },
  });
  return { history, room, fetched, slept, errors, inserted };
}

test("after a reset the latest page is fetched again, with backoff, until it reaches joined.last_seq", async () => {
  const { history, room, fetched, slept, errors, inserted } = setup([
    { messages: [msg(7), msg(8)], has_more: true }, // the worker has not stored 9 yet
    { messages: [msg(7), msg(8)], has_more: true },
    { messages: [msg(7), msg(8), msg(9)], has_more: true },
  ]);
  await history.reloadLatest(9);
  assert.deepEqual(fetched, Array(3).fill("/api/rooms/r/messages?limit=3&before=10"));
  assert.deepEqual(slept, [250, 500]);
  assert.deepEqual(errors, ["Catching up with the history…", "Catching up with the history…"]);
  assert.deepEqual(inserted, [7, 8, 9]);
  assert.equal(room.lastSeq, 9);
});

test("older pages use the page's size and the oldest seq held, and stop when there are no more", async () => {
  const { history, room, fetched } = setup([
    { messages: [msg(2), msg(3), msg(4)], has_more: true },
    { messages: [msg(1)], has_more: false },
  ]);
  room.addHistoryPage([msg(5), msg(6)], true, { latest: true });
  await history.loadOlder();
  await history.loadOlder();
  await history.loadOlder(); // nothing left: no request
  assert.deepEqual(fetched, ["/api/rooms/r/messages?before=5&limit=3", "/api/rooms/r/messages?before=2&limit=3"]);
  assert.deepEqual(room.sortedSeqs(), [1, 2, 3, 4, 5, 6]);
  assert.equal(room.hasMore, false);
});
