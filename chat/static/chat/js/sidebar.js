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
    this.roomsToggle = find(".chat__rooms-toggle");
    this.roomsBadge = find(".badge--toggle");
    this.peopleToggle = find(".chat__people-toggle");
    this.peoplePanel = find(".presence");
    this.scrim = find(".kaiwa__scrim");
  }

  /** The sidebar's rooms: [{slug, name, lastSeq}] in page order. */
  readRooms() {
    return Array.from(this.roomList.querySelectorAll("li[data-room]"), (li) => ({
      slug: li.dataset.room,
      name: li.querySelector(".rooms__name")?.textContent || li.dataset.room,
      lastSeq: Number.parseInt(li.dataset.lastSeq || "0", 10) || 0,
    }));
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

  renderUnread(slug, count) {
    const item = this.roomList.querySelector(`li[data-room="${CSS.escape(slug)}"]`);
    if (!item) return;
    const badge = item.querySelector(".badge");
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
