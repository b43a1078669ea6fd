// The room page's logic: server frames in, the send pipeline out, unread
// counts and read marks (history paging is history.js's). State lives in store.js (RoomState, PendingSends,
// ReadMarks); the DOM is the view's (view.js); the network is the injected
// socket (socket.js) and `fetchJson`. Every server limit comes from the
// page's config (config.js), never from a constant here.

import { History } from "./history.js";
import { RoomInfo } from "./roominfo.js";
import { RoomState, TRANSIENT_CODES, newClientId, typingText } from "./store.js";

// Our own pace for "I am typing" frames; never faster than the server accepts them.
const TYPING_THROTTLE_MS = 3000;
const ENCODER = new TextEncoder();

export class RoomController {
  /**
   * @param {object} deps
   * @param {object} deps.config      parseConfig()'s result
   * @param {import("./view.js").RoomView} deps.view
   * @param {import("./store.js").PendingSends} deps.pending
   * @param {import("./store.js").ReadMarks} deps.marks
   * @param {(url: string) => Promise<object>} deps.fetchJson
   * @param {() => boolean} deps.visible      the tab is visible
   */
  constructor({ config, view, pending, marks, fetchJson, visible }) {
    this.config = config;
    this.view = view;
    this.pending = pending;
    this.marks = marks;
    this.fetchJson = fetchJson;
    this.visible = visible;
    this.socket = null; // set by attach()
    this.me = { id: config.userId, username: config.username };
    this.typingThrottleMs = Math.max(TYPING_THROTTLE_MS, config.typingIntervalMs);
    // Shown a little longer than a typist's pace, so it does not flicker between frames.
    this.typingShownMs = 2 * this.typingThrottleMs;
    this.rooms = new Map();
    this.active = this.newRoom(config.slug, config.roomName, config.roomPrivate);
    this.rooms.set(config.slug, this.active);
    this.history = new History({
      room: this.active,
      view,
      fetchJson,
      messagesUrl: config.messagesUrl,
      pageSize: config.pageSize,
      settle: (messages) => this.settleFromHistory(messages),
    });
    // Members, who "@" offers and the user's rights, per room (roominfo.js): the page's own room from its config.
    this.info = new RoomInfo({
      fetchJson,
      url: (slug) => config.membersTemplate.replace("{slug}", encodeURIComponent(slug)),
      slug: config.slug,
      seed: { mentionable: config.members, moderator: config.canModerate, can_manage: config.canManage },
    });
    this.lastTypingSentAt = 0;
    // Per room: one timer for its sends the server asked us to re-send later (rate_limited, unavailable).
    this.resendTimers = new Map();
    // Sends kept back behind an earlier refused one of their room (transmit), by client_id.
    this.held = new Set();
    // One timer for the joins the server asked us to retry later (error unavailable with retry_after_ms).
    this.joinRetryTimer = undefined;
    // Direct conversations (roomnav.js): joined with presence even in the background.
    this.dmSlugs = new Set();
    // The composer's context (protocol.md 7.4): null, {kind: "reply", seq} or {kind: "edit", seq}.
    this.context = null;
    // Edits and deletions sent and not yet answered: client_id -> what they were, to explain a refusal.
    this.changes = new Map();
  }

  newRoom(slug, name, isPrivate = false) {
    return new RoomState(slug, { name, isPrivate, typingShownMs: this.typingShownMs });
  }

  attach(socket) {
    this.socket = socket;
  }

