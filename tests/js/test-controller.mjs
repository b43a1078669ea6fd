// controller.js over a recording view and socket: the first page comes from the
// page, and the send pipeline obeys the page's limits (dedup window, rooms, frame size).
import assert from "node:assert/strict";
import { test } from "node:test";

import { parseConfig } from "../../chat/static/chat/js/config.js";
import { RoomController } from "../../chat/static/chat/js/controller.js";
import { PendingSends, ReadMarks, resendWindowMs } from "../../chat/static/chat/js/store.js";
import { FakeClock, MemoryStorage, PAGE_CONFIG } from "./fakes.mjs";

const alice = { id: 1, username: "alice" };

/** A view that records every call; `page` is what the server rendered. */
function recordingView({ rooms = [], firstPage = [], composer = "" } = {}) {
  const calls = [];
  const state = { leftOff: null, composer };
  const known = {
    readRooms: () => rooms,
    readFirstPage: () => firstPage,
    composerText: () => state.composer,
    clearComposer: () => {
      state.composer = "";
    },
    isAtBottom: () => true,
    keepPosition: (change) => change(),
  };
  const view = new Proxy(state, {
    get(target, name) {
      if (name in target) return target[name];
      return (...args) => {
        // A snapshot: the controller goes on changing the objects it passed.
        calls.push([name, ...args.map((a) => (typeof a === "function" ? a : structuredClone(a)))]);
        return known[name] ? known[name](...args) : undefined;
      };
    },
    set(target, name, value) {
      target[name] = value;
      return true;
    },
  });
  return { view, calls, state };
}

function recordingSocket() {
  return {
    sent: [],
    status: "connected",
    isOpen: () => true,
    send(frame) {
      this.sent.push(frame);
      return true;
    },
  };
}

function setup({ limits = {}, history = {}, storage = new MemoryStorage(), clock = new FakeClock(), answer = { messages: [], has_more: false }, ...viewOptions } = {}) {
  const config = parseConfig(
    JSON.stringify({ ...PAGE_CONFIG, limits: { ...PAGE_CONFIG.limits, ...limits }, history: { ...PAGE_CONFIG.history, ...history } }),
  );
  const { view, calls, state } = recordingView(viewOptions);
  const fetched = [];
  const pending = new PendingSends(config.userId, {
    storage,
    resendWindowMs: resendWindowMs(config.dedupSeconds),
    now: clock.now,
  });
  const controller = new RoomController({
    config,
    view,
    pending,
    marks: new ReadMarks(config.userId, new MemoryStorage()),
    fetchJson: async (url) => {
      fetched.push(url);
      return answer;
    },
    visible: () => true,
  });
  const socket = recordingSocket();
  controller.attach(socket);
  return { controller, view, calls, state, socket, fetched, pending, clock };
}

const stored = (seq) => ({ type: "message", room: "general", seq, ts: "2026-11-21T12:00:00.000Z", user: alice, body: `m${seq}`, client_id: null });

test("the first page is read from the server's markup, never fetched, and the join resumes after it", () => {
  const { controller, socket, fetched } = setup({ firstPage: [stored(1), stored(2), stored(3)], history: { has_more: true } });
  controller.start();
  controller.joinAll();
  assert.deepEqual(fetched, []);
  assert.equal(controller.active.hasMore, true);
  assert.deepEqual(socket.sent, [{ type: "join", room: "general", since: 3 }]);
});

test("the room's epoch from joined goes back with since on the next join, and a new one replaces it", async () => {
  const answer = { messages: [stored(6), stored(7)], has_more: true };
  const { controller, socket } = setup({ firstPage: [stored(1), stored(2), stored(3)], answer });
  controller.start();
  controller.handleFrame({ type: "joined", room: "general", last_seq: 3, presence: [], reset: false, epoch: "e1" });
  controller.onSocketClosed();
  controller.joinAll();
  assert.deepEqual(socket.sent.at(-1), { type: "join", room: "general", since: 3, epoch: "e1" });
  // The epoch changed under a joined client: an unsolicited joined with reset and the new epoch.
  controller.handleFrame({ type: "joined", room: "general", last_seq: 7, presence: [], reset: true, epoch: "e2" });
  await new Promise((resolve) => setImmediate(resolve)); // the history reload after the reset
  controller.onSocketClosed();
  controller.joinAll();
  assert.equal(socket.sent.at(-1).epoch, "e2");
});

