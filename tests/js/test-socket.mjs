// socket.js: reconnect backoff, close codes and keep-alive, with a fake WebSocket and clock.
import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import {
  IMMEDIATE_MIN_GAP_MS,
  PING_INTERVAL_MS,
  PONG_TIMEOUT_MS,
  Socket,
  backoffDelay,
  loginUrl,
  socketUrl,
} from "../../chat/static/chat/js/socket.js";
import { FakeClock, FakeWebSocket } from "./fakes.mjs";

function harness({ random = () => 0.5, online = true } = {}) {
  const clock = new FakeClock();
  const events = { statuses: [], frames: [], opens: 0, closes: [], loggedOut: 0 };
  const socket = new Socket({
    url: "ws://chat.test/ws",
    onFrame: (frame) => events.frames.push(frame),
    onOpen: () => events.opens++,
    onStatus: (status, detail) => events.statuses.push({ status, ...detail }),
    onClose: (info) => events.closes.push(info.code),
    onUnauthenticated: () => events.loggedOut++,
    WebSocket: FakeWebSocket,
    timers: clock,
    now: clock.now,
    random,
    isOnline: () => online,
    warn: () => {},
  });
  const last = () => FakeWebSocket.made[FakeWebSocket.made.length - 1];
  return { clock, events, socket, last };
}

beforeEach(() => {
  FakeWebSocket.made.length = 0;
});

describe("backoffDelay", () => {
  test("doubles from 0.5 s to a 30 s cap, with jitter between half and all of the step", () => {
    const low = [0, 1, 2, 3, 4, 5, 6, 7, 20].map((a) => backoffDelay(a, () => 0));
    const high = [0, 1, 2, 3, 4, 5, 6, 7, 20].map((a) => backoffDelay(a, () => 1));
    assert.deepEqual(high, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    assert.deepEqual(low, high.map((d) => d / 2));
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(3);
      assert.ok(d >= 2000 && d <= 4000, `${d} outside [2000, 4000]`);
    }
  });
});

