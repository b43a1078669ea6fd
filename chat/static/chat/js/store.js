// Client-side state: per-room messages keyed by seq, sends awaiting an ack
// keyed by client_id, presence, typing and read marks.
//
// Pure bookkeeping, no DOM, no network and no globals at import time (it
// runs under `node --test`: tests/js/test-store.mjs), so every rule about
// ordering and duplicates lives in one place:
// * a seq is stored once, whatever path it came by (HTTP page, join backlog,
//   live frame, ack);
// * `lastSeq` only advances over messages actually received (never over an
//   ack, which may overtake the message frames of lower seq), and is what a
//   rejoin sends as `since`;
// * a pending send leaves the pending set exactly once: when its ack or its
//   own message (same author, same client_id) arrives;
// * a pending send is re-sent on its own only while the server still
//   de-duplicates its client_id (the page's `KAIWA_DEDUP_SECONDS`).

const PENDING_STORAGE_PREFIX = "kaiwa:pending:";
const LAST_READ_PREFIX = "kaiwa:lastread:";
// The server counts its window from when it accepted the send, which is after
// we created it; the margin covers the re-send's own trip and a busy server.
const RESEND_SAFETY = 0.9;
/** Refusals the server answers with retry_after_ms: the same send is accepted later. */
export const TRANSIENT_CODES = new Set(["rate_limited", "unavailable"]);

/** A failed send pending again, its refusal forgotten (its window is the caller's business). */
function markPending(item) {
  item.state = "pending";
  item.code = null;
  item.error = null;
  item.retryAt = 0;
}

/**
 * How long after it was typed a send may still be re-sent automatically:
 * a little less than the server's de-duplication window (KAIWA_DEDUP_SECONDS,
 * from the page). Past it, a re-send of a send whose ack was lost could post
 * it twice, so the user is asked instead.
 */
export function resendWindowMs(dedupSeconds) {
  if (!Number.isFinite(dedupSeconds) || dedupSeconds <= 0) return 0;
  return Math.floor(dedupSeconds * 1000 * RESEND_SAFETY);
}