  /** Everything the page already holds: the sidebar's rooms, the first page, the unacked sends. */
  start() {
    for (const info of this.view.readRooms()) {
      let room = this.rooms.get(info.slug);
      if (room === undefined) {
        // One socket joins every room shown, up to the server's per-connection limit.
        if (this.rooms.size >= this.config.maxRooms) continue;
        room = this.newRoom(info.slug, info.name);
        // Other rooms only count what arrives after what the page reported.
        room.lastSeq = info.lastSeq;
        this.rooms.set(info.slug, room);
      }
      room.knownLastSeq = Math.max(room.knownLastSeq, info.lastSeq);
      if (room !== this.active && this.marks.get(room.slug) === null) {
        // First visit from this browser: nothing before now counts as unread.
        this.marks.mark(room.slug, room.knownLastSeq);
      }
    }
    // Read before this visit marks anything read: where the user left off.
    this.view.leftOff = this.marks.get(this.active.slug);
    const page = this.view.readFirstPage(this.active.slug);
    this.active.addHistoryPage(page, this.config.hasMore, { latest: true });
    for (const msg of page) {
      this.active.noteMentions(msg, this.me.id);
      this.view.refreshMessage(msg);
    }
    this.settleFromHistory(page);
    this.view.markLeftOff();
    for (const item of this.pending.forRoom(this.active.slug)) this.view.renderPending(item, this.pendingText());
    this.history.renderEdge();
    this.view.scrollToBottom();
    for (const room of this.rooms.values()) if (room !== this.active) this.renderUnread(room);
    this.view.renderTitle();
  }

  loadOlder() {
    return this.history.loadOlder();
  }

  /** A message in history that is one of our pending sends settles it (it was accepted before a reload). */
  settleFromHistory(messages) {
    for (const msg of messages) {
      if (msg.client_id && msg.user && msg.user.id === this.me.id && this.pending.resolve(msg.client_id)) {
        this.view.removePending(msg.client_id);
      }
    }
  }

  // ---------------------------------------------------------------- socket

  onSocketClosed() {
    for (const room of this.rooms.values()) {
      room.joined = false;
      room.joinSent = false;
    }
  }

  joinAll() {
    const rooms = [this.active, ...Array.from(this.rooms.values()).filter((r) => r !== this.active)];
    for (const room of rooms) {
      if (room.joined || room.joinSent) continue;
      // The active room joins only once its history is in, so `since` is right.
      if (room === this.active && !room.historyLoaded) continue;
      const frame = { type: "join", room: room.slug };
      if (room.lastSeq > 0 || room.historyLoaded) frame.since = room.lastSeq;
      // The epoch our since counts in (protocol 7.1): another one gets reset: true, not a wrong backlog.
      if (frame.since !== undefined && room.epoch) frame.epoch = room.epoch;
      // Background rooms only count unread messages: the user is not "here" (protocol 7.5).
      if (room !== this.active && !this.dmSlugs.has(room.slug)) frame.presence = false;
      if (this.socket.send(frame)) room.joinSent = true;
    }
  }

  handleFrame(frame) {
    const room = typeof frame.room === "string" ? this.rooms.get(frame.room) : undefined;
    switch (frame.type) {
      case "joined":
        if (room) this.onJoined(room, frame);
        break;
      case "left":
        if (room) room.joined = false;
        break;
      case "message":
        if (room) this.onMessage(room, frame);
        break;
      case "edited":
      case "deleted":
        if (room) this.onChange(room, frame);
        break;
      case "ack":
        if (room) this.onAck(room, frame);
        break;
      case "typing":
        if (room && frame.user && frame.user.id !== this.me.id) {
          room.userTyping(frame.user);
          if (room === this.active) this.renderTyping();
        }
        break;
      case "presence":
        if (room && frame.user) {
          room.presenceEvent(frame.event, frame.user);
          if (room === this.active) {
            this.renderPresence();
            this.renderTyping();
          }
        }
        break;
      case "error":
        this.onError(frame);
        break;
      default:
        // pong, and frame types a newer server may add.
        break;
    }
  }

  onJoined(room, frame) {
    room.joined = true;
    room.joinSent = false;
    // The "could not join" shown for this room is over (an error of the history's own stays).
    if (room.error !== null && room === this.active) this.view.hideHistoryError();
    room.error = null;
    if (Array.isArray(frame.presence)) room.setPresence(frame.presence);
    const lastSeq = Number(frame.last_seq) || 0;
    if (frame.reset) {
      // The gap was longer than the server replays: start over from HTTP.
      room.reset();
      room.lastSeq = lastSeq;
      if (room === this.active) {
        this.view.clearMessages();
        this.history.reloadLatest(lastSeq).then(() => {
          // The socket may have reconnected meanwhile: join now that `since` is known.
          if (this.socket.isOpen()) this.joinAll();
        });
      }
    }
    // Also the unsolicited joined (reset: true) the server sends when the room's epoch changes under us.
    if (typeof frame.epoch === "string" && frame.epoch) room.epoch = frame.epoch;
    room.knownLastSeq = Math.max(room.knownLastSeq, lastSeq);
    if (room === this.active) {
      this.renderPresence();
      this.renderTyping();
    } else {
      this.renderUnread(room);
    }
    this.resendPending(room);
  }

