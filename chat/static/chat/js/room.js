// The room page: sidebar of the user's rooms with unread counts, the message
// view of one room, presence and typing, all over one WebSocket.
//
// Loaded as <script type="module" src=".../room.js"> from the room template;
// it mounts on the room section (data-room, data-live="true"), replaces the
// server-rendered history (the no-JavaScript view) with the live client, and
// reads its configuration from data attributes (see readConfig).

import { Socket, socketUrl, loginUrl } from "./socket.js";
import { RoomState, PendingSends, ReadMarks, typingText } from "./store.js";
import { el, icon, messageElement, updateGrouping, renderPresence } from "./render.js";

const PAGE_SIZE = 50;
const TYPING_THROTTLE_MS = 3000;
const NEAR_BOTTOM_PX = 48;
const LOAD_OLDER_WITHIN_PX = 240;
const MAX_JOINED_ROOMS = 100;

function readConfig(root) {
  const data = root.dataset;
  const fromPath = window.location.pathname.match(/\/rooms\/([^/]+)\/?$/);
  const slug = data.room || (fromPath ? decodeURIComponent(fromPath[1]) : "");
  const userId = Number.parseInt(data.userId || "", 10);
  let wsUrl = socketUrl();
  if (data.wsPath) {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    wsUrl = `${scheme}//${window.location.host}${data.wsPath}`;
  }
  return {
    slug,
    roomName: data.roomName || slug,
    roomPrivate: data.roomPrivate === "true" || Boolean(root.querySelector(".room-header .badge")),
    userId: Number.isInteger(userId) ? userId : null,
    username: data.username || "",
    loginUrl: data.loginUrl || "/accounts/login/",
    roomsUrl: data.roomsUrl || "/api/rooms/",
    messagesUrl: data.historyUrl || `/api/rooms/${encodeURIComponent(slug)}/messages`,
    roomUrlTemplate: data.roomUrlTemplate || "/rooms/__slug__/",
    maxBodyChars: Number.parseInt(data.maxBodyChars || "", 10) || 4000,
    wsUrl,
    // Links the server put in the header (e.g. "Members") stay available.
    tools: Array.from(root.querySelectorAll(".room-tools a")),
  };
}

/** The database has not caught up with the live stream yet (the worker lags): try again shortly. */
class CatchingUp extends Error {}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

class RoomPage {
  constructor(root, config) {
    this.root = root;
    this.config = config;
    this.me = { id: config.userId, username: config.username };
    this.rooms = new Map();
    this.active = new RoomState(config.slug, config.roomName, config.roomPrivate);
    this.rooms.set(config.slug, this.active);
    this.pending = new PendingSends(config.userId ?? "anon");
    this.marks = new ReadMarks(config.userId ?? "anon");
    this.loadingOlder = false;
    this.stick = true; // the user is reading the newest messages
    this.leftOff = null; // last visit's read mark: the "New messages" line goes after it
    this.unseen = 0; // messages that arrived while the user was scrolled up
    this.lastTypingSentAt = 0;
    this.typingTimer = null;
    this.retryTimers = new Map();
    this.roomListLoaded = false;

    this.buildLayout();
    this.socket = new Socket({
      url: config.wsUrl,
      loginUrl: config.loginUrl,
      onFrame: (frame) => this.handleFrame(frame),
      onOpen: () => this.joinAll(),
      onStatus: (status, detail) => this.renderStatus(status, detail),
      onClose: () => {
        for (const room of this.rooms.values()) {
          room.joined = false;
          room.joinSent = false;
        }
      },
    });
  }

  // ---------------------------------------------------------------- layout

