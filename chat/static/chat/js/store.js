// Client-side state: per-room messages keyed by seq, sends awaiting an ack
// keyed by client_id, presence, typing and unread counts.
//
// Pure bookkeeping, no DOM and no network, so every rule about ordering and
// duplicates lives in one place:
// * a seq is stored once, whatever path it came by (HTTP page, join backlog,
//   live frame, ack);
// * `lastSeq` only advances over messages actually received (never over an
//   ack, which may overtake the message frames of lower seq), and is what a
//   rejoin sends as `since`;
// * a pending send leaves the pending set exactly once: when its ack or its
//   own message (same author, same client_id) arrives.

const PENDING_STORAGE_PREFIX = "kaiwa:pending:";
const LAST_READ_PREFIX = "kaiwa:lastread:";
// The server de-duplicates a client_id for 10 minutes; past that, re-sending
// a send we never saw acked could post it twice, so we ask the user instead.
export const DEDUP_WINDOW_MS = 9 * 60 * 1000;
const TYPING_SHOWN_MS = 6000;

export function newClientId() {
  if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
  // randomUUID needs a secure context; plain-http deployments on a LAN host are not one.
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class RoomState {
  constructor(slug, name = slug, isPrivate = false) {
    this.slug = slug;
    this.name = name;
    this.private = isPrivate;
    /** @type {Map<number, object>} */
    this.messages = new Map();
    this.lastSeq = 0; // highest seq received contiguously; `since` for a rejoin
    this.knownLastSeq = 0; // highest seq we know exists (room list, acks, frames)
    this.oldestSeq = null; // lowest seq loaded; `before` for the next older page
    this.hasMore = false;
    this.historyLoaded = false;
    this.joined = false;
    /** @type {Map<number, object>} user id -> user */
    this.presence = new Map();
    /** @type {Map<number, {user: object, until: number}>} */
    this.typing = new Map();
    this.unread = 0;
    this.error = null;
  }

  /**
   * Store messages; returns the ones not seen before, in seq order.
   * `live` is true for frames on the socket (they advance `lastSeq`).
   */
  addMessages(messages, { live = false } = {}) {
    const added = [];
    for (const msg of messages) {
      if (!Number.isInteger(msg.seq) || msg.seq < 1) continue;
      if (!this.messages.has(msg.seq)) {
        this.messages.set(msg.seq, msg);
        added.push(msg);
      }
      if (this.oldestSeq === null || msg.seq < this.oldestSeq) this.oldestSeq = msg.seq;
      if (msg.seq > this.knownLastSeq) this.knownLastSeq = msg.seq;
      if (live && msg.seq > this.lastSeq) this.lastSeq = msg.seq;
    }
    added.sort((a, b) => a.seq - b.seq);
    return added;
  }

  /** History over HTTP: the latest page sets the resume point for the join. */
  addHistoryPage(messages, hasMore, { latest }) {
    const wasEmpty = this.oldestSeq === null;
    const added = this.addMessages(messages);
    if (latest) {
      // Resume after the top of the contiguous run only: if the database
      // holds 50 but not yet 49 (the worker may persist out of order after a
      // crash), joining with since=50 would lose 49 for good.
      const seqs = messages.map((m) => m.seq).filter(Number.isInteger).sort((a, b) => a - b);
      let top = seqs.length ? seqs[0] : 0;
      for (const seq of seqs) if (seq === top + 1) top = seq;
      if (seqs.length && top > this.lastSeq) this.lastSeq = top;
      this.historyLoaded = true;
    }
    // `has_more` speaks for what lies below this page: it counts when the
    // page reaches down to the oldest message we hold.
    const lowest = messages.reduce((low, m) => (Number.isInteger(m.seq) ? Math.min(low, m.seq) : low), Infinity);
    if (!latest || wasEmpty || lowest <= this.oldestSeq) this.hasMore = hasMore;
    return added;
  }

  /** `joined` with `reset: true`: the backlog was too long, start over from HTTP. */
  reset() {
    this.messages.clear();
    this.oldestSeq = null;
    this.hasMore = false;
    this.historyLoaded = false;
    this.lastSeq = 0;
  }

  sortedSeqs() {
    return Array.from(this.messages.keys()).sort((a, b) => a - b);
  }

  setPresence(users) {
    this.presence.clear();
    for (const user of users) this.presence.set(user.id, user);
  }

  presenceEvent(event, user) {
    if (event === "join") this.presence.set(user.id, user);
    else if (event === "leave") {
      this.presence.delete(user.id);
      this.typing.delete(user.id);
    }
  }

  userTyping(user, now = Date.now()) {
    this.typing.set(user.id, { user, until: now + TYPING_SHOWN_MS });
  }

  stopTyping(userId) {
    return this.typing.delete(userId);
  }

  /** Users typing right now (expired entries are dropped). */
  typingUsers(now = Date.now()) {
    const users = [];
    for (const [id, entry] of this.typing) {
      if (entry.until <= now) this.typing.delete(id);
      else users.push(entry.user);
    }
    users.sort((a, b) => a.username.localeCompare(b.username));
    return users;
  }

  nextTypingExpiry() {
    let next = Infinity;
    for (const entry of this.typing.values()) next = Math.min(next, entry.until);
    return next;
  }
}

/** "alice is typing…", "alice and bob are typing…", "4 people are typing…" */
export function typingText(users) {
  const names = users.map((u) => u.username);
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]} are typing…`;
  return `${names.length} people are typing…`;
}

/**
 * Sends that have not been acked, in the order they were typed. Kept in
 * sessionStorage so a reload of the tab re-sends (same client_id: the server
 * acks the original, never posts twice) instead of losing what was typed.
 */
export class PendingSends {
  constructor(userId, storage = window.sessionStorage) {
    this.key = PENDING_STORAGE_PREFIX + userId;
    this.storage = storage;
    /** @type {Map<string, object>} */
    this.items = new Map();
    this.load();
  }

  load() {
    let saved = [];
    try {
      saved = JSON.parse(this.storage.getItem(this.key) || "[]");
    } catch (err) {
      saved = [];
    }
    if (!Array.isArray(saved)) return;
    for (const item of saved) {
      if (!item || typeof item.clientId !== "string" || typeof item.room !== "string") continue;
      if (typeof item.body !== "string") continue;
      const restored = {
        clientId: item.clientId,
        room: item.room,
        body: item.body,
        createdAt: Number(item.createdAt) || Date.now(),
        state: item.state === "failed" ? "failed" : "pending",
        error: typeof item.error === "string" ? item.error : null,
        code: typeof item.code === "string" ? item.code : null,
        retryAt: 0,
      };
      if (restored.state === "pending" && Date.now() - restored.createdAt > DEDUP_WINDOW_MS) {
        restored.state = "failed";
        restored.code = "expired";
        restored.error = "Not confirmed by the server before the page was closed. Retry to send it again.";
      }
      this.items.set(restored.clientId, restored);
    }
  }

  save() {
    try {
      this.storage.setItem(this.key, JSON.stringify(Array.from(this.items.values())));
    } catch (err) {
      // Storage full or disabled: pending sends still live in memory.
    }
  }

  add(room, body) {
    const item = {
      clientId: newClientId(),
      room,
      body,
      createdAt: Date.now(),
      state: "pending",
      error: null,
      code: null,
      retryAt: 0,
    };
    this.items.set(item.clientId, item);
    this.save();
    return item;
  }

  get(clientId) {
    return this.items.get(clientId);
  }

  /** The send is settled (acked, or its message arrived): returns the item if it was pending. */
  resolve(clientId) {
    const item = this.items.get(clientId);
    if (item === undefined) return undefined;
    this.items.delete(clientId);
    this.save();
    return item;
  }

  fail(clientId, code, message, retryAfterMs = 0) {
    const item = this.items.get(clientId);
    if (item === undefined) return undefined;
    item.state = "failed";
    item.code = code;
    item.error = message;
    item.retryAt = retryAfterMs > 0 ? Date.now() + retryAfterMs : 0;
    this.save();
    return item;
  }

  retry(clientId) {
    const item = this.items.get(clientId);
    if (item === undefined) return undefined;
    item.state = "pending";
    item.code = null;
    item.error = null;
    item.retryAt = 0;
    // A deliberate retry restarts the dedup window from now.
    item.createdAt = Date.now();
    this.save();
    return item;
  }

  forRoom(room, state = null) {
    return Array.from(this.items.values()).filter((i) => i.room === room && (state === null || i.state === state));
  }
}

/**
 * The highest seq this user has read in each room, shared by the user's tabs
 * (localStorage), so unread counts agree across tabs and reloads.
 */
export class ReadMarks {
  constructor(userId, storage = window.localStorage) {
    this.prefix = `${LAST_READ_PREFIX}${userId}:`;
    this.storage = storage;
  }

  get(room) {
    try {
      const raw = this.storage.getItem(this.prefix + room);
      if (raw === null) return null;
      const value = Number.parseInt(raw, 10);
      return Number.isInteger(value) && value >= 0 ? value : null;
    } catch (err) {
      return null;
    }
  }

  /** Record `seq` as read (never moves backwards); returns whether it changed. */
  mark(room, seq) {
    const current = this.get(room);
    if (current !== null && current >= seq) return false;
    try {
      this.storage.setItem(this.prefix + room, String(seq));
    } catch (err) {
      return false;
    }
    return true;
  }

  roomOfKey(key) {
    return key && key.startsWith(this.prefix) ? key.slice(this.prefix.length) : null;
  }
}