  /**
   * Whatever was typed while disconnected (or never acked) goes out now with
   * its original client_id, so the server acks the original instead of
   * posting twice -- but only while the server still remembers that
   * client_id (KAIWA_DEDUP_SECONDS, from the page): older ones are shown as
   * failed, for the user to decide.
   */
  resendPending(room) {
    this.clearResendTimer(room.slug);
    // Refused sends go out again with the others, in the order typed (see onSendRefused).
    const requeued = new Set(this.pending.requeue(room.slug));
    for (const item of this.pending.expire()) if (item.room === this.active.slug) this.view.renderPending(item, this.pendingText());
    for (const item of this.pending.dueForResend(room.slug)) {
      if (requeued.has(item) && item.room === this.active.slug) this.view.renderPending(item, this.pendingText());
      this.transmit(item);
    }
  }

  onMessage(room, frame) {
    if (!Number.isInteger(frame.seq)) return;
    const own = frame.user && frame.user.id === this.me.id;
    if (own && frame.client_id && this.pending.resolve(frame.client_id)) this.view.removePending(frame.client_id);
    if (frame.user) room.stopTyping(frame.user.id);
    room.noteMentions(frame, this.me.id);
    const known = room.messages.get(frame.seq);
    if (known !== undefined && !known.deleted) {
      // Drawn from our ack first: the frame brings what only the server knows (the resolved mentions).
      known.mentions = Array.isArray(frame.mentions) ? frame.mentions : [];
      known.reply_to = frame.reply_to ?? known.reply_to ?? null;
      if (room === this.active) this.view.refreshMessage(known);
    }
    const added = room.addMessages([frame], { live: true });
    if (room !== this.active) {
      if (own && this.marks.get(room.slug) === frame.seq - 1) this.marks.mark(room.slug, frame.seq);
      this.renderUnread(room);
      return;
    }
    if (added.length === 0) return;
    const atBottom = this.view.isAtBottom();
    for (const msg of added) this.view.insertMessage(msg);
    this.renderTyping();
    if (atBottom || own) this.view.scrollToBottom();
    // Scrolled up, or looking at another tab: mark where the new messages start.
    if (!own && (!atBottom || !this.visible())) this.view.noteUnseen(frame.seq, !atBottom);
    if (!own) this.view.announce(`${frame.user ? frame.user.username : "Someone"}: ${frame.body}`);
    this.view.renderTitle();
  }

  /** `edited` / `deleted`: an event with its own seq that changes the message `target` (protocol.md 7.4). */
  onChange(room, frame) {
    const msg = room.applyEvent(frame);
    if (msg && frame.type === "edited") room.noteMentions(msg, this.me.id);
    if (room !== this.active) {
      this.renderUnread(room);
      return;
    }
    if (msg) this.view.refreshMessage(msg);
    if (frame.type === "deleted" && this.context && this.context.seq === frame.target) this.cancelContext();
  }

  onAck(room, frame) {
    if (this.changes.delete(frame.client_id)) return; // an edit or deletion: its own frame shows it
    const item = this.pending.resolve(frame.client_id);
    if (item === undefined) return; // the message frame settled it first
    if (room !== this.active) return;
    this.view.removePending(item.clientId);
    // The ack can overtake message frames of lower seq: store it for display,
    // but it does not move `lastSeq` (the frame itself will still arrive).
    // A re-sent message acked with an old seq (accepted before a reload, long
    // scrolled out of the loaded page) shows up when older pages load, not
    // as a lone message that would also move the `before` cursor past a gap.
    if (room.oldestSeq !== null && frame.seq < room.oldestSeq && room.hasMore) return;
    const msg = {
      room: room.slug,
      seq: frame.seq,
      ts: frame.ts,
      user: this.me,
      body: item.body,
      client_id: item.clientId,
      reply_to: item.replyTo || null,
      mentions: [],
    };
    for (const m of room.addMessages([msg])) this.view.insertMessage(m);
    this.view.scrollToBottom();
  }