export function newClientId(crypto = globalThis.crypto) {
  if (crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // randomUUID needs a secure context; plain-http deployments on a LAN host are not one.
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class RoomState {
  /**
   * @param {string} slug
   * @param {object} [options]
   * @param {string} [options.name]
   * @param {boolean} [options.isPrivate]
   * @param {number} [options.typingShownMs]  how long "x is typing" lasts after the last typing frame
   */
  constructor(slug, { name = slug, isPrivate = false, typingShownMs = 6000 } = {}) {
    this.slug = slug;
    this.name = name;
    this.private = isPrivate;
    this.typingShownMs = typingShownMs;
    /** @type {Map<number, object>} */
    this.messages = new Map();
    this.lastSeq = 0; // highest seq received contiguously; `since` for a rejoin
    this.knownLastSeq = 0; // highest seq we know exists (room list, acks, frames)
    this.oldestSeq = null; // lowest seq loaded; `before` for the next older page
    this.hasMore = false;
    this.historyLoaded = false;
    this.joined = false;
    this.joinSent = false;
    /** @type {Map<number, object>} user id -> user */
    this.presence = new Map();
    /** @type {Map<number, {user: object, until: number}>} */
    this.typing = new Map();
    this.unread = 0;
    this.error = null;
    // Seqs of edit and delete events (protocol.md 7.4): they move the resume point but are not unread messages.
    this.eventSeqs = new Set();
    // Seqs of messages that mention this user, counted apart in the unread badge.
    this.mentionSeqs = new Set();
  }

  /** Remember that a message mentions `userId` (for the separate unread count). */
  noteMentions(msg, userId) {
    if (Array.isArray(msg.mentions) && msg.mentions.includes(userId) && !msg.deleted) this.mentionSeqs.add(msg.seq);
    else this.mentionSeqs.delete(msg.seq);
  }

  /** Unread messages and unread mentions above the read mark `read`. */
  unreadCounts(read) {
    if (read === null) return { messages: 0, mentions: 0 };
    let events = 0;
    for (const seq of this.eventSeqs) if (seq > read && seq <= this.knownLastSeq) events += 1;
    let mentions = 0;
    for (const seq of this.mentionSeqs) if (seq > read) mentions += 1;
    return { messages: Math.max(0, this.knownLastSeq - read - events), mentions };
  }

  /**
   * An `edited` or `deleted` frame: the event takes its own seq (it moves `lastSeq`, the resume point),
   * and changes the message `target` if we hold it. Returns that message, or null.
   */
  applyEvent(frame) {
    if (!Number.isInteger(frame.seq) || frame.seq < 1) return null;
    this.eventSeqs.add(frame.seq);
    if (frame.seq > this.knownLastSeq) this.knownLastSeq = frame.seq;
    if (frame.seq > this.lastSeq) this.lastSeq = frame.seq;
    const msg = this.messages.get(frame.target);
    if (msg === undefined || msg.deleted) return null;
    if (frame.type === "edited") {
      msg.body = frame.body;
      msg.mentions = Array.isArray(frame.mentions) ? frame.mentions : [];
      msg.edited_ts = frame.ts;
    } else {
      msg.deleted = true;
      msg.body = "";
      msg.attachments = [];
      msg.mentions = [];
      this.mentionSeqs.delete(msg.seq);
    }
    return msg;
  }

  /** The newest message by `userId` that is not deleted, or null (ArrowUp edits it). */
  lastMessageBy(userId) {
    let found = null;
    for (const msg of this.messages.values()) {
      if (msg.user && msg.user.id === userId && !msg.deleted && (found === null || msg.seq > found.seq)) found = msg;
    }
    return found;
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

  /** History over HTTP (or the page's own first page): the latest page sets the resume point for the join. */
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
    this.eventSeqs.clear();
    this.mentionSeqs.clear();
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
    this.typing.set(user.id, { user, until: now + this.typingShownMs });
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

const EXPIRED_MESSAGE = "Not confirmed by the server in time to re-send it safely. Retry to send it again.";

/**
 * Sends that have not been acked, in the order they were typed. Kept in
 * sessionStorage so a reload of the tab re-sends (same client_id: the server
 * acks the original, never posts twice) instead of losing what was typed.
 */
export class PendingSends {
  /**
   * @param {string|number} userId
   * @param {object} options
   * @param {Storage} options.storage          sessionStorage in the page
   * @param {number} options.resendWindowMs    see resendWindowMs(KAIWA_DEDUP_SECONDS)
   * @param {() => number} [options.now]
   * @param {() => string} [options.newId]
   */
  constructor(userId, { storage, resendWindowMs: windowMs, now = Date.now, newId = newClientId }) {
    if (!Number.isFinite(windowMs)) throw new TypeError("PendingSends needs resendWindowMs (from the page's KAIWA_DEDUP_SECONDS)");
    this.key = PENDING_STORAGE_PREFIX + userId;
    this.storage = storage;
    this.windowMs = windowMs;
    this.now = now;
    this.newId = newId;
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
      this.items.set(item.clientId, {
        clientId: item.clientId,
        room: item.room,
        body: item.body,
        createdAt: Number(item.createdAt) || this.now(),
        state: item.state === "failed" ? "failed" : "pending",
        error: typeof item.error === "string" ? item.error : null,
        code: typeof item.code === "string" ? item.code : null,
        retryAt: 0,
        attachments: Array.isArray(item.attachments) ? item.attachments : [],
      });
    }
    this.expire();
  }

  save() {
    try {
      this.storage.setItem(this.key, JSON.stringify(Array.from(this.items.values())));
    } catch (err) {
      // Storage full or disabled: pending sends still live in memory.
    }
  }

  /** Mark pending sends older than the re-send window as failed; returns them. */
  expire() {
    const expired = [];
    const now = this.now();
    for (const item of this.items.values()) {
      if (item.state === "pending" && now - item.createdAt > this.windowMs) {
        item.state = "failed";
        item.code = "expired";
        item.error = EXPIRED_MESSAGE;
        expired.push(item);
      }
    }
    if (expired.length) this.save();
    return expired;
  }

  /**
   * What to (re-)send now for a room: its pending sends still inside the
   * re-send window, in the order typed. Older ones become failed first (the
   * caller shows them with Retry), so a long offline spell never re-posts.
   */
  dueForResend(room) {
    this.expire();
    return this.forRoom(room, "pending");
  }

  /**
   * The room's sends the server refused for now (rate_limited, unavailable)
   * are pending again; returns them. They keep their re-send window: this is
   * not a deliberate retry, and an `unavailable` append may have run, so a
   * re-send is only safe while the server remembers its client_id.
   */
  requeue(room) {
    const requeued = [];
    for (const item of this.items.values()) {
      if (item.room === room && item.state === "failed" && TRANSIENT_CODES.has(item.code)) {
        markPending(item);
        requeued.push(item);
      }
    }
    if (requeued.length) this.save();
    return requeued;
  }

  /**
   * Whether a send of the same room typed before ``item`` waits to be sent
   * again (refused for now): ``item`` then waits too, and they go out together
   * in the order typed, so a later message is never accepted before an earlier one.
   */
  waitsBehind(item) {
    for (const other of this.items.values()) {
      if (other === item) return false;
      if (other.room === item.room && other.state === "failed" && TRANSIENT_CODES.has(other.code)) return true;
    }
    return false;
  }

  /** ``attachments``: the uploaded attachment objects (protocol 7.3) the message carries. */
  add(room, body, attachments = [], { replyTo = null } = {}) {
    const item = {
      clientId: this.newId(),
      room,
      body,
      attachments,
      replyTo,
      createdAt: this.now(),
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
    item.retryAt = retryAfterMs > 0 ? this.now() + retryAfterMs : 0;
    this.save();
    return item;
  }

  /** The user's Retry: pending again, and a deliberate retry restarts the window from now. */
  retry(clientId) {
    const item = this.items.get(clientId);
    if (item === undefined) return undefined;
    markPending(item);
    item.createdAt = this.now();
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
  constructor(userId, storage) {
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
