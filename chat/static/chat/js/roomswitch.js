// Switching rooms in place: the URL changes (history.pushState; back and
// forward work), the socket stays open, the room's history comes from the API
// (or from what the page already holds), and each room keeps its scroll
// position. The room left behind stays joined in the background with
// presence: false (protocol 7.5); the room opened is joined again with
// presence, resuming after the last seq received.

import { History } from "./history.js";

/** Where a room's page is, and its history API: from the page's config, never a copy of the server's routes. */
export function roomUrls(config, slug) {
  const encoded = encodeURIComponent(slug);
  return { page: `${config.roomsUrl}${encoded}/`, messages: config.messagesTemplate.replace("{slug}", encoded) };
}

/** The slug of a room page's path (`/rooms/<slug>/`), or null. */
export function slugOfPath(config, pathname) {
  if (!pathname.startsWith(config.roomsUrl)) return null;
  const rest = pathname.slice(config.roomsUrl.length);
  const match = /^([^/]+)\/$/.exec(rest);
  return match ? decodeURIComponent(match[1]) : null;
}

export class RoomSwitch {
  /**
   * @param {object} deps
   * @param {import("./controller.js").RoomController} deps.controller
   * @param {import("./view.js").RoomView} deps.view
   * @param {object} deps.config
   * @param {HTMLElement} deps.root
   * @param {Window} deps.win
   * @param {(slug: string) => {title: string, kind: string, private: boolean}} deps.describe
   */
  constructor({ controller, view, config, root, win, describe }) {
    this.controller = controller;
    this.view = view;
    this.config = config;
    this.root = root;
    this.win = win;
    this.describe = describe;
    this.scroll = new Map(); // slug -> {atBottom, fromBottom}
    this.onOpen = []; // callbacks(slug) once a room is opened in place
    this.switching = 0;
  }

  bind() {
    this.win.history.replaceState({ kaiwaRoom: this.controller.active.slug }, "", this.win.location.href);
    this.win.addEventListener("popstate", (event) => {
      const slug = (event.state && event.state.kaiwaRoom) || slugOfPath(this.config, this.win.location.pathname);
      if (slug && this.controller.rooms.has(slug)) this.open(slug, { push: false });
      else this.win.location.reload();
    });
    // Sidebar links open their room in place; a modified click (new tab) is the browser's.
    this.root.querySelector(".rooms").addEventListener("click", (event) => {
      const link = event.target.closest("a.rooms__link");
      if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      const slug = link.closest("li[data-room]")?.dataset.room;
      if (!slug || !this.controller.rooms.has(slug)) return;
      event.preventDefault();
      this.open(slug, { push: true });
      this.view.sidebar.setPanel(null);
    });
  }