  onError(frame) {
    const ref = frame.ref;
    const change = typeof ref === "string" ? this.changes.get(ref) : undefined;
    if (change !== undefined) {
      this.changes.delete(ref);
      this.view.showComposerError(`Could not ${change} the message: ${frame.message}`);
      return;
    }
    const item = typeof ref === "string" ? this.pending.get(ref) : undefined;
    if (item !== undefined) {
      this.onSendRefused(item, frame);
      return;
    }
    if (ref === "join" && typeof frame.room === "string") {
      const room = this.rooms.get(frame.room);
      if (room) {
        room.joinSent = false;
        room.error = frame.message;
        let text = `Could not join this room: ${frame.message}`;
        if (frame.code === "unavailable") {
          // The database or Redis could not answer now (a restart, a storm): the server says when to ask again.
          const delay = Math.max(Number(frame.retry_after_ms) || 0, 250);
          text += ` Retrying in ${(delay / 1000).toFixed(1)} s.`;
          this.retryJoinsIn(delay);
        }
        if (room === this.active) this.view.showHistoryError(text);
      }
      return;
    }
    if (ref === "send" && frame.room === this.active.slug) {
      this.view.showComposerError(frame.message);
      return;
    }
    console.warn("kaiwa: server refused a request", frame);
  }

  onSendRefused(item, frame) {
    const retryAfter = Number(frame.retry_after_ms) || 0;
    const transient = TRANSIENT_CODES.has(frame.code);
    let text = frame.message || "The server refused this message.";
    if (transient && retryAfter > 0) text += ` Retrying in ${(retryAfter / 1000).toFixed(1)} s.`;
    this.pending.fail(item.clientId, frame.code, text, retryAfter);
    if (transient) {
      // The server told us when it will take it: try again then by ourselves,
      // with every other send of the room refused meanwhile or typed since, in
      // the order typed. One timer per message let a later message, whose own
      // retry came after Redis was back, be accepted before earlier ones.
      this.resendRoomIn(item.room, Math.max(retryAfter, 250));
    } else if (frame.code === "not_joined") {
      // Our join has not been answered yet (or was lost): it is safe to try again.
      const room = this.rooms.get(item.room);
      if (room) room.joined = false;
      this.joinAll();
    }
    this.view.renderPending(this.pending.get(item.clientId), this.pendingText());
  }

  /** joinAll() once, after `delay` ms: every room refused meanwhile goes out again in that one pass. */
  retryJoinsIn(delay) {
    if (this.joinRetryTimer !== undefined) return;
    this.joinRetryTimer = setTimeout(() => {
      this.joinRetryTimer = undefined;
      if (this.socket && this.socket.isOpen()) this.joinAll();
    }, delay);
  }

  /** resendPending(room) once, after `delay` ms (a timer already set for the room stands). */
  resendRoomIn(slug, delay) {
    if (this.resendTimers.has(slug)) return;
    this.resendTimers.set(
      slug,
      setTimeout(() => {
        this.resendTimers.delete(slug);
        const room = this.rooms.get(slug);
        // Not joined: the next joined re-sends them.
        if (room && room.joined) this.resendPending(room);
      }, delay),
    );
  }

  clearResendTimer(slug) {
    const timer = this.resendTimers.get(slug);
    if (timer !== undefined) clearTimeout(timer);
    this.resendTimers.delete(slug);
  }

  // --------------------------------------------------------------- sending

  /** The body limit (KAIWA_MAX_BODY_CHARS, from the page), checked before anything is sent. */
  validateLength() {
    const limit = this.config.maxBodyChars;
    const over = this.view.composerText().length - limit;
    if (over > 0) this.view.showComposerError(`${over} character${over === 1 ? "" : "s"} over the limit of ${limit}.`);
    else this.view.hideComposerError();
    return over <= 0;
  }

  onInput() {
    this.validateLength();
    this.maybeSendTyping();
  }

