// The user's own rooms, live (protocol 7.5): room_added / room_removed /
// room_updated keep the sidebar and the socket's joins current, direct
// conversations get their own section named after the other person with a
// presence dot, and a person's name (message author, people list, the
// "Message someone" field) opens the conversation with them.
//
// Background rooms are joined with presence: false (controller.js), so
// "Online" in a room means "has it open". Direct conversations are the
// exception: every page joins them with presence, so a conversation's dot
// says whether the other person has Kaiwa open at all.

/** The other member of a direct conversation (oneself, for a conversation with oneself). */
export function dmPartner(room, me) {
  const members = Array.isArray(room.members) ? room.members : [];
  const other = members.find((m) => m && m.id !== me.id);
  return other ? other.username : me.username;
}

/** The csrftoken cookie's value (Django's CSRF rule for the API's POSTs). */
export function csrfToken(cookie) {
  for (const part of cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "csrftoken") return decodeURIComponent(rest.join("="));
  }
  return "";
}

export class RoomNav {
  /**
   * @param {object} deps
   * @param {import("./controller.js").RoomController} deps.controller
   * @param {import("./sidebar.js").Sidebar} deps.sidebar
   * @param {HTMLElement} deps.root   the page's section[data-room]
   * @param {object} deps.config
   * @param {(url: string, init: object) => Promise<Response>} deps.fetch
   * @param {(url: string) => void} deps.go   open a page
   * @param {(slug: string) => void} [deps.openRoom]   open a known room in place
   * @param {() => string} deps.cookie
   */
  constructor({ controller, sidebar, root, config, fetch, go, cookie, openRoom = null }) {
    this.openRoom = openRoom;
    this.controller = controller;
    this.sidebar = sidebar;
    this.root = root;
    this.config = config;
    this.fetch = fetch;
    this.go = go;
    this.cookie = cookie;
    this.me = { id: config.userId, username: config.username };
    this.sidebar.roomsBase = config.roomsUrl;
    this.dmUsers = new Map(); // dm slug -> the other person's name
    this.about = new Map(); // slug -> {title, kind, private}
    for (const info of sidebar.readRooms()) {
      if (info.kind === "dm") this.dmUsers.set(info.slug, info.dmUser);
      this.about.set(info.slug, { title: info.kind === "dm" ? info.dmUser : info.name, kind: info.kind, private: info.private });
    }
    controller.dmSlugs = new Set(this.dmUsers.keys());
  }