  /** Open `slug` in place. Returns a promise that settles once its history is shown. */
  async open(slug, { push }) {
    const { controller, view } = this;
    const target = controller.rooms.get(slug);
    const current = controller.active;
    if (!target || target === current) return;
    const ticket = ++this.switching;
    this.scroll.set(current.slug, {
      atBottom: view.isAtBottom(),
      fromBottom: view.scroller.scrollHeight - view.scroller.scrollTop,
    });
    controller.markActiveRead();
    if (push) this.win.history.pushState({ kaiwaRoom: slug }, "", roomUrls(this.config, slug).page);
    // Who "@" offers and what the user may do there: known for the page's own room, read once for the others.
    const known = controller.info.get(slug);
    const infoReady = known ? Promise.resolve(known) : controller.info.load(slug);

    // The room left behind goes on counting unread messages, without the user in it.
    controller.active = target;
    for (const room of [current, target]) {
      room.joined = false;
      room.joinSent = false;
    }
    controller.history = new History({
      room: target,
      view,
      fetchJson: controller.fetchJson,
      messagesUrl: roomUrls(this.config, slug).messages,
      pageSize: this.config.pageSize,
      settle: (messages) => controller.settleFromHistory(messages),
    });
    this.renderFrame(target);
    if (controller.socket && controller.socket.isOpen()) controller.joinAll(); // the old room, in the background
    controller.renderUnread(current);
    controller.renderUnread(target);

    if (!target.historyLoaded) {
      // Live frames that arrived in the background stay; the latest page fills in below them.
      try {
        await controller.history.loadLatest(0);
        view.hideHistoryError();
      } catch (err) {
        if (ticket === this.switching) view.showHistoryError(`Could not load the history: ${err.message}`);
      }
    }
    const info = await infoReady;
    if (ticket !== this.switching) return; // another switch overtook this one
    view.canModerate = info.moderator;
    this.renderTools(slug, info);
    const about = this.describe(slug);
    view.announce(`Opened ${about.kind === "dm" ? `the conversation with ${about.title}` : `#${about.title}`}`);
    this.renderMessages(target);
    controller.history.renderEdge();
    const saved = this.scroll.get(slug);
    if (saved && !saved.atBottom) {
      view.scroller.scrollTop = view.scroller.scrollHeight - saved.fromBottom;
      view.stick = false;
    } else {
      view.scrollToBottom();
    }
    if (controller.socket && controller.socket.isOpen()) controller.joinAll();
    controller.renderPresence();
    controller.renderTyping();
    controller.markActiveRead();
    controller.renderUnread(target);
    view.renderTitle();
    for (const callback of this.onOpen) callback(slug);
  }

  /** The open room was renamed (room_updated): its header, labels and title follow. */
  renamed() {
    const room = this.controller.active;
    const list = this.view.list;
    const children = Array.from(list.children);
    const kept = { unseen: this.view.unseen, jump: this.view.jumpButton.hidden, leftOff: this.view.leftOff };
    this.renderFrame(room);
    list.replaceChildren(...children);
    this.view.unseen = kept.unseen;
    this.view.jumpButton.hidden = kept.jump;
    this.view.leftOff = kept.leftOff;
    this.view.renderEmpty();
    this.view.renderTitle();
  }

  /** Everything on screen that names the room, for `room`. */
  renderFrame(room) {
    const { view } = this;
    const about = this.describe(room.slug);
    const title = about.title || room.name;
    const label = about.kind === "dm" ? title : `#${title}`;
    view.roomName = title;
    this.root.dataset.room = room.slug;
    this.root.dataset.kind = about.kind;
    const heading = this.root.querySelector("#room-title");
    heading.replaceChildren();
    if (about.private) {
      const lock = view.sidebar.lockIcon();
      lock.setAttribute("class", "icon icon--lock chat__hash");
      heading.append(lock);
    } else {
      const hash = this.win.document.createElement("span");
      hash.className = "chat__hash";
      hash.setAttribute("aria-hidden", "true");
      hash.textContent = "#";
      heading.append(hash);
    }
    heading.append(this.win.document.createTextNode(title));
    this.root.querySelector("section.chat").setAttribute("aria-label", label);
    view.scroller.setAttribute("aria-label", `Message history of ${label}`);
    view.list.setAttribute("aria-label", `Messages in ${label}`);
    view.textarea.placeholder = `Message ${label}`;
    const composerLabel = this.root.querySelector("label[for='kaiwa-composer']");
    if (composerLabel) composerLabel.textContent = `Message ${label}`;
    view.beginning.textContent = `This is the beginning of ${label}.`;
    // Until the room's rights are known (open() renders them), nothing more than one's own messages.
    const info = this.controller.info.get(room.slug);
    view.canModerate = Boolean(info && info.moderator);
    this.renderTools(room.slug, info);
    for (const link of this.root.querySelectorAll(".rooms__link[aria-current]")) link.removeAttribute("aria-current");
    view.sidebar.item(room.slug)?.querySelector(".rooms__link")?.setAttribute("aria-current", "page");
    view.hideHistoryError();
    view.hideComposerError();
    view.list.replaceChildren();
    view.unseen = 0;
    view.jumpButton.hidden = true;
    view.leftOff = this.controller.marks.get(room.slug);
    view.showLoading(!room.historyLoaded);
    view.renderTitle();
  }

  /** The header's tools for `slug`: "Members" for the creator of a private room. */
  renderTools(slug, info) {
    const tools = this.root.querySelector(".chat__tools");
    if (!tools) return;
    tools.replaceChildren();
    if (!info || !info.canManage) return;
    const link = this.win.document.createElement("a");
    link.className = "btn btn--small btn--quiet";
    link.href = this.config.membersPageTemplate.replace("{slug}", encodeURIComponent(slug));
    link.textContent = "Members";
    tools.append(link);
  }

  /** The room's messages as the store holds them, then its unsent messages. */
  renderMessages(room) {
    const { view, controller } = this;
    view.list.replaceChildren();
    for (const seq of room.sortedSeqs()) view.insertMessage(room.messages.get(seq));
    for (const item of controller.pending.forRoom(room.slug)) view.renderPending(item, controller.pendingText());
    view.markLeftOff();
    view.showLoading(false);
    // A history that could not be loaded is not an empty room: the error above says what happened.
    if (!room.historyLoaded && view.empty) view.empty.hidden = true;
  }
}