  submit() {
    const body = this.view.composerText();
    const attachments = this.view.readyAttachments(this.active.slug) || [];
    if (this.view.uploadsBusy(this.active.slug)) {
      this.view.showComposerError("Wait for the uploads to finish, or cancel them.");
      return;
    }
    if (body.trim() === "" && attachments.length === 0) return;
    if (!this.validateLength()) return;
    const context = this.context;
    if (context && context.kind === "edit") {
      if (body.trim() === "") return;
      const original = this.active.messages.get(context.seq);
      this.cancelContext();
      this.view.clearComposer();
      if (original && original.body === body) return;
      this.sendChange("edit", { type: "edit", room: this.active.slug, target: context.seq, body });
      return;
    }
    const replyTo = context && context.kind === "reply" ? context.seq : null;
    this.cancelContext();
    const item = this.pending.add(this.active.slug, body, attachments, { replyTo });
    if (attachments.length) this.view.attachmentsSent(attachments);
    this.view.clearComposer();
    this.lastTypingSentAt = 0;
    this.view.leftOff = null;
    this.view.renderPending(item, this.pendingText());
    this.view.scrollToBottom();
    this.transmit(item);
  }

  /** Hand a pending send to the socket if the room is joined; otherwise it goes on the next `joined`. */
  transmit(item) {
    const room = this.rooms.get(item.room);
    if (!room || !room.joined) return;
    // An earlier send of the room waits for its re-send: this one goes out after it, with it.
    if (this.pending.waitsBehind(item)) {
      this.held.add(item.clientId);
      return;
    }
    this.held.delete(item.clientId);
    const frame = { type: "send", room: item.room, body: item.body, client_id: item.clientId };
    if (item.attachments && item.attachments.length) frame.attachments = item.attachments.map((a) => a.id);
    if (item.replyTo) frame.reply_to = item.replyTo;
    // A frame over KAIWA_MAX_FRAME_BYTES closes the socket (1009); re-sending it
    // after every reconnect would loop, so it fails here with the reason.
    if (ENCODER.encode(JSON.stringify(frame)).length > this.config.maxFrameBytes) {
      this.pending.fail(item.clientId, "too_large", "This message is larger than the server accepts in one frame: shorten it.");
      this.view.renderPending(this.pending.get(item.clientId), this.pendingText());
      return;
    }
    this.socket.send(frame);
  }

  /** The user's Retry: this send restarts its window, and the room's waiting sends go with it, in order. */
  retry(clientId) {
    const item = this.pending.retry(clientId);
    if (item === undefined) return;
    this.view.renderPending(item, this.pendingText());
    const room = this.rooms.get(item.room);
    if (room && room.joined) this.resendPending(room);
  }

  discard(clientId) {
    const item = this.pending.resolve(clientId);
    this.view.removePending(clientId);
    this.held.delete(clientId);
    // Sends that waited behind this one go now (unless another refused one still holds them).
    for (const next of this.pending.forRoom(item ? item.room : null, "pending")) {
      if (this.held.has(next.clientId)) this.transmit(next);
    }
  }

  // ------------------------------------- edits, deletions, replies (7.4)

  /** An edit or deletion goes out once, now; its `edited`/`deleted` frame shows it, a refusal is explained. */
  sendChange(verb, frame) {
    if (!this.active.joined) {
      this.view.showComposerError(`Not connected: could not ${verb} the message. Try again when back online.`);
      return;
    }
    const clientId = newClientId();
    this.changes.set(clientId, verb);
    this.socket.send({ ...frame, client_id: clientId });
  }

  deleteMessage(seq) {
    this.sendChange("delete", { type: "delete", room: this.active.slug, target: seq });
  }

  edit(seq) {
    const msg = this.active.messages.get(seq);
    if (!msg || msg.deleted || !msg.user || msg.user.id !== this.me.id) return false;
    this.context = { kind: "edit", seq };
    this.view.setContext("Editing your message (Esc to cancel)");
    this.view.setComposerText(msg.body);
    return true;
  }

  /** ArrowUp in an empty composer: edit your newest message. */
  editLast() {
    const msg = this.active.lastMessageBy(this.me.id);
    return msg ? this.edit(msg.seq) : false;
  }

