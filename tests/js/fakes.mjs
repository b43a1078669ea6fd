// Test doubles shared by the JS unit tests: a Storage, a clock with timers,
// and a WebSocket, so the page's modules run under `node --test` without a DOM.

/** The kaiwa-config JSON chat/views.py embeds, with the default settings. */
export const PAGE_CONFIG = Object.freeze({
  room: { slug: "general", name: "General", private: false },
  user: { id: 1, username: "alice", moderator: false, can_manage: false },
  members: [{ id: 2, username: "bob" }],
  urls: { ws: "/ws", messages: "/api/rooms/general/messages", login: "/accounts/login/", dms: "/api/dms", rooms: "/rooms/", messages_template: "/api/rooms/{slug}/messages", members_template: "/api/rooms/{slug}/members", members_page_template: "/rooms/{slug}/members/" },
  history: { has_more: false, page_size: 50 },
  limits: {
    max_body_chars: 4000,
    max_frame_bytes: 65536,
    max_rooms_per_connection: 100,
    dedup_seconds: 600,
    typing_interval_ms: 1000,
  },
});

/** An in-memory Web Storage (sessionStorage/localStorage). */
export class MemoryStorage {
  constructor(entries = {}) {
    this.map = new Map(Object.entries(entries));
  }

  getItem(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }

  setItem(key, value) {
    this.map.set(key, String(value));
  }

  removeItem(key) {
    this.map.delete(key);
  }
}

/** A manual clock: `now()`, and setTimeout/clearTimeout that fire only on `advance()`. */
export class FakeClock {
  constructor(start = 1_000_000) {
    this.time = start;
    this.nextId = 1;
    this.timers = new Map();
    this.now = () => this.time;
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { fn, at: this.time + Math.max(0, ms), ms });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }

  /** The delays (ms) of the timers waiting now, soonest first. */
  pending() {
    return Array.from(this.timers.values(), (t) => t.at - this.time).sort((a, b) => a - b);
  }

  /** Move time forward, firing due timers in order (timers they set fire too if due). */
  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) if (t.at <= end && (next === null || t.at < next[1].at)) next = [id, t];
      if (next === null) break;
      this.timers.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
    }
    this.time = end;
  }
}

/** A WebSocket whose server side the test plays; every instance is recorded in `FakeWebSocket.made`. */
export class FakeWebSocket extends EventTarget {
  static made = [];

  constructor(url) {
    super();
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.made.push(this);
  }

  send(data) {
    this.sent.push(JSON.parse(data));
  }

  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  serverOpens() {
    this.readyState = 1;
    this.dispatchEvent(new Event("open"));
  }

  serverSends(frame) {
    const event = new Event("message");
    event.data = typeof frame === "string" ? frame : JSON.stringify(frame);
    this.dispatchEvent(event);
  }

  serverCloses(code, reason = "") {
    this.readyState = 3;
    const event = new Event("close");
    Object.assign(event, { code, reason, wasClean: code !== 1006 });
    this.dispatchEvent(event);
  }
}