test("the sidebar's rooms are joined up to the page's KAIWA_MAX_ROOMS_PER_CONNECTION", () => {
  const rooms = ["general", "a", "b", "c"].map((slug) => ({ slug, name: slug, lastSeq: 4 }));
  const { controller, socket } = setup({ rooms, limits: { max_rooms_per_connection: 2 } });
  controller.start();
  controller.joinAll();
  assert.deepEqual(socket.sent.map((f) => f.room), ["general", "a"]);
  // A background room counts unread messages without making the user present in it (protocol 7.5).
  assert.deepEqual(socket.sent[1], { type: "join", room: "a", since: 4, presence: false });
  assert.equal(socket.sent[0].presence, undefined);
});

test("a room added live is counted (all unread) and joined in the background; a removed one is dropped", () => {
  const { controller, socket } = setup({});
  controller.start();
  controller.joinAll();
  socket.sent.length = 0;
  controller.addRoom({ slug: "new", name: "New", lastSeq: 3 });
  assert.equal(controller.rooms.get("new").unread, 3);
  controller.dmSlugs.add("dm-x");
  controller.addRoom({ slug: "dm-x", name: "bob", lastSeq: 0 });
  assert.deepEqual(socket.sent, [
    { type: "join", room: "new", since: 3, presence: false },
    { type: "join", room: "dm-x" },
  ]);
  controller.removeRoom("new");
  assert.equal(controller.rooms.has("new"), false);
});

test("a pending send is re-sent on join only within the page's KAIWA_DEDUP_SECONDS; past it, it fails for the user", () => {
  for (const [dedupSeconds, resent] of [
    [600, true],
    [5, false],
  ]) {
    const clock = new FakeClock();
    const storage = new MemoryStorage();
    const before = setup({ storage, clock, composer: "hello", limits: { dedup_seconds: dedupSeconds } });
    before.controller.start();
    before.controller.submit(); // not joined yet: kept, not sent
    assert.deepEqual(before.socket.sent, []);
    clock.advance(10_000); // the server was away for 10 s
    const { controller, socket, calls } = setup({ storage, clock, limits: { dedup_seconds: dedupSeconds } });
    controller.start();
    controller.handleFrame({ type: "joined", room: "general", last_seq: 0, presence: [alice], reset: false });
    const sends = socket.sent.filter((f) => f.type === "send");
    assert.equal(sends.length, resent ? 1 : 0, `dedup_seconds=${dedupSeconds}`);
    const shown = calls.filter(([name]) => name === "renderPending").map(([, item]) => item.state);
    assert.deepEqual(shown, [resent ? "pending" : "failed"]);
  }
});

test("the body limit and the frame limit come from the page: over them nothing is sent", () => {
  const { controller, socket, state, calls } = setup({ limits: { max_body_chars: 10, max_frame_bytes: 100 } });
  controller.start();
  controller.handleFrame({ type: "joined", room: "general", last_seq: 0, presence: [], reset: false });
  state.composer = "eleven char";
  controller.submit();
  assert.deepEqual(calls.filter(([n]) => n === "showComposerError").map(([, text]) => text), ["1 character over the limit of 10."]);
  state.composer = "é".repeat(10); // 10 characters, but its frame is 112 bytes once encoded
  controller.submit();
  assert.deepEqual(socket.sent.filter((f) => f.type === "send"), []);
  const failed = calls.filter(([n, item]) => n === "renderPending" && item.state === "failed");
  assert.equal(failed.length, 1);
  assert.equal(failed[0][1].code, "too_large");
  state.composer = "short";
  controller.submit();
  assert.deepEqual(socket.sent.filter((f) => f.type === "send").map((f) => f.body), ["short"]);
});

