// store.js: ordering, duplicates and the pending-send window, without a browser.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { PendingSends, ReadMarks, RoomState, resendWindowMs, typingText } from "../../chat/static/chat/js/store.js";
import { FakeClock, MemoryStorage } from "./fakes.mjs";

const alice = { id: 1, username: "alice" };
const msg = (seq, extra = {}) => ({ room: "r", seq, ts: "2026-11-21T12:00:00.000Z", user: alice, body: `m${seq}`, ...extra });

let ids = 0;
function pendingSends({ storage = new MemoryStorage(), dedupSeconds = 600, clock = new FakeClock() } = {}) {
  return new PendingSends(1, { storage, resendWindowMs: resendWindowMs(dedupSeconds), now: clock.now, newId: () => `id-${++ids}` });
}

describe("RoomState", () => {
  test("edited and deleted frames take their own seq and change the message they name (protocol 7.4)", () => {
    const room = new RoomState("r");
    room.addMessages([msg(1, { mentions: [] }), msg(2)], { live: true });
    const edited = room.applyEvent({ type: "edited", seq: 3, target: 1, body: "new", mentions: [1], ts: "t3" });
    assert.equal(edited.body, "new");
    assert.equal(edited.edited_ts, "t3");
    assert.equal(room.lastSeq, 3);
    room.noteMentions(edited, 1);
    assert.equal(room.applyEvent({ type: "deleted", seq: 4, target: 1, ts: "t4" }).deleted, true);
    assert.equal(room.messages.get(1).body, "");
    // Nothing changes a deleted message again; an unknown target only moves the resume point.
    assert.equal(room.applyEvent({ type: "edited", seq: 5, target: 1, body: "back", ts: "t5" }), null);
    assert.equal(room.applyEvent({ type: "deleted", seq: 6, target: 99, ts: "t6" }), null);
    assert.equal(room.lastSeq, 6);
    assert.equal(room.messages.get(1).body, "");
    assert.equal(room.lastMessageBy(alice.id).seq, 2);
  });

  test("unread counts leave out edit and delete events, and count the messages that mention you apart", () => {
    const room = new RoomState("r");
    room.addMessages([msg(1), msg(2, { mentions: [7] })], { live: true });
    room.noteMentions(room.messages.get(2), 7);
    room.applyEvent({ type: "edited", seq: 3, target: 1, body: "x", mentions: [], ts: "t" });
    assert.deepEqual(room.unreadCounts(0), { messages: 2, mentions: 1 });
    assert.deepEqual(room.unreadCounts(2), { messages: 0, mentions: 0 });
    assert.deepEqual(room.unreadCounts(null), { messages: 0, mentions: 0 });
  });

  test("a seq is stored once whatever path it came by, and added messages come back in seq order", () => {
    const room = new RoomState("r");
    assert.deepEqual(room.addMessages([msg(3), msg(1)]).map((m) => m.seq), [1, 3]);
    assert.deepEqual(room.addMessages([msg(3), msg(2)], { live: true }).map((m) => m.seq), [2]);
    assert.deepEqual(room.sortedSeqs(), [1, 2, 3]);
    assert.deepEqual(room.addMessages([{ seq: 0 }, { seq: "4" }, { seq: 2.5 }]), []);
  });

  test("only live frames move lastSeq (the rejoin's since); anything moves knownLastSeq", () => {
    const room = new RoomState("r");
    room.addMessages([msg(7)]); // an ack or an older page
    assert.equal(room.lastSeq, 0);
    assert.equal(room.knownLastSeq, 7);
    room.addMessages([msg(5)], { live: true });
    assert.equal(room.lastSeq, 5);
    assert.equal(room.knownLastSeq, 7);
  });

  test("the latest page resumes after the top of its contiguous run, so a seq the worker has not stored yet comes in the backlog", () => {
    const room = new RoomState("r");
    room.addHistoryPage([msg(10), msg(11), msg(13)], true, { latest: true });
    assert.equal(room.lastSeq, 11);
    assert.equal(room.oldestSeq, 10);
    assert.equal(room.hasMore, true);
    assert.equal(room.historyLoaded, true);
  });

  test("has_more of an older page counts only when that page reaches below what is held", () => {
    const room = new RoomState("r");
    room.addHistoryPage([msg(51), msg(52)], true, { latest: true });
    room.addHistoryPage([msg(1), msg(2)], false, { latest: false });
    assert.equal(room.hasMore, false);
    assert.equal(room.oldestSeq, 1);
    // A later "latest" page that starts above what we hold says nothing about below.
    room.addHistoryPage([msg(60)], true, { latest: true });
    assert.equal(room.hasMore, false);
  });

  test("an empty first page still counts as loaded (the join may go out with since=0)", () => {
    const room = new RoomState("r");
    room.addHistoryPage([], false, { latest: true });
    assert.equal(room.historyLoaded, true);
    assert.equal(room.lastSeq, 0);
  });

  test("reset forgets the messages and the history edge", () => {
    const room = new RoomState("r");
    room.addHistoryPage([msg(1), msg(2)], true, { latest: true });
    room.reset();
    assert.deepEqual(room.sortedSeqs(), []);
    assert.deepEqual([room.oldestSeq, room.hasMore, room.historyLoaded, room.lastSeq], [null, false, false, 0]);
  });

  test("typing lasts typingShownMs after the last frame, and a leave ends it", () => {
    const room = new RoomState("r", { typingShownMs: 1000 });
    const bob = { id: 2, username: "bob" };
    room.userTyping(bob, 0);
    room.userTyping(alice, 0);
    assert.deepEqual(room.typingUsers(999).map((u) => u.username), ["alice", "bob"]);
    assert.equal(room.nextTypingExpiry(), 1000);
    room.presenceEvent("leave", bob);
    assert.deepEqual(room.typingUsers(999), [alice]);
    assert.deepEqual(room.typingUsers(1000), []);
  });

  test("typing text names up to three people", () => {
    const u = (username) => ({ username });
    assert.equal(typingText([]), "");
    assert.equal(typingText([u("a")]), "a is typing…");
    assert.equal(typingText([u("a"), u("b")]), "a and b are typing…");
    assert.equal(typingText([u("a"), u("b"), u("c")]), "a, b and c are typing…");
    assert.equal(typingText([u("a"), u("b"), u("c"), u("d")]), "4 people are typing…");
  });
});