  buildLayout() {
    const { slug } = this.config;
    const roomLabel = this.active.name;

    this.roomList = el("ul", { cls: "rooms__list" });
    this.roomsPanel = el(
      "nav",
      { cls: "rooms", attrs: { id: "kaiwa-rooms", "aria-label": "Your rooms" } },
      el("h2", { cls: "rooms__title", text: "Rooms" }),
      this.roomList,
    );

    this.roomsToggle = el(
      "button",
      {
        cls: "btn btn--icon chat__rooms-toggle",
        attrs: { type: "button", "aria-controls": "kaiwa-rooms", "aria-expanded": "false" },
      },
      icon("menu"),
      el("span", { text: "Rooms" }),
    );
    this.roomsBadge = el("span", { cls: "badge badge--toggle", attrs: { hidden: true } });
    this.roomsToggle.append(this.roomsBadge);

    this.statusText = el("span", { cls: "conn__text", text: "Connecting…" });
    this.statusRetry = el("button", {
      cls: "btn btn--small btn--quiet conn__retry",
      attrs: { type: "button", hidden: true },
      text: "Retry now",
    });
    this.status = el(
      "div",
      { cls: "conn", attrs: { role: "status", "data-state": "connecting" } },
      el("span", { cls: "conn__dot", attrs: { "aria-hidden": "true" } }),
      this.statusText,
      this.statusRetry,
    );

    this.peopleCount = el("span", { cls: "chat__people-count", text: "0" });
    this.peopleToggle = el(
      "button",
      {
        cls: "btn btn--icon chat__people-toggle",
        attrs: { type: "button", "aria-controls": "kaiwa-people", "aria-expanded": "false" },
      },
      el("span", { cls: "sr-only", text: "People online: " }),
      icon("people"),
      this.peopleCount,
    );

    const title = el(
      "div",
      { cls: "chat__title" },
      el("h1", { cls: "chat__name", attrs: { id: "room-title" } }, this.active.private ? icon("lock", "chat__hash") : el("span", { cls: "chat__hash", attrs: { "aria-hidden": "true" }, text: "#" }), roomLabel),
    );
    const tools = el("div", { cls: "chat__tools" }, ...this.config.tools.map((a) => {
      a.className = "btn btn--small btn--quiet";
      return a;
    }));
    const header = el("header", { cls: "chat__header" }, this.roomsToggle, title, this.status, tools, this.peopleToggle);

    this.olderButton = el("button", {
      cls: "btn btn--small btn--quiet chat__older",
      attrs: { type: "button", hidden: true },
      text: "Load older messages",
    });
    this.beginning = el("p", {
      cls: "chat__beginning",
      attrs: { hidden: true },
      text: `This is the beginning of #${roomLabel}.`,
    });
    this.historyError = el("p", { cls: "chat__error", attrs: { role: "alert", hidden: true } });
    this.list = el("ol", { cls: "chat__list", attrs: { "aria-label": `Messages in #${roomLabel}` } });
    this.scroller = el(
      "div",
      { cls: "chat__scroll", attrs: { tabindex: "0", "aria-label": `Message history of #${roomLabel}` } },
      el("div", { cls: "chat__top" }, this.beginning, this.olderButton, this.historyError),
      this.list,
    );
    this.jumpButton = el("button", {
      cls: "btn chat__jump",
      attrs: { type: "button", hidden: true },
      text: "New messages ↓",
    });
    this.typing = el("div", { cls: "chat__typing" });

    this.textarea = el("textarea", {
      cls: "chat-composer__input",
      attrs: {
        id: "kaiwa-composer",
        name: "body",
        rows: "1",
        placeholder: `Message #${roomLabel}`,
        autocomplete: "off",
        "aria-describedby": "kaiwa-composer-hint",
      },
    });
    this.composerError = el("p", { cls: "chat-composer__error", attrs: { role: "alert", hidden: true } });
    this.sendButton = el("button", { cls: "btn btn--primary chat-composer__send", attrs: { type: "submit" }, text: "Send" });
    this.form = el(
      "form",
      { cls: "chat-composer", attrs: { "aria-label": "Send a message" } },
      el("label", { cls: "sr-only", attrs: { for: "kaiwa-composer" }, text: `Message #${roomLabel}` }),
      el("div", { cls: "chat-composer__row" }, this.textarea, this.sendButton),
      el("p", {
        cls: "chat-composer__hint",
        attrs: { id: "kaiwa-composer-hint" },
        text: "Enter to send · Shift+Enter for a new line",
      }),
      this.composerError,
    );

    const main = el(
      "section",
      { cls: "chat", attrs: { "aria-label": `#${roomLabel}` } },
      header,
      el("div", { cls: "chat__body" }, this.scroller, this.jumpButton),
      this.typing,
      this.form,
    );

    this.presenceList = el("ul", { cls: "presence__list" });
    this.presenceTitle = el("h2", { cls: "presence__title", text: "Online" });
    this.peoplePanel = el(
      "aside",
      { cls: "presence", attrs: { id: "kaiwa-people", "aria-label": "People in this room" } },
      this.presenceTitle,
      this.presenceList,
    );
    // New messages are announced here, one at a time, without stealing focus;
    // the list itself is not live so loading history does not read it all out.
    this.announcer = el("div", { cls: "sr-only", attrs: { "aria-live": "polite", "aria-atomic": "true" } });
    this.scrim = el("div", { cls: "kaiwa__scrim", attrs: { hidden: true } });

    this.root.replaceChildren(this.roomsPanel, main, this.peoplePanel, this.scrim, this.announcer);
    // The server-rendered view's classes style a different layout.
    this.root.className = "kaiwa";
    this.renderRoomList([{ slug, name: this.active.name, private: this.active.private, last_seq: 0 }]);
    this.bindEvents();
  }