test("typing frames go out no faster than the server's KAIWA_TYPING_INTERVAL_MS (and at least 3 s apart)", () => {
  const { controller } = setup({ limits: { typing_interval_ms: 10_000 } });
  assert.equal(controller.typingThrottleMs, 10_000);
  assert.equal(controller.typingShownMs, 20_000);
  assert.equal(setup().controller.typingThrottleMs, 3000);
});

test("an ack and the message frame settle a send once, whichever comes first, and a reset reloads from HTTP", async () => {
  const answer = { messages: [stored(8), stored(9)], has_more: true };
  const { controller, socket, state, fetched, calls } = setup({ composer: "hi", answer });
  controller.start();
  controller.handleFrame({ type: "joined", room: "general", last_seq: 0, presence: [], reset: false });
  controller.submit();
  const [send] = socket.sent.filter((f) => f.type === "send");
  controller.handleFrame({ type: "message", room: "general", seq: 1, ts: "2026-11-21T12:00:00.000Z", user: alice, body: "hi", client_id: send.client_id });
  controller.handleFrame({ type: "ack", room: "general", client_id: send.client_id, seq: 1, ts: "2026-11-21T12:00:00.000Z" });
  assert.deepEqual(calls.filter(([n]) => n === "insertMessage").map(([, m]) => m.seq), [1]);
  assert.deepEqual(controller.pending.forRoom("general"), []);
  state.composer = "";
  controller.handleFrame({ type: "joined", room: "general", last_seq: 9, presence: [], reset: true });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(fetched, ["/api/rooms/general/messages?limit=50&before=10"]);
  assert.deepEqual(controller.active.sortedSeqs(), [8, 9]);
  assert.equal(controller.active.lastSeq, 9);
  // The server joined us at last_seq already: the live stream goes on from 10 without another join.
  assert.deepEqual(socket.sent.filter((f) => f.type === "join"), []);
});

test("ArrowUp edits the last own message with an edit frame; a reply carries reply_to; a refusal is explained", () => {
  const { controller, socket, state, calls } = setup({ firstPage: [stored(1), stored(2)] });
  controller.start();
  controller.handleFrame({ type: "joined", room: "general", last_seq: 2, presence: [], reset: false });
  assert.equal(controller.editLast(), true);
  assert.deepEqual(controller.context, { kind: "edit", seq: 2 });
  state.composer = "m2 fixed";
  controller.submit();
  const edit = socket.sent.at(-1);
  assert.deepEqual({ ...edit, client_id: undefined }, { type: "edit", room: "general", target: 2, body: "m2 fixed", client_id: undefined });
  controller.handleFrame({ type: "error", code: "forbidden", message: "Only the author can edit it.", ref: edit.client_id });
  assert.deepEqual(calls.filter((c) => c[0] === "showComposerError").at(-1), ["showComposerError", "Could not edit the message: Only the author can edit it."]);

  controller.reply(1);
  state.composer = "answer";
  controller.submit();
  const send = socket.sent.at(-1);
  assert.equal(send.type, "send");
  assert.equal(send.reply_to, 1);
  assert.equal(controller.context, null);

  controller.handleFrame({ type: "deleted", room: "general", seq: 4, ts: "t", target: 1, user: alice });
  assert.equal(controller.active.messages.get(1).deleted, true);
  assert.equal(controller.active.lastSeq, 4);
  assert.equal(controller.mentionCandidates().map((u) => u.username).join(), "bob");
});