describe("PendingSends", () => {
  test("the re-send window is a little less than the server's dedup window, and none without one", () => {
    assert.equal(resendWindowMs(600), 540_000);
    assert.equal(resendWindowMs(30), 27_000);
    assert.equal(resendWindowMs(0), 0);
    assert.equal(resendWindowMs(Number.NaN), 0);
  });

  test("without the page's window it refuses to start rather than guess", () => {
    assert.throws(() => new PendingSends(1, { storage: new MemoryStorage() }), /resendWindowMs/);
  });

  test("sends survive a reload through storage, in the order typed, and settle exactly once", () => {
    const storage = new MemoryStorage();
    const first = pendingSends({ storage });
    const a = first.add("r", "one");
    const b = first.add("r", "two");
    first.add("other", "three");
    const reloaded = pendingSends({ storage });
    assert.deepEqual(reloaded.forRoom("r").map((i) => i.body), ["one", "two"]);
    assert.equal(reloaded.resolve(a.clientId).body, "one");
    assert.equal(reloaded.resolve(a.clientId), undefined);
    assert.deepEqual(pendingSends({ storage }).forRoom("r").map((i) => i.clientId), [b.clientId]);
  });

  test("a send older than the page's window is not re-sent after a reload: it is failed, for the user to retry", () => {
    const clock = new FakeClock();
    const storage = new MemoryStorage();
    pendingSends({ storage, clock }).add("r", "typed before the server went away");
    clock.advance(10_000);
    // The operator lowered KAIWA_DEDUP_SECONDS to 5: 10 s is too old to re-send blindly.
    const short = pendingSends({ storage, clock, dedupSeconds: 5 });
    assert.deepEqual(short.dueForResend("r"), []);
    const [item] = short.forRoom("r");
    assert.equal(item.state, "failed");
    assert.equal(item.code, "expired");
    assert.match(item.error, /Retry/);
  });

  test("the same send is still re-sent with the default window", () => {
    const clock = new FakeClock();
    const storage = new MemoryStorage();
    pendingSends({ storage, clock }).add("r", "typed before the server went away");
    clock.advance(10_000);
    assert.deepEqual(pendingSends({ storage, clock }).dueForResend("r").map((i) => i.body), ["typed before the server went away"]);
  });

  test("a send that waits in an open tab past the window expires too (a long offline spell never re-posts)", () => {
    const clock = new FakeClock();
    const pending = pendingSends({ clock, dedupSeconds: 10 });
    const item = pending.add("r", "hello");
    clock.advance(8_999);
    assert.deepEqual(pending.dueForResend("r"), [item]);
    clock.advance(2);
    assert.deepEqual(pending.dueForResend("r"), []);
    assert.deepEqual(pending.expire(), []); // expired once, reported once
    assert.equal(pending.get(item.clientId).state, "failed");
  });

  test("retry restarts the window from now and fail records when it may be retried", () => {
    const clock = new FakeClock();
    const pending = pendingSends({ clock, dedupSeconds: 10 });
    const item = pending.add("r", "hello");
    pending.fail(item.clientId, "rate_limited", "Slow down.", 1500);
    assert.equal(pending.get(item.clientId).retryAt, clock.now() + 1500);
    clock.advance(60_000);
    pending.retry(item.clientId);
    assert.deepEqual(pending.dueForResend("r").map((i) => i.state), ["pending"]);
  });

  test("garbage in storage is ignored, not a crash", () => {
    for (const raw of ["not json", "{}", '[null, {"clientId": 1}, {"clientId": "x", "room": "r"}]']) {
      const pending = pendingSends({ storage: new MemoryStorage({ "kaiwa:pending:1": raw }) });
      assert.deepEqual(pending.forRoom("r"), []);
    }
  });
});

describe("ReadMarks", () => {
  test("a read mark never moves backwards and is per user", () => {
    const storage = new MemoryStorage();
    const marks = new ReadMarks(1, storage);
    assert.equal(marks.get("r"), null);
    assert.equal(marks.mark("r", 5), true);
    assert.equal(marks.mark("r", 3), false);
    assert.equal(marks.get("r"), 5);
    assert.equal(new ReadMarks(2, storage).get("r"), null);
    assert.equal(marks.roomOfKey("kaiwa:lastread:1:r"), "r");
    assert.equal(marks.roomOfKey("kaiwa:lastread:2:r"), null);
  });
});
