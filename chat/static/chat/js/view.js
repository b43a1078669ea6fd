// The room page's DOM: binds to the server-rendered markup (room_detail.html)
// and keeps it in step with the controller's state. Message list insertion by
// seq, grouping, the "New messages" divider, scrolling, the composer, status,
// presence, typing and the title live here (the sidebar and the phone panels
// in sidebar.js); the view holds no chat state of its own beyond what is on
// screen (scroll position, unseen count) and reports what the user does
// through `handlers`.

import { ComposerFiles } from "./composerfiles.js";
import {
  confirmDelete,
  decorateMessage,
  el,
  enhanceMessage,
  mentionQuery,
  messageElement,
  messageOfElement,
  quoteText,
  renderBody,
  renderPresence,
  updateGrouping,
} from "./render.js";
import { Sidebar } from "./sidebar.js";
import { bindViewer } from "./viewer.js";

const NEAR_BOTTOM_PX = 48;
const LONG_PRESS_MS = 500;
const FLASH_MS = 1600;
const MENTION_CHOICES = 8;
const LOAD_OLDER_WITHIN_PX = 240;
const STATUS_LABELS = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  unauthenticated: "Signed out",
};

function finder(root) {
  return (selector) => {
    const node = root.querySelector(selector);
    // The template and the view change together; say which part is missing.
    if (node === null) throw new Error(`kaiwa: the room page has no ${selector}; is chat/room_detail.html up to date?`);
    return node;
  };
}

export class RoomView {
  /**
   * @param {HTMLElement} root    the section[data-room] of room_detail.html
   * @param {object} options
   * @param {{id: number, username: string}} options.me
   * @param {string} options.roomName
   * @param {boolean} [options.canModerate]  staff or the room's owner: may delete anyone's message
   * @param {Document} [options.doc]
   */
  constructor(root, { me, roomName, canModerate = false, doc = document }) {
    this.root = root;
    this.doc = doc;
    this.me = me;
    this.canModerate = canModerate;
    this.mention = null; // the open @-autocomplete: {start, choices, index}
    this.roomName = roomName;
    this.handlers = {};
    this.stick = true; // the user is reading the newest messages
    this.unseen = 0; // messages that arrived while the user was scrolled up (or away)
    this.othersUnread = 0;
    this.importantUnread = 0; // unread mentions and direct messages elsewhere (notify.js)
    this.leftOff = null; // last visit's read mark: the "New messages" line goes after it
    this.typingTimer = null;

    const find = finder(root);
    this.sidebar = new Sidebar(root, find, doc);
    this.status = find(".conn");
    this.statusText = find(".conn__text");
    this.statusRetry = find(".conn__retry");
    this.peopleCount = find(".chat__people-count");
    this.scroller = find(".chat__scroll");
    this.beginning = find(".chat__beginning");
    this.olderLink = find(".chat__older");
    this.historyError = find(".chat__error");
    this.list = find(".chat__list");
    this.empty = root.querySelector(".chat__empty");
    this.jumpButton = find(".chat__jump");
    this.typing = find(".chat__typing");
    this.form = find(".chat-composer");
    this.textarea = find(".chat-composer__input");
    this.sendButton = find(".chat-composer__send");
    this.composerError = find(".chat-composer__error");
    this.context = find(".chat-composer__context");
    this.contextText = find(".chat-composer__context-text");
    this.contextCancel = find(".chat-composer__context-cancel");
    this.mentionList = find(".chat-composer__mentions");
    this.presenceTitle = find(".presence__title");
    this.presenceList = find(".presence__list");
    this.announcer = find("[aria-live='polite']");
  }

  // ------------------------------------------------------- reading the page

  /** The first page of history, as the server rendered it. */
  readFirstPage(slug) {
    return Array.from(this.list.querySelectorAll("li.msg[data-seq]"), (li) => messageOfElement(li, slug));
  }

  /** The sidebar's rooms: [{slug, name, lastSeq}] in page order. */
  readRooms() {
    return this.sidebar.readRooms();
  }