  reply(seq) {
    const msg = this.active.messages.get(seq);
    if (!msg || msg.deleted) return;
    this.context = { kind: "reply", seq };
    const name = msg.user ? msg.user.username : "?";
    this.view.setContext(`Replying to ${name}: ${msg.body.length > 80 ? `${msg.body.slice(0, 80)}…` : msg.body}`);
    this.view.focusComposer();
  }

  cancelContext() {
    const wasEdit = this.context && this.context.kind === "edit";
    this.context = null;
    this.view.setContext(null);
    if (wasEdit) this.view.clearComposer();
  }

  messageOf(seq) {
    return this.active.messages.get(seq) || null;
  }

  /** Who `@` offers: the open room's mentionable people (roominfo.js), who is online, and whoever wrote here. */
  mentionCandidates() {
    const users = new Map();
    const info = this.info.get(this.active.slug);
    for (const user of info ? info.mentionable : []) users.set(user.id, user);
    for (const user of this.active.presence.values()) users.set(user.id, user);
    for (const msg of this.active.messages.values()) if (msg.user && msg.user.id) users.set(msg.user.id, msg.user);
    users.delete(this.me.id);
    return Array.from(users.values()).sort((a, b) => a.username.localeCompare(b.username));
  }

  maybeSendTyping() {
    if (this.view.composerText().trim() === "" || !this.active.joined) return;
    const now = Date.now();
    if (now - this.lastTypingSentAt < this.typingThrottleMs) return;
    this.lastTypingSentAt = now;
    this.socket.send({ type: "typing", room: this.active.slug });
  }

  pendingText() {
    return this.socket && this.socket.status === "connected" ? "Sending…" : "Not connected: will send when back online";
  }

  // ------------------------------------------------------------- rendering

  renderTyping() {
    this.view.renderTyping(this.active, typingText(this.active.typingUsers()));
  }

  renderPresence() {
    this.view.renderPresence(Array.from(this.active.presence.values()));
  }

  renderStatus(status, detail) {
    this.view.renderStatus(status, detail, this.pendingText());
  }

  unreadCounts(room) {
    if (room === this.active) return { messages: 0, mentions: 0 };
    return room.unreadCounts(this.marks.get(room.slug));
  }

  unreadCount(room) {
    return this.unreadCounts(room).messages;
  }

  renderUnread(room) {
    const counts = this.unreadCounts(room);
    room.unread = counts.messages;
    this.view.renderUnread(room.slug, room.unread, counts.mentions);
    let others = 0;
    for (const r of this.rooms.values()) others += r === this.active ? 0 : r.unread;
    this.view.setOthersUnread(others);
  }

  /** A room the user can newly see (room_added, or a conversation just opened): count and join it. */
  addRoom({ slug, name, lastSeq }) {
    if (this.rooms.has(slug) || this.rooms.size >= this.config.maxRooms) return;
    const room = this.newRoom(slug, name);
    room.lastSeq = lastSeq;
    room.knownLastSeq = lastSeq;
    // Everything in a room the user was just given is unread.
    if (this.marks.get(slug) === null) this.marks.mark(slug, 0);
    this.rooms.set(slug, room);
    this.renderUnread(room);
    if (this.socket && this.socket.isOpen()) this.joinAll();
  }

  /** A room the user can no longer see (room_removed; the server ended the join first). */
  removeRoom(slug) {
    const room = this.rooms.get(slug);
    if (!room) return;
    if (room === this.active) {
      room.joined = false;
      this.view.showHistoryError("You no longer have access to this room.");
      return;
    }
    this.rooms.delete(slug);
    let others = 0;
    for (const r of this.rooms.values()) others += r === this.active ? 0 : r.unread;
    this.view.setOthersUnread(others);
  }

  /** Another tab moved a read mark. */
  onStorage(key) {
    const slug = this.marks.roomOfKey(key);
    const room = slug === null ? undefined : this.rooms.get(slug);
    if (room) this.renderUnread(room);
  }

  /** The user sees the newest messages of the active room. */
  markActiveRead() {
    if (!this.visible()) return;
    const seq = this.active.knownLastSeq;
    if (seq > 0) this.marks.mark(this.active.slug, seq);
  }
}