  bind() {
    const form = this.root.querySelector(".dm-start");
    if (form) {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const input = form.querySelector("input[name=user]");
        const name = input.value.trim();
        if (name) this.openDm(name, form.querySelector(".dm-start__error"));
      });
    }
    // A person's name opens the conversation with them (click, or Enter on the focused name).
    const activate = (event) => {
      const name = event.target.closest?.(".msg__author, .presence__name");
      if (!name || !this.root.contains(name)) return;
      const username = name.textContent.trim();
      if (username) this.openDm(username, null);
    };
    this.root.addEventListener("click", activate);
    this.root.addEventListener("keydown", (event) => {
      // A button's Enter is already a click.
      if (event.key === "Enter" && event.target.tagName !== "BUTTON") activate(event);
    });
  }

  /** Open the conversation with `username`; a refusal shows under "Message someone" (or `errorNode`). */
  async openDm(username, errorNode = null) {
    errorNode = errorNode || this.root.querySelector(".dm-start__error");
    if (errorNode) errorNode.hidden = true;
    let response;
    try {
      response = await this.fetch(this.config.dmsUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken(this.cookie()) },
        body: JSON.stringify({ user: username }),
      });
    } catch (err) {
      this.showError(errorNode, "Could not reach the server; try again.");
      return;
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok || !body || !body.room) {
      const message = body && body.error && (body.error.message || body.error);
      this.showError(errorNode, typeof message === "string" ? message : `The server answered ${response.status}.`);
      return;
    }
    this.onAdded(body.room);
    if (this.openRoom && this.controller.rooms.has(body.room.slug)) this.openRoom(body.room.slug);
    else this.go(`${this.config.roomsUrl}${encodeURIComponent(body.room.slug)}/`);
  }

  showError(node, text) {
    if (!node) return;
    node.textContent = text;
    node.hidden = false;
  }

  handleFrame(frame) {
    switch (frame.type) {
      case "room_added":
      case "room_updated":
        if (frame.room && typeof frame.room.slug === "string") {
          // A room made private or public changes its members and what "@" offers: read them again on the next open.
          if (frame.type === "room_updated" && this.controller.info) this.controller.info.forget(frame.room.slug);
          this.onAdded(frame.room);
        }
        break;
      case "room_removed":
        if (typeof frame.room === "string") {
          this.dmUsers.delete(frame.room);
          this.about.delete(frame.room);
          this.controller.dmSlugs.delete(frame.room);
          this.sidebar.removeRoom(frame.room);
          this.controller.removeRoom(frame.room);
        }
        break;
      case "joined":
      case "presence":
        if (this.dmUsers.has(frame.room)) this.renderDmPresence(frame.room);
        break;
      default:
        break;
    }
  }

  onAdded(room) {
    const dmUser = room.kind === "dm" ? dmPartner(room, this.me) : null;
    if (dmUser !== null) {
      this.dmUsers.set(room.slug, dmUser);
      this.controller.dmSlugs.add(room.slug);
    }
    this.sidebar.addRoom(room, dmUser);
    this.about.set(room.slug, { title: dmUser || room.name, kind: room.kind === "dm" ? "dm" : "room", private: !!room.private });
    if (this.onRenamed && room.slug === this.controller.active.slug) this.onRenamed(room.slug);
    this.controller.addRoom({ slug: room.slug, name: dmUser || room.name, lastSeq: Number(room.last_seq) || 0 });
    if (dmUser !== null) this.renderDmPresence(room.slug);
  }

  /**
   * After a reconnect: room events published while the socket was down are
   * lost (protocol 7.5), so the room list is read again and the sidebar
   * brought in line (rooms added, rooms gone). The list is `GET /api/rooms/`,
   * the prefix of the page's history URL template.
   */
  async resync(fetchJson) {
    const url = this.config.messagesTemplate.split("{slug}")[0];
    let data;
    try {
      data = await fetchJson(url);
    } catch (err) {
      return; // the next reconnect tries again
    }
    const rooms = Array.isArray(data.rooms) ? data.rooms : [];
    const listed = new Set(rooms.map((r) => r.slug));
    for (const room of rooms) if (!this.about.has(room.slug)) this.onAdded(room);
    for (const slug of Array.from(this.about.keys())) {
      if (!listed.has(slug)) this.handleFrame({ type: "room_removed", room: slug });
    }
  }

  /** Every room and conversation as the quick switcher lists them. */
  switcherRooms() {
    return Array.from(this.about, ([slug, about]) => ({ kind: about.kind === "dm" ? "dm" : "room", label: about.title, slug }));
  }

  /** Everybody the page knows of: present in any room, or an author in the open room. */
  knownPeople() {
    const names = [];
    for (const room of this.controller.rooms.values()) for (const user of room.presence.values()) names.push(user.username);
    for (const msg of this.controller.active.messages.values()) if (msg.user) names.push(msg.user.username);
    return names;
  }

  /** What the page calls a room, and whether it is private: for switching to it in place. */
  describe(slug) {
    return this.about.get(slug) || { title: slug, kind: "room", private: false };
  }

  renderDmPresence(slug) {
    const state = this.controller.rooms.get(slug);
    const other = this.dmUsers.get(slug);
    const online = !!state && Array.from(state.presence.values()).some((u) => u.username === other && u.id !== this.me.id);
    this.sidebar.setDmOnline(slug, online);
  }
}