  renderUnread(slug, count, mentions = 0) {
    this.sidebar.renderUnread(slug, count, mentions);
  }

  // ------------------------------------------------------------------ bind

  /** Turn the static page into the live one: enhance what the server drew, enable the composer, listen. */
  bind(handlers) {
    this.handlers = handlers;
    const items = Array.from(this.list.querySelectorAll("li.msg"));
    for (const li of items) enhanceMessage(li);
    for (const li of items) updateGrouping(li, li.previousElementSibling);
    this.textarea.disabled = false;
    this.sendButton.disabled = false;
    this.files = new ComposerFiles({ root: this.root, form: this.form, textarea: this.textarea, dropZone: this.root.querySelector(".chat") || this.root, doc: this.doc });
    this.files.bind();
    bindViewer(this.list, this.doc);

    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      handlers.submit();
    });
    this.textarea.addEventListener("keydown", (event) => {
      if (this.mention && this.onMentionKey(event)) return;
      if (event.key === "ArrowUp" && this.textarea.value === "" && !event.isComposing) {
        // Like other chats: ArrowUp in an empty composer edits your last message.
        if (handlers.editLast()) event.preventDefault();
        return;
      }
      if (event.key === "Escape" && !this.context.hidden) {
        handlers.cancelContext();
        return;
      }
      // isComposing: Enter that confirms an IME candidate (Japanese, Chinese) must not send.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.altKey && !event.ctrlKey) {
        event.preventDefault();
        handlers.submit();
      }
    });
    this.textarea.addEventListener("input", () => {
      handlers.input();
      this.updateMentions();
    });
    // Late, so a click on an option lands first; and only if the focus stayed away: a blur just
    // before the user came back and typed "@" must not close the list that "@" opened.
    this.textarea.addEventListener("blur", () =>
      setTimeout(() => {
        if (this.doc.activeElement !== this.textarea) this.closeMentions();
      }, 150),
    );
    this.contextCancel.addEventListener("click", () => handlers.cancelContext());
    this.mentionList.addEventListener("mousedown", (event) => {
      const option = event.target.closest("li[data-username]");
      if (!option) return;
      event.preventDefault(); // keep the focus in the composer
      this.pickMention(option.dataset.username);
    });
    this.list.addEventListener("click", (event) => this.onListClick(event));
    this.bindLongPress();
    this.scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
    // Without JavaScript the link opens the archive page; here the page grows upwards instead.
    this.olderLink.addEventListener("click", (event) => {
      event.preventDefault();
      handlers.loadOlder();
    });
    this.jumpButton.addEventListener("click", () => {
      this.scrollToBottom();
      this.textarea.focus();
    });
    this.statusRetry.addEventListener("click", () => handlers.retryNow());
    this.sidebar.bind((close) =>
      this.textarea.addEventListener("keydown", (event) => {
        if (event.key === "Escape") close();
      }),
    );
    this.doc.addEventListener("visibilitychange", () => {
      if (this.visible() && this.isAtBottom()) this.clearUnseen();
      this.renderTitle();
    });
    // The composer growing, the phone keyboard opening or a rotation shrinks
    // the history: whoever was reading the newest messages keeps them in view.
    if (typeof ResizeObserver === "function") {
      new ResizeObserver(() => {
        if (this.stick) this.scroller.scrollTop = this.scroller.scrollHeight;
      }).observe(this.scroller);
    }
  }

  visible() {
    return this.doc.visibilityState === "visible";
  }

  // ------------------------------------------------------------- composer

  composerText() {
    return this.textarea.value;
  }

  clearComposer() {
    this.textarea.value = "";
    this.composerError.hidden = true;
  }

  /** The attachments uploaded to ``slug`` that the next send carries (composerfiles.js). */
  readyAttachments(slug) {
    return this.files ? this.files.ready(slug) : [];
  }

  uploadsBusy(slug) {
    return this.files ? this.files.busy(slug) : false;
  }

  attachmentsSent(attachments) {
    if (this.files) this.files.sent(attachments);
  }

  focusComposer() {
    this.textarea.focus();
  }

  showComposerError(text) {
    this.composerError.textContent = text;
    this.composerError.hidden = false;
  }

  hideComposerError() {
    this.composerError.hidden = true;
  }

  // -------------------------------------------------------------- messages

  /** Insert a stored message at its place by seq (before any pending sends). */
  insertMessage(msg) {
    if (this.list.querySelector(`li[data-seq="${msg.seq}"]`)) return;
    const li = messageElement(msg, { own: Boolean(msg.user && msg.user.id === this.me.id) });
    this.decorate(li, msg);
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
    this.renderEmpty();
  }

  /** Drop every stored message (a reset reloads them), keeping the pending sends. */
  clearMessages() {
    for (const node of Array.from(this.list.querySelectorAll("li:not(.msg--pending):not(.msg--failed)"))) node.remove();
  }

  renderEmpty() {
    if (this.empty) this.empty.hidden = this.list.querySelector("li.msg") !== null;
  }

  /** A room opened in place says it is loading until its history is shown, then that it is empty, if it is. */
  showLoading(loading) {
    if (loading) this.list.setAttribute("aria-busy", "true");
    else this.list.removeAttribute("aria-busy");
    if (this.empty) this.empty.textContent = loading ? "Loading messages…" : "No messages yet. Say hello!";
    this.renderEmpty();
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

  /** Show a send that has no ack yet (or was refused), at the end of the list. */
  renderPending(item, pendingText) {
    if (!item) return;
    const li = messageElement(
      { room: item.room, user: this.me, body: item.body, client_id: item.clientId, ts: null, attachments: item.attachments },
      {
        own: true,
        kind: item.state === "failed" ? "failed" : "pending",
        error: item.error,
        onRetry: () => {
          this.handlers.retry(item.clientId);
          // The button is gone with the re-rendered message: keep focus somewhere useful.
          this.textarea.focus();
        },
        onDiscard: () => {
          this.handlers.discard(item.clientId);
          this.textarea.focus();
        },
        pendingText,
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
    this.renderEmpty();
  }

  removePending(clientId) {
    const li = this.pendingElement(clientId);
    if (!li) return;
    const next = li.nextElementSibling;
    const prev = li.previousElementSibling;
    li.remove();
    updateGrouping(next, prev);
    this.renderEmpty();
  }

  // --------------------------------------------------------- history edge

  renderHistoryEdge({ hasMore, historyLoaded, oldestSeq }) {
    this.olderLink.hidden = !hasMore;
    if (oldestSeq !== null) this.olderLink.setAttribute("href", `?before=${oldestSeq}`);
    this.beginning.hidden = hasMore || !historyLoaded;
  }

  setLoadingOlder(loading) {
    this.olderLink.setAttribute("aria-disabled", String(loading));
    this.olderLink.textContent = loading ? "Loading…" : "Load older messages";
  }

  showHistoryError(text) {
    this.historyError.textContent = text;
    this.historyError.hidden = false;
  }

  hideHistoryError() {
    this.historyError.hidden = true;
  }

  // ------------------------------------------------------ people and status

  renderTyping(room, text) {
    clearTimeout(this.typingTimer);
    this.typing.textContent = text;
    this.typing.classList.toggle("chat__typing--active", text !== "");
    const next = room.nextTypingExpiry();
    if (Number.isFinite(next)) this.typingTimer = setTimeout(() => this.handlers.typingExpired(), next - Date.now() + 50);
  }

  renderPresence(users) {
    renderPresence(this.presenceList, users, this.me.id);
    this.presenceTitle.textContent = `Online — ${users.length}`;
    this.peopleCount.textContent = String(users.length);
  }

  renderStatus(status, detail, pendingText) {
    this.status.dataset.state = status;
    this.statusText.textContent = STATUS_LABELS[status] || status;
    this.statusRetry.hidden = status !== "offline";
    this.root.dataset.connection = status;
    for (const node of this.list.querySelectorAll("li.msg--pending .msg__status")) node.textContent = pendingText;
    if (status === "offline" && detail && detail.retryAt) {
      this.statusRetry.title = `Next attempt at ${new Date(detail.retryAt).toLocaleTimeString()}`;
    }
  }

  /** Unread messages in the other rooms; the title adds the ones not yet seen here. */
  setOthersUnread(count) {
    this.othersUnread = count;
    this.renderTitle();
  }

  renderTitle() {
    const others = this.othersUnread;
    // The title counts what needs the user (mentions, direct messages) and what they have not seen here.
    const total = this.importantUnread + this.unseen;
    this.sidebar.renderOthersUnread(others);
    const base = `${this.root.dataset.kind === "dm" ? "" : "#"}${this.roomName} · Kaiwa`;
    this.doc.title = total > 0 ? `(${total}) ${base}` : base;
    if (this.onTitle) this.onTitle(total); // the favicon badge (notify.js)
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

  /** Run `change` (which adds content above) without moving the message under the user's eyes. */
  keepPosition(change) {
    const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
    change();
    this.scroller.scrollTop = this.scroller.scrollHeight - fromBottom;
  }

  /** New messages that the user has not seen: scrolled up (`showButton`), or in a hidden tab. */
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
    const divider = el("li", { cls: "chat__divider", attrs: { "aria-hidden": "true" } }, el("span", { text: "New messages" }));
    this.list.insertBefore(divider, first);
    updateGrouping(first, divider);
  }

  clearUnseen() {
    // A hidden tab has not seen anything, wherever it is scrolled.
    if (!this.visible()) return;
    if (this.unseen > 0) {
      this.unseen = 0;
      this.jumpButton.hidden = true;
      this.renderTitle();
    }
    if (this.isAtBottom() && this.handlers.readToBottom) this.handlers.readToBottom();
  }

  onScroll() {
    this.stick = this.isAtBottom();
    if (this.stick) this.clearUnseen();
    if (this.scroller.scrollTop < LOAD_OLDER_WITHIN_PX) this.handlers.nearTop();
  }

  // ------------------------------------------- edits, deletions, replies (7.4)

  decorate(li, msg) {
    const original = msg.reply_to && this.handlers.messageOf ? this.handlers.messageOf(msg.reply_to) : null;
    decorateMessage(li, msg, { me: this.me, canModerate: this.canModerate, original });
  }

  /** A message changed (edited, deleted, or read from the page): redraw it and the quotes of it. */
  refreshMessage(msg) {
    const li = this.list.querySelector(`li[data-seq="${msg.seq}"]`);
    if (li) {
      const body = li.querySelector(".msg__body");
      if (!msg.deleted && body.textContent !== msg.body) body.replaceChildren(renderBody(msg.body));
      this.decorate(li, msg);
    }
    for (const quote of this.list.querySelectorAll(`.msg__quote[data-target="${msg.seq}"]`)) quote.textContent = quoteText(msg);
  }

  onListClick(event) {
    const quote = event.target.closest(".msg__quote");
    if (quote) {
      this.jumpTo(Number(quote.dataset.target));
      return;
    }
    const button = event.target.closest("button[data-action]");
    const li = button && button.closest("li.msg[data-seq]");
    if (!li) return;
    const seq = Number(li.dataset.seq);
    const action = button.dataset.action;
    if (action === "delete") confirmDelete(li);
    else if (action === "cancel-delete") {
      li.querySelector(".msg__actions").replaceChildren();
      this.decorate(li, this.handlers.messageOf(seq) || messageOfElement(li, ""));
    } else if (action === "confirm-delete") {
      li.querySelector(".msg__actions").replaceChildren();
      this.handlers.deleteMessage(seq);
    } else if (action === "reply") this.handlers.reply(seq);
    else if (action === "edit") this.handlers.edit(seq);
  }

  /** Touch screens have no hover: a long press shows a message's actions. */
  bindLongPress() {
    let timer = null;
    const cancel = () => {
      clearTimeout(timer);
      timer = null;
    };
    this.list.addEventListener(
      "touchstart",
      (event) => {
        const li = event.target.closest("li.msg[data-seq]");
        cancel();
        if (!li) return;
        timer = setTimeout(() => {
          for (const other of this.list.querySelectorAll("li.msg--touched")) other.classList.remove("msg--touched");
          li.classList.add("msg--touched");
        }, LONG_PRESS_MS);
      },
      { passive: true },
    );
    for (const name of ["touchend", "touchmove", "touchcancel"]) this.list.addEventListener(name, cancel, { passive: true });
    this.doc.addEventListener("touchstart", (event) => {
      if (!event.target.closest || !event.target.closest("li.msg--touched")) {
        for (const li of this.list.querySelectorAll("li.msg--touched")) li.classList.remove("msg--touched");
      }
    }, { passive: true });
  }

  /** Scroll to a message (a reply's quote) and mark it for a moment; false if it is not loaded. */
  jumpTo(seq) {
    const li = this.list.querySelector(`li[data-seq="${seq}"]`);
    if (!li) return false;
    li.scrollIntoView({ block: "center" });
    li.classList.add("msg--flash");
    setTimeout(() => li.classList.remove("msg--flash"), FLASH_MS);
    return true;
  }

  /** The banner above the composer: "Replying to …" or "Editing your message" (null hides it). */
  setContext(text) {
    this.context.hidden = text === null;
    this.contextText.textContent = text || "";
    this.root.dataset.composing = text === null ? "" : "context";
  }

  setComposerText(text) {
    this.textarea.value = text;
    this.textarea.focus();
    this.textarea.setSelectionRange(text.length, text.length);
  }

  // -- @-mention autocomplete

  updateMentions() {
    const found = mentionQuery(this.textarea.value, this.textarea.selectionStart);
    if (found === null || !this.handlers.mentionCandidates) {
      this.closeMentions();
      return;
    }
    const query = found.query.toLowerCase();
    const choices = this.handlers
      .mentionCandidates()
      .filter((u) => u.username.toLowerCase().startsWith(query))
      .slice(0, MENTION_CHOICES);
    if (choices.length === 0) {
      this.closeMentions();
      return;
    }
    this.mention = { start: found.start, choices, index: 0 };
    this.renderMentions();
  }

  renderMentions() {
    const { choices, index } = this.mention;
    this.mentionList.replaceChildren(
      ...choices.map((user, i) =>
        el("li", {
          cls: "chat-composer__mention",
          attrs: { role: "option", "data-username": user.username, "aria-selected": String(i === index), id: `kaiwa-mention-${i}` },
          text: `@${user.username}`,
        }),
      ),
    );
    this.mentionList.hidden = false;
    this.textarea.setAttribute("aria-activedescendant", `kaiwa-mention-${index}`);
  }

  closeMentions() {
    this.mention = null;
    this.mentionList.hidden = true;
    this.mentionList.replaceChildren();
    this.textarea.removeAttribute("aria-activedescendant");
  }

  /** Keys while the autocomplete is open; true when the key was the list's. */
  onMentionKey(event) {
    const m = this.mention;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      m.index = (m.index + (event.key === "ArrowDown" ? 1 : m.choices.length - 1)) % m.choices.length;
      this.renderMentions();
    } else if (event.key === "Enter" || event.key === "Tab") {
      this.pickMention(m.choices[m.index].username);
    } else if (event.key === "Escape") {
      this.closeMentions();
    } else {
      return false;
    }
    event.preventDefault();
    return true;
  }

  pickMention(username) {
    if (!this.mention) return;
    const text = this.textarea.value;
    const caret = this.textarea.selectionStart;
    const before = `${text.slice(0, this.mention.start)}@${username} `;
    this.textarea.value = before + text.slice(caret);
    this.textarea.setSelectionRange(before.length, before.length);
    this.closeMentions();
    this.textarea.focus();
  }
}
