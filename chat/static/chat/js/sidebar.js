// The rooms sidebar and the phone panels of the room page, bound to the
// server-rendered markup (room_detail.html): the rooms the page lists (and
// their stored last seq), unread badges, and the rooms/people panels that
// open over the chat on narrow screens.

import { el } from "./render.js";

export class Sidebar {
  /**
   * @param {HTMLElement} root   the section[data-room] of room_detail.html
   * @param {(selector: string) => HTMLElement} find   a querySelector that says what is missing
   * @param {Document} doc
   */
  constructor(root, find, doc) {
    this.root = root;
    this.doc = doc;
    this.roomList = find(".rooms__list");
    this.roomsPanel = find(".rooms");
    this.dmList = find(".rooms__list--dm");
    this.roomsBase = "/rooms/"; // set by the controller from the page's config
    this.roomsToggle = find(".chat__rooms-toggle");
    this.roomsBadge = find(".badge--toggle");
    this.peopleToggle = find(".chat__people-toggle");
    this.peoplePanel = find(".presence");
    this.scrim = find(".kaiwa__scrim");
  }

  /** The sidebar's rooms and direct conversations: [{slug, name, lastSeq, kind, dmUser}] in page order. */
  readRooms() {
    return Array.from(this.roomsPanel.querySelectorAll("li[data-room]"), (li) => ({
      slug: li.dataset.room,
      name: li.querySelector(".rooms__name")?.textContent || li.dataset.room,
      lastSeq: Number.parseInt(li.dataset.lastSeq || "0", 10) || 0,
      kind: li.dataset.kind === "dm" ? "dm" : "room",
      private: li.dataset.private === "true" || li.dataset.kind === "dm",
      dmUser: li.dataset.dmUser || null,
    }));
  }

  item(slug) {
    return this.roomsPanel.querySelector(`li[data-room="${CSS.escape(slug)}"]`);
  }

  /**
   * A room that appeared (room_added), in its section, in name order; a known one is renamed.
   * @param {{slug: string, name: string, private: boolean, kind: string}} room
   * @param {string|null} dmUser   for a direct conversation: the other person's name
   */
  addRoom(room, dmUser) {
    const existing = this.item(room.slug);
    const label = room.kind === "dm" ? dmUser || room.name : room.name;
    if (existing) {
      existing.querySelector(".rooms__name").textContent = label;
      return;
    }
    const icon =
      room.kind === "dm"
        ? el("span", { cls: "rooms__dot", attrs: { "data-online": "false", "aria-hidden": "true" } })
        : room.private
          ? this.lockIcon()
          : el("span", { cls: "rooms__hash", attrs: { "aria-hidden": "true" }, text: "#" });
    const link = el(
      "a",
      { cls: "rooms__link", attrs: { href: `${this.roomsBase}${encodeURIComponent(room.slug)}/` } },
      icon,
      el("span", { cls: "rooms__name", text: label }),
      room.kind === "dm" ? el("span", { cls: "sr-only rooms__state", text: " (offline)" }) : null,
      el("span", { cls: "badge", attrs: { hidden: true } }),
    );
    const li = el("li", {
      cls: "rooms__item",
      attrs: {
        "data-room": room.slug,
        "data-last-seq": "0",
        "data-kind": room.kind === "dm" ? "dm" : null,
        "data-private": room.private ? "true" : null,
      },
    }, link);
    if (room.kind === "dm") li.dataset.dmUser = label;
    const list = room.kind === "dm" ? this.dmList : this.roomList;
    const after = Array.from(list.children).find(
      (other) => (other.querySelector(".rooms__name")?.textContent || "").localeCompare(label) > 0,
    );
    list.insertBefore(li, after || null);
  }

  /** The template's lock icon (chat/_icon.html), for a private room added live. */
  lockIcon() {
    const ns = "http://www.w3.org/2000/svg";
    const svg = this.doc.createElementNS(ns, "svg");
    const attrs = { class: "icon icon--lock rooms__hash", viewBox: "0 0 24 24", fill: "none", stroke: "currentColor",
      "stroke-width": "2", "stroke-linecap": "round", "stroke-linejoin": "round", "aria-hidden": "true", focusable: "false" };
    for (const [name, value] of Object.entries(attrs)) svg.setAttribute(name, value);
    for (const d of ["M7 11V8a5 5 0 0 1 10 0v3", "M5 11h14v10H5z"]) {
      const path = this.doc.createElementNS(ns, "path");
      path.setAttribute("d", d);
      svg.append(path);
    }
    return svg;
  }

  /** A room the user can no longer see (room_removed). */
  removeRoom(slug) {
    const item = this.item(slug);
    if (item) item.remove();
  }

  /** A direct conversation's dot: whether the other person is connected. */
  setDmOnline(slug, online) {
    const item = this.item(slug);
    if (!item || item.dataset.kind !== "dm") return;
    item.querySelector(".rooms__dot")?.setAttribute("data-online", String(online));
    const state = item.querySelector(".rooms__state");
    if (state) state.textContent = online ? " (online)" : " (offline)";
  }

  bind(onEscapeInComposer) {
    this.roomsToggle.addEventListener("click", () => this.togglePanel("rooms"));
    this.peopleToggle.addEventListener("click", () => this.togglePanel("people"));
    this.scrim.addEventListener("click", () => this.setPanel(null));
    this.doc.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.root.dataset.panel) this.setPanel(null);
    });
    onEscapeInComposer(() => this.setPanel(null));
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
      if (panel.contains(this.doc.activeElement)) (was === "rooms" ? this.roomsToggle : this.peopleToggle).focus();
    }
  }

  /** The unread badge of a room, and beside it the unread messages that mention you ("@2"). */
  renderUnread(slug, count, mentions = 0) {
    const item = this.item(slug);
    if (!item) return;
    let mentionBadge = item.querySelector(".badge--mention");
    if (mentionBadge === null && mentions > 0) {
      mentionBadge = el("span", { cls: "badge badge--mention" });
      item.querySelector(".badge").before(mentionBadge);
    }
    if (mentionBadge !== null) {
      mentionBadge.hidden = mentions === 0;
      mentionBadge.replaceChildren(
        this.doc.createTextNode(`@${mentions > 99 ? "99+" : mentions}`),
        el("span", { cls: "sr-only", text: mentions === 1 ? " unread mention" : " unread mentions" }),
      );
    }
    const badge = item.querySelector(".badge:not(.badge--mention)");
    badge.hidden = count === 0;
    badge.replaceChildren(
      this.doc.createTextNode(count > 99 ? "99+" : String(count)),
      el("span", { cls: "sr-only", text: count === 1 ? " unread message" : " unread messages" }),
    );
    item.classList.toggle("rooms__item--unread", count > 0);
  }

  /** The total on the Rooms button (phones): unread messages in the other rooms. */
  renderOthersUnread(count) {
    this.roomsBadge.hidden = count === 0;
    this.roomsBadge.textContent = count > 99 ? "99+" : String(count);
  }
}