test("a join refused as unavailable goes out again after retry_after_ms, and joined clears the refusal; not_found is not retried", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { controller, socket, calls } = setup({ firstPage: [stored(1)] });
  const joins = () => socket.sent.filter((f) => f.type === "join");
  controller.start();
  controller.joinAll();
  assert.equal(joins().length, 1);
  const refusal = { type: "error", code: "unavailable", message: "The database did not answer.", ref: "join", room: "general" };
  controller.handleFrame({ ...refusal, retry_after_ms: 1000 });
  assert.deepEqual(calls.filter((c) => c[0] === "showHistoryError").at(-1), [
    "showHistoryError",
    "Could not join this room: The database did not answer. Retrying in 1.0 s.",
  ]);
  t.mock.timers.tick(999);
  assert.equal(joins().length, 1);
  t.mock.timers.tick(1);
  assert.deepEqual(joins().at(-1), { type: "join", room: "general", since: 1 });
  const hides = () => calls.filter((c) => c[0] === "hideHistoryError").length;
  const hiddenBefore = hides();
  controller.handleFrame({ type: "joined", room: "general", last_seq: 1, presence: [], reset: false });
  assert.equal(hides(), hiddenBefore + 1);
  assert.equal(controller.active.error, null);

  controller.onSocketClosed();
  controller.joinAll();
  controller.handleFrame({ ...refusal, code: "not_found", message: "No such room." });
  t.mock.timers.tick(60_000);
  assert.equal(joins().length, 3);
});

test("sends refused for now go out again together, in the order typed, and a send typed meanwhile waits behind them", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { controller, socket, state } = setup();
  controller.start();
  controller.handleFrame({ type: "joined", room: "general", last_seq: 0, presence: [], reset: false });
  const sends = () => socket.sent.filter((f) => f.type === "send").map((f) => f.body);
  for (const body of ["one", "two", "three"]) {
    state.composer = body;
    controller.submit();
  }
  const ids = Object.fromEntries(socket.sent.map((f) => [f.body, f.client_id]));
  const refuse = (body, retryAfter) =>
    controller.handleFrame({ type: "error", code: "unavailable", message: "Redis is unreachable.", ref: ids[body], room: "general", retry_after_ms: retryAfter });
  // Redis went away: each is refused, with its own retry_after_ms.
  refuse("one", 1000);
  refuse("two", 3000);
  refuse("three", 500);
  state.composer = "four";
  controller.submit();
  assert.deepEqual(sends(), ["one", "two", "three"], "four waits behind the refused ones");
  t.mock.timers.tick(999);
  assert.deepEqual(sends(), ["one", "two", "three"]);
  t.mock.timers.tick(1); // the first refusal's delay: all of them, in the order typed
  assert.deepEqual(sends().slice(3), ["one", "two", "three", "four"]);
  assert.deepEqual(socket.sent.slice(-4).map((f) => f.client_id), [ids.one, ids.two, ids.three, socket.sent.at(-1).client_id]);
  t.mock.timers.tick(10_000); // no timer of a single message goes off later
  assert.equal(sends().length, 7);
});

test("a refused send keeps its re-send window; discarding it lets the sends behind it go", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { controller, socket, state, calls, clock } = setup({ limits: { dedup_seconds: 5 } });
  controller.start();
  controller.handleFrame({ type: "joined", room: "general", last_seq: 0, presence: [], reset: false });
  const sends = () => socket.sent.filter((f) => f.type === "send").map((f) => f.body);
  state.composer = "old";
  controller.submit();
  const refusal = { type: "error", code: "unavailable", message: "Redis is unreachable.", room: "general", retry_after_ms: 1000 };
  controller.handleFrame({ ...refusal, ref: socket.sent.at(-1).client_id });
  clock.advance(10_000); // past the server's memory of its client_id: a re-send could post it twice
  t.mock.timers.tick(1000);
  assert.deepEqual(sends(), ["old"]);
  const old = calls.filter(([n, item]) => n === "renderPending" && item.body === "old").at(-1)[1];
  assert.equal(old.code, "expired");

  state.composer = "first";
  controller.submit();
  const first = socket.sent.at(-1).client_id;
  controller.handleFrame({ ...refusal, ref: first });
  state.composer = "second";
  controller.submit();
  assert.deepEqual(sends(), ["old", "first"]);
  controller.discard(first);
  assert.deepEqual(sends(), ["old", "first", "second"]);
});