  bindEvents() {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.textarea.addEventListener("keydown", (event) => {
      // isComposing: Enter that confirms an IME candidate (Japanese, Chinese) must not send.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.altKey && !event.ctrlKey) {
        event.preventDefault();
        this.submit();
      } else if (event.key === "Escape") {
        this.setPanel(null);
      }
    });
    this.textarea.addEventListener("input", () => {
      this.validateLength();
      this.maybeSendTyping();
    });
    this.scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
    this.olderButton.addEventListener("click", () => this.loadOlder());
    this.jumpButton.addEventListener("click", () => {
      this.scrollToBottom();
      this.textarea.focus();
    });
    this.statusRetry.addEventListener("click", () => this.socket.reconnectNow());
    this.roomsToggle.addEventListener("click", () => this.togglePanel("rooms"));
    this.peopleToggle.addEventListener("click", () => this.togglePanel("people"));
    this.scrim.addEventListener("click", () => this.setPanel(null));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.root.dataset.panel) this.setPanel(null);
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.isAtBottom()) this.clearUnseen();
      this.renderTitle();
    });
    // The composer growing, the phone keyboard opening or a rotation shrinks
    // the history: whoever was reading the newest messages keeps them in view.
    if (typeof ResizeObserver === "function") {
      new ResizeObserver(() => {
        if (this.stick) this.scroller.scrollTop = this.scroller.scrollHeight;
      }).observe(this.scroller);
    }
    window.addEventListener("storage", (event) => {
      const slug = this.marks.roomOfKey(event.key);
      if (slug !== null) this.renderUnread(slug);
    });
  }

  togglePanel(name) {
    this.setPanel(this.root.dataset.panel === name ? null : name);
  }

  /** Phones show the rooms or people panel over the chat; one at a time. */
  setPanel(name) {
    const was = this.root.dataset.panel;
    if (name) this.root.dataset.panel = name;
    else delete this.root.dataset.panel;
    this.roomsToggle.setAttribute("aria-expanded", String(name === "rooms"));
    this.peopleToggle.setAttribute("aria-expanded", String(name === "people"));
    this.scrim.hidden = !name;
    if (name === "rooms") {
      const current = this.roomList.querySelector("a[aria-current]") || this.roomList.querySelector("a");
      if (current) current.focus();
    } else if (!name && was) {
      // Closing a panel returns focus to the button that opened it.
      const panel = was === "rooms" ? this.roomsPanel : this.peoplePanel;
      if (panel.contains(document.activeElement)) (was === "rooms" ? this.roomsToggle : this.peopleToggle).focus();
    }
  }

  // ----------------------------------------------------------------- start

  async start() {
    for (const item of this.pending.forRoom(this.config.slug)) this.renderPending(item);
    // Read before this visit marks anything read: where the user left off.
    this.leftOff = this.marks.get(this.active.slug);
    await Promise.all([this.loadRoomList(), this.loadLatestWithRetry()]);
    this.socket.start();
  }

  async fetchJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (response.status === 401 || response.status === 403) {
      window.location.assign(loginUrl(this.config.loginUrl));
      throw new HttpError(response.status, "Your session has ended. Log in again.");
    }
    if (!response.ok) {
      let detail = "";
      try {
        const body = await response.json();
        detail = body.error || body.detail || body.message || "";
      } catch (err) {
        detail = "";
      }
      throw new HttpError(response.status, detail || `The server answered ${response.status}.`);
    }
    return response.json();
  }

  async loadRoomList() {
    let data;
    try {
      data = await this.fetchJson(this.config.roomsUrl);
    } catch (err) {
      console.warn("kaiwa: could not load the room list", err);
      return;
    }
    const rooms = Array.isArray(data.rooms) ? data.rooms : [];
    for (const info of rooms) {
      if (typeof info.slug !== "string") continue;
      let room = this.rooms.get(info.slug);
      if (room === undefined) {
        if (this.rooms.size >= MAX_JOINED_ROOMS) continue;
        room = new RoomState(info.slug, info.name || info.slug, Boolean(info.private));
        // Other rooms only count what arrives after what the list reported.
        room.lastSeq = Number(info.last_seq) || 0;
        this.rooms.set(info.slug, room);
      } else {
        room.name = info.name || room.name;
      }
      room.knownLastSeq = Math.max(room.knownLastSeq, Number(info.last_seq) || 0);
      if (room !== this.active && this.marks.get(room.slug) === null) {
        // First visit from this browser: nothing before now counts as unread.
        this.marks.mark(room.slug, room.knownLastSeq);
      }
    }
    this.roomListLoaded = true;
    this.renderRoomList(rooms.length ? rooms : [{ slug: this.active.slug, name: this.active.name }]);
    if (this.socket.isOpen()) this.joinAll();
  }

  /**
   * Load the latest page of history, retrying with backoff. With `boundary`
   * (a `joined.last_seq` after a reset) the page must reach that seq: the
   * live stream starts right after it, so until the worker has persisted it
   * there would be a hole.
   */
  async loadLatestWithRetry(boundary = null) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        await this.loadLatest(boundary);
        this.historyError.hidden = true;
        // After a reset the socket may have reconnected meanwhile: join now that `since` is known.
        if (this.socket && this.socket.isOpen()) this.joinAll();
        return;
      } catch (err) {
        if (err instanceof HttpError && err.status === 404) {
          this.showHistoryError("This room does not exist, or you are not a member of it.");
          return;
        }
        if (err instanceof CatchingUp) this.showHistoryError("Catching up with the history…");
        else this.showHistoryError(`Could not load the history: ${err.message} Retrying…`);
        await new Promise((resolve) => setTimeout(resolve, Math.min(30000, 250 * 2 ** attempt)));
      }
    }
  }

  showHistoryError(text) {
    this.historyError.textContent = text;
    this.historyError.hidden = false;
  }

  async loadLatest(boundary = null) {
    const before = boundary !== null && boundary > 0 ? `&before=${boundary + 1}` : "";
    const data = await this.fetchJson(`${this.config.messagesUrl}?limit=${PAGE_SIZE}${before}`);
    const messages = Array.isArray(data.messages) ? data.messages : [];
    const added = this.active.addHistoryPage(messages, Boolean(data.has_more), { latest: true });
    this.settleFromHistory(messages);
    for (const msg of added) this.insertMessage(msg);
    this.renderHistoryEdge();
    this.scrollToBottom();
    if (before && !this.active.messages.has(boundary)) throw new CatchingUp(`seq ${boundary} is not stored yet`);
  }

  async loadOlder() {
    const room = this.active;
    if (this.loadingOlder || !room.hasMore || room.oldestSeq === null) return;
    this.loadingOlder = true;
    this.olderButton.disabled = true;
    this.olderButton.textContent = "Loading…";
    try {
      const data = await this.fetchJson(`${this.config.messagesUrl}?before=${room.oldestSeq}&limit=${PAGE_SIZE}`);
      const messages = Array.isArray(data.messages) ? data.messages : [];
      // Keep the message under the user's eyes where it is.
      const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
      const added = room.addHistoryPage(messages, Boolean(data.has_more), { latest: false });
      for (const msg of added) this.insertMessage(msg);
      this.scroller.scrollTop = this.scroller.scrollHeight - fromBottom;
      this.historyError.hidden = true;
    } catch (err) {
      this.showHistoryError(`Could not load older messages: ${err.message}`);
    } finally {
      this.loadingOlder = false;
      this.olderButton.disabled = false;
      this.olderButton.textContent = "Load older messages";
      this.renderHistoryEdge();
    }
  }

  renderHistoryEdge() {
    const room = this.active;
    this.olderButton.hidden = !room.hasMore;
    this.beginning.hidden = room.hasMore || !room.historyLoaded;
  }

  /** A message in history that is one of our pending sends settles it (it was accepted before a reload). */
  settleFromHistory(messages) {
    for (const msg of messages) {
      if (msg.client_id && msg.user && msg.user.id === this.me.id && this.pending.resolve(msg.client_id)) {
        this.removePendingElement(msg.client_id);
      }
    }
  }

  // ---------------------------------------------------------------- socket

  joinAll() {
    const rooms = [this.active, ...Array.from(this.rooms.values()).filter((r) => r !== this.active)];
    for (const room of rooms) {
      if (room.joined || room.joinSent) continue;
      // The active room joins only once its history is in, so `since` is right.
      if (room === this.active && !room.historyLoaded) continue;
      const frame = { type: "join", room: room.slug };
      if (room.lastSeq > 0 || room.historyLoaded) frame.since = room.lastSeq;
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
            this.renderPresenceList();
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
    room.error = null;
    if (Array.isArray(frame.presence)) room.setPresence(frame.presence);
    const lastSeq = Number(frame.last_seq) || 0;
    if (frame.reset) {
      // The gap was longer than the server replays: start over from HTTP.
      room.reset();
      room.lastSeq = lastSeq;
      if (room === this.active) {
        for (const node of Array.from(this.list.querySelectorAll("li:not(.msg--pending):not(.msg--failed)"))) {
          node.remove();
        }
        this.loadLatestWithRetry(lastSeq);
      }
    }
    room.knownLastSeq = Math.max(room.knownLastSeq, lastSeq);
    if (room === this.active) {
      this.renderPresenceList();
      this.renderTyping();
    } else {
      this.renderUnread(room.slug);
    }
    // Whatever was typed while disconnected (or never acked) goes out now,
    // with its original client_id, so the server can never post it twice.
    for (const item of this.pending.forRoom(room.slug, "pending")) this.transmit(item);
  }

  onMessage(room, frame) {
    if (!Number.isInteger(frame.seq)) return;
    const own = frame.user && frame.user.id === this.me.id;
    if (own && frame.client_id && this.pending.resolve(frame.client_id)) this.removePendingElement(frame.client_id);
    if (frame.user) room.stopTyping(frame.user.id);
    const added = room.addMessages([frame], { live: true });
    if (room !== this.active) {
      if (own && this.marks.get(room.slug) === frame.seq - 1) this.marks.mark(room.slug, frame.seq);
      this.renderUnread(room.slug);
      return;
    }
    if (added.length === 0) return;
    const atBottom = this.isAtBottom();
    for (const msg of added) this.insertMessage(msg);
    this.renderTyping();
    if (atBottom || own) this.scrollToBottom();
    // Scrolled up, or looking at another tab: mark where the new messages start.
    if (!own && (!atBottom || document.visibilityState !== "visible")) this.noteUnseen(frame.seq, !atBottom);
    if (!own) this.announce(`${frame.user ? frame.user.username : "Someone"}: ${frame.body}`);
    this.renderTitle();
  }

  onAck(room, frame) {
    const item = this.pending.resolve(frame.client_id);
    if (item === undefined) return; // the message frame settled it first
    this.clearRetryTimer(item.clientId);
    const msg = { room: room.slug, seq: frame.seq, ts: frame.ts, user: this.me, body: item.body, client_id: item.clientId };
    if (room !== this.active) return;
    this.removePendingElement(item.clientId);
    // The ack can overtake message frames of lower seq: store it for display,
    // but it does not move `lastSeq` (the frame itself will still arrive).
    // A re-sent message acked with an old seq (accepted before a reload, long
    // scrolled out of the loaded page) shows up when older pages load, not
    // as a lone message that would also move the `before` cursor past a gap.
    if (room.oldestSeq !== null && frame.seq < room.oldestSeq && room.hasMore) return;
    const added = room.addMessages([msg]);
    for (const m of added) this.insertMessage(m);
    this.scrollToBottom();
  }

  onError(frame) {
    const ref = frame.ref;
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
        if (room === this.active) this.showHistoryError(`Could not join this room: ${frame.message}`);
      }
      return;
    }
    if (ref === "send" && frame.room === this.active.slug) {
      this.showComposerError(frame.message);
      return;
    }
    console.warn("kaiwa: server refused a request", frame);
  }

  onSendRefused(item, frame) {
    const retryAfter = Number(frame.retry_after_ms) || 0;
    const transient = frame.code === "rate_limited" || frame.code === "unavailable";
    let text = frame.message || "The server refused this message.";
    if (transient && retryAfter > 0) text += ` Retrying in ${(retryAfter / 1000).toFixed(1)} s.`;
    this.pending.fail(item.clientId, frame.code, text, retryAfter);
    if (transient) {
      // The server told us when it will take it: try again then by ourselves.
      this.clearRetryTimer(item.clientId);
      this.retryTimers.set(
        item.clientId,
        setTimeout(() => this.retry(item.clientId), Math.max(retryAfter, 250)),
      );
    } else if (frame.code === "not_joined") {
      // Our join has not been answered yet (or was lost): it is safe to try again.
      const room = this.rooms.get(item.room);
      if (room) room.joined = false;
      this.joinAll();
    }
    this.renderPending(this.pending.get(item.clientId));
  }

  clearRetryTimer(clientId) {
    const timer = this.retryTimers.get(clientId);
    if (timer !== undefined) clearTimeout(timer);
    this.retryTimers.delete(clientId);
  }

  // --------------------------------------------------------------- sending

  validateLength() {
    const length = this.textarea.value.length;
    const over = length - this.config.maxBodyChars;
    if (over > 0) {
      this.showComposerError(`${over} character${over === 1 ? "" : "s"} over the limit of ${this.config.maxBodyChars}.`);
    } else {
      this.composerError.hidden = true;
    }
    return over <= 0;
  }

  showComposerError(text) {
    this.composerError.textContent = text;
    this.composerError.hidden = false;
  }

  submit() {
    const body = this.textarea.value;
    if (body.trim() === "") return;
    if (!this.validateLength()) return;
    const item = this.pending.add(this.config.slug, body);
    this.textarea.value = "";
    this.composerError.hidden = true;
    this.lastTypingSentAt = 0;
    this.leftOff = null;
    this.renderPending(item);
    this.scrollToBottom();
    this.transmit(item);
  }

  /** Hand a pending send to the socket if the room is joined; otherwise it goes on the next `joined`. */
  transmit(item) {
    const room = this.rooms.get(item.room);
    if (!room || !room.joined) return;
    this.socket.send({ type: "send", room: item.room, body: item.body, client_id: item.clientId });
  }

  retry(clientId) {
    this.clearRetryTimer(clientId);
    const item = this.pending.retry(clientId);
    if (item === undefined) return;
    this.renderPending(item);
    this.transmit(item);
  }

  discard(clientId) {
    this.clearRetryTimer(clientId);
    this.pending.resolve(clientId);
    this.removePendingElement(clientId);
    this.textarea.focus();
  }

  maybeSendTyping() {
    if (this.textarea.value.trim() === "" || !this.active.joined) return;
    const now = Date.now();
    if (now - this.lastTypingSentAt < TYPING_THROTTLE_MS) return;
    this.lastTypingSentAt = now;
    this.socket.send({ type: "typing", room: this.active.slug });
  }

  // ------------------------------------------------------------- rendering

  messageElementFor(msg) {
    return messageElement(msg, { own: Boolean(msg.user && msg.user.id === this.me.id) });
  }

  /** Insert a stored message at its place by seq (before any pending sends). */
  insertMessage(msg) {
    if (this.list.querySelector(`li[data-seq="${msg.seq}"]`)) return;
    const li = this.messageElementFor(msg);
    let anchor = this.list.querySelector("li.msg--pending, li.msg--failed");
    // Walk back from the end of the sent messages to the first one with a lower seq.
    let prev = anchor ? anchor.previousElementSibling : this.list.lastElementChild;
    while (prev && (!prev.dataset.seq || Number(prev.dataset.seq) > msg.seq)) {
      anchor = prev;
      prev = prev.previousElementSibling;
    }
    this.list.insertBefore(li, anchor);
    updateGrouping(li, li.previousElementSibling);
    updateGrouping(li.nextElementSibling, li);
    this.markLeftOff();
  }

  /** Keep the "New messages" line above the first message after where the user left off last visit. */
  markLeftOff() {
    if (this.leftOff === null || this.leftOff === undefined) return;
    let first = null;
    for (const node of this.list.querySelectorAll("li[data-seq]")) {
      if (Number(node.dataset.seq) > this.leftOff) {
        first = node;
        break;
      }
    }
    if (first === null) return;
    const before = first.previousElementSibling;
    if (before && before.classList.contains("chat__divider")) return;
    this.placeDivider(Number(first.dataset.seq));
  }

  pendingElement(clientId) {
    return this.list.querySelector(`li[data-client-id="${CSS.escape(clientId)}"]:not([data-seq])`);
  }

  renderPending(item) {
    if (!item) return;
    const li = messageElement(
      { room: item.room, user: this.me, body: item.body, client_id: item.clientId, ts: null },
      {
        own: true,
        kind: item.state === "failed" ? "failed" : "pending",
        error: item.error,
        onRetry: () => {
          this.retry(item.clientId);
          // The button is gone with the re-rendered message: keep focus somewhere useful.
          this.textarea.focus();
        },
        onDiscard: () => this.discard(item.clientId),
        pendingText: this.pendingText(),
      },
    );
    if (item.state === "failed" && item.retryAt > Date.now()) {
      const button = li.querySelector(".msg__retry");
      if (button) {
        button.disabled = true;
        setTimeout(() => {
          button.disabled = false;
        }, item.retryAt - Date.now());
      }
    }
    const existing = this.pendingElement(item.clientId);
    if (existing) existing.replaceWith(li);
    else this.list.append(li);
    updateGrouping(li, li.previousElementSibling);
    updateGrouping(li.nextElementSibling, li);
  }

  pendingText() {
    return this.socket && this.socket.status === "connected" ? "Sending…" : "Not connected: will send when back online";
  }

  removePendingElement(clientId) {
    const li = this.pendingElement(clientId);
    if (!li) return;
    const next = li.nextElementSibling;
    const prev = li.previousElementSibling;
    li.remove();
    updateGrouping(next, prev);
  }

  renderTyping() {
    clearTimeout(this.typingTimer);
    const users = this.active.typingUsers();
    this.typing.textContent = typingText(users);
    this.typing.classList.toggle("chat__typing--active", users.length > 0);
    const next = this.active.nextTypingExpiry();
    if (Number.isFinite(next)) this.typingTimer = setTimeout(() => this.renderTyping(), next - Date.now() + 50);
  }

  renderPresenceList() {
    const users = Array.from(this.active.presence.values());
    renderPresence(this.presenceList, users, this.me.id);
    this.presenceTitle.textContent = `Online — ${users.length}`;
    this.peopleCount.textContent = String(users.length);
  }

  renderStatus(status, detail) {
    const labels = {
      connecting: "Connecting…",
      connected: "Connected",
      reconnecting: "Reconnecting…",
      offline: "Offline",
      unauthenticated: "Signed out",
    };
    this.status.dataset.state = status;
    this.statusText.textContent = labels[status] || status;
    this.statusRetry.hidden = status !== "offline";
    this.root.dataset.connection = status;
    for (const node of this.list.querySelectorAll("li.msg--pending .msg__status")) node.textContent = this.pendingText();
    if (status === "offline" && detail && detail.retryAt) {
      this.statusRetry.title = `Next attempt at ${new Date(detail.retryAt).toLocaleTimeString()}`;
    }
  }

  roomUrl(slug) {
    return this.config.roomUrlTemplate.replace("__slug__", encodeURIComponent(slug));
  }

  renderRoomList(rooms) {
    const items = rooms.map((info) => {
      const isActive = info.slug === this.active.slug;
      const badge = el("span", { cls: "badge", attrs: { hidden: true } });
      const link = el(
        "a",
        {
          cls: "rooms__link",
          attrs: { href: this.roomUrl(info.slug), "aria-current": isActive ? "page" : null },
        },
        info.private
          ? icon("lock", "rooms__hash")
          : el("span", { cls: "rooms__hash", attrs: { "aria-hidden": "true" }, text: "#" }),
        el("span", { cls: "rooms__name", text: info.name || info.slug }),
        badge,
      );
      return el("li", { cls: "rooms__item", attrs: { "data-room": info.slug } }, link);
    });
    this.roomList.replaceChildren(...items);
    for (const info of rooms) this.renderUnread(info.slug);
  }

  unreadCount(room) {
    if (room === this.active) return 0;
    const read = this.marks.get(room.slug);
    if (read === null) return 0;
    return Math.max(0, room.knownLastSeq - read);
  }

  renderUnread(slug) {
    const room = this.rooms.get(slug);
    const item = this.roomList.querySelector(`li[data-room="${CSS.escape(slug)}"]`);
    if (room && item) {
      const count = this.unreadCount(room);
      room.unread = count;
      const badge = item.querySelector(".badge");
      badge.hidden = count === 0;
      badge.replaceChildren(
        document.createTextNode(count > 99 ? "99+" : String(count)),
        el("span", { cls: "sr-only", text: count === 1 ? " unread message" : " unread messages" }),
      );
      item.classList.toggle("rooms__item--unread", count > 0);
    }
    this.renderTitle();
  }

  renderTitle() {
    let others = 0;
    for (const room of this.rooms.values()) others += room === this.active ? 0 : room.unread;
    const total = others + this.unseen;
    this.roomsBadge.hidden = others === 0;
    this.roomsBadge.textContent = others > 99 ? "99+" : String(others);
    const base = `#${this.active.name} · Kaiwa`;
    document.title = total > 0 ? `(${total}) ${base}` : base;
  }

  announce(text) {
    // Long bodies are cut for the screen reader; the message is in the list in full.
    this.announcer.textContent = text.length > 200 ? `${text.slice(0, 200)}…` : text;
  }

  // ------------------------------------------------------------- scrolling

  isAtBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight <= NEAR_BOTTOM_PX;
  }

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.stick = true;
    this.clearUnseen();
  }

  noteUnseen(seq, showButton) {
    if (this.unseen === 0) {
      this.leftOff = null;
      this.placeDivider(seq);
    }
    this.unseen += 1;
    this.jumpButton.textContent = `${this.unseen} new message${this.unseen === 1 ? "" : "s"} ↓`;
    if (showButton) this.jumpButton.hidden = false;
    this.renderTitle();
  }

  /** The "New messages" line, above the message with this seq (one line at a time). */
  placeDivider(seq) {
    const marker = this.list.querySelector("li.chat__divider");
    if (marker) {
      const next = marker.nextElementSibling;
      marker.remove();
      updateGrouping(next, next ? next.previousElementSibling : null);
    }
    const first = this.list.querySelector(`li[data-seq="${seq}"]`);
    if (!first) return;
    const divider = el(
      "li",
      { cls: "chat__divider", attrs: { "aria-hidden": "true" } },
      el("span", { text: "New messages" }),
    );
    this.list.insertBefore(divider, first);
    updateGrouping(first, divider);
  }

  clearUnseen() {
    // A hidden tab has not seen anything, wherever it is scrolled.
    if (document.visibilityState !== "visible") return;
    if (this.unseen > 0) {
      this.unseen = 0;
      this.jumpButton.hidden = true;
      this.renderTitle();
    }
    this.markActiveRead();
  }

  markActiveRead() {
    if (document.visibilityState !== "visible" || !this.isAtBottom()) return;
    const seqs = this.active.knownLastSeq;
    if (seqs > 0) this.marks.mark(this.active.slug, seqs);
  }

  onScroll() {
    this.stick = this.isAtBottom();
    if (this.stick) this.clearUnseen();
    if (this.scroller.scrollTop < LOAD_OLDER_WITHIN_PX && this.active.hasMore) this.loadOlder();
  }
}

function main() {
  // data-live="false" is the archive of older pages: plain HTML, no socket.
  const root = document.querySelector("section[data-room][data-live='true']");
  if (!root) return;
  const page = new RoomPage(root, readConfig(root));
  window.kaiwa = page; // handy from the devtools console
  page.start();
}

main();