describe("Socket", () => {
  test("failed attempts back off exponentially, say offline after four, and an open resets the count", () => {
    const { clock, events, socket, last } = harness({ random: () => 1 });
    socket.start();
    const delays = [];
    for (let i = 0; i < 6; i++) {
      last().serverCloses(1006);
      delays.push(clock.pending()[0]);
      clock.advance(clock.pending()[0]);
    }
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000]);
    assert.equal(FakeWebSocket.made.length, 7);
    assert.deepEqual(
      events.statuses.map((s) => s.status),
      ["reconnecting", "reconnecting", "reconnecting", "reconnecting", "offline", "offline"],
    );
    last().serverOpens();
    assert.equal(events.opens, 1);
    assert.equal(events.statuses.at(-1).status, "connected");
    last().serverCloses(1006);
    assert.deepEqual(clock.pending(), [500]);
  });

  test("the browser being offline shows offline at once, and the jitter comes from the injected random", () => {
    const { clock, events, socket, last } = harness({ random: () => 0, online: false });
    socket.start();
    last().serverCloses(1006);
    assert.equal(events.statuses.at(-1).status, "offline");
    assert.deepEqual(clock.pending(), [250]);
  });

  test("reconnectNow skips the rest of the wait and restarts the backoff", () => {
    const { clock, socket, last } = harness({ random: () => 1 });
    socket.start();
    for (let i = 0; i < 4; i++) {
      last().serverCloses(1006);
      clock.advance(clock.pending()[0]);
    }
    last().serverCloses(1006);
    assert.deepEqual(clock.pending(), [8000]);
    socket.reconnectNow();
    assert.deepEqual(clock.pending(), []); // the waiting retry is cancelled
    assert.equal(FakeWebSocket.made.length, 6);
    socket.reconnectNow(); // already connecting: no second socket
    assert.equal(FakeWebSocket.made.length, 6);
    last().serverCloses(1006);
    assert.deepEqual(clock.pending(), [500]);
  });

  test("1012 and 1013 reconnect at once, but at most once per IMMEDIATE_MIN_GAP_MS, then back off", () => {
    const { clock, socket, last } = harness({ random: () => 1 });
    socket.start();
    last().serverOpens();
    last().serverCloses(1012);
    assert.equal(FakeWebSocket.made.length, 2); // at once, no timer
    assert.deepEqual(clock.pending(), []);
    last().serverOpens();
    last().serverCloses(1013);
    assert.equal(FakeWebSocket.made.length, 2); // too soon: back off instead
    assert.equal(clock.pending().length, 1);
    clock.advance(IMMEDIATE_MIN_GAP_MS + 1);
    last().serverOpens();
    last().serverCloses(1013);
    assert.equal(FakeWebSocket.made.length, 4);
  });

  test("4401 goes to the login page once and never retries", () => {
    const { clock, events, socket, last } = harness();
    socket.start();
    last().serverOpens();
    last().serverCloses(4401, "unauthenticated");
    assert.equal(events.loggedOut, 1);
    assert.equal(events.statuses.at(-1).status, "unauthenticated");
    assert.deepEqual(clock.pending(), []);
    socket.reconnectNow();
    assert.equal(FakeWebSocket.made.length, 1);
  });

  test("a ping every 25 s with no answer in 10 s drops the connection and reconnects", () => {
    const { clock, events, socket, last } = harness();
    socket.start();
    const ws = last();
    ws.serverOpens();
    clock.advance(PING_INTERVAL_MS);
    assert.deepEqual(ws.sent, [{ type: "ping" }]);
    ws.serverSends({ type: "pong" }); // an answer re-arms the keep-alive
    clock.advance(PONG_TIMEOUT_MS + 1);
    assert.equal(ws.closedWith, null);
    clock.advance(PING_INTERVAL_MS);
    clock.advance(PONG_TIMEOUT_MS);
    assert.deepEqual(ws.closedWith, { code: 4000, reason: "keep-alive timeout" });
    assert.deepEqual(events.closes, [1006]);
    assert.equal(events.statuses.at(-1).status, "reconnecting");
  });

  test("frames are parsed; non-JSON and frames without a type are dropped; send only while open", () => {
    const { events, socket, last } = harness();
    socket.start();
    assert.equal(socket.send({ type: "ping" }), false);
    last().serverOpens();
    last().serverSends("not json");
    last().serverSends([1, 2]);
    last().serverSends({ no: "type" });
    last().serverSends({ type: "message", seq: 1 });
    assert.deepEqual(events.frames, [{ type: "message", seq: 1 }]);
    assert.equal(socket.send({ type: "join", room: "r" }), true);
    assert.deepEqual(last().sent, [{ type: "join", room: "r" }]);
  });

  test("goOffline drops an open socket at once and says offline", () => {
    const { events, socket, last } = harness();
    socket.start();
    last().serverOpens();
    socket.goOffline();
    assert.equal(last().closedWith.code, 4000);
    assert.equal(events.statuses.at(-1).status, "offline");
  });

  test("URLs: wss on https, and the login page comes back to where the user was", () => {
    assert.equal(socketUrl("/ws", { protocol: "https:", host: "chat.example" }), "wss://chat.example/ws");
    assert.equal(socketUrl("/ws", { protocol: "http:", host: "127.0.0.1:8000" }), "ws://127.0.0.1:8000/ws");
    const here = { pathname: "/rooms/a b/", search: "?x=1", hash: "" };
    assert.equal(loginUrl("/accounts/login/", here), "/accounts/login/?next=%2Frooms%2Fa%20b%2F%3Fx%3D1");
    assert.equal(loginUrl("/login?sso=1", here), "/login?sso=1&next=%2Frooms%2Fa%20b%2F%3Fx%3D1");
  });
});
