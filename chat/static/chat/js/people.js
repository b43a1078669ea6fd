// The people panel's second half: for a private room or a direct
// conversation, its members who are not here now (the "Online" list above
// shows who has the room open). Members come from the API
// (/api/rooms/<slug>/members, through roominfo.js), once per room; a public
// room has no member list (anyone may join it).

/** Members not present, by name: [{id, username}]. */
export function awayMembers(members, presentIds) {
  return members
    .filter((m) => !presentIds.has(m.id))
    .sort((a, b) => a.username.localeCompare(b.username));
}

export class People {
  /**
   * @param {object} deps
   * @param {import("./controller.js").RoomController} deps.controller
   * @param {HTMLElement} deps.root
   * @param {import("./roominfo.js").RoomInfo} deps.info   members per room, read once from the API
   * @param {(slug: string) => boolean} deps.isPrivate
   */
  constructor({ controller, root, info, isPrivate }) {
    this.controller = controller;
    this.info = info;
    this.isPrivate = isPrivate;
    const doc = root.ownerDocument;
    const panel = root.querySelector(".presence");
    this.title = doc.createElement("h2");
    this.title.className = "presence__title presence__title--away";
    this.title.id = "kaiwa-away-title";
    this.title.hidden = true;
    this.list = doc.createElement("ul");
    // Not .presence__list: that is the Online list (view.js, and tests, find it by that class).
    this.list.className = "presence__away";
    this.list.setAttribute("aria-labelledby", "kaiwa-away-title");
    this.list.hidden = true;
    panel.append(this.title, this.list);
    this.doc = doc;
  }

  /** The open room changed, or who is in it: redraw (loading its members the first time). */
  render() {
    const room = this.controller.active;
    if (!this.isPrivate(room.slug)) {
      this.title.hidden = true;
      this.list.hidden = true;
      return;
    }
    if (!this.info.has(room.slug)) {
      const slug = room.slug;
      this.info.load(slug).then(() => {
        if (this.controller.active.slug === slug) this.render();
      });
      return;
    }
    const away = awayMembers(this.info.get(room.slug).members, new Set(room.presence.keys()));
    this.title.textContent = `Members not here — ${away.length}`;
    this.title.hidden = away.length === 0;
    this.list.hidden = away.length === 0;
    const me = this.controller.me.id;
    this.list.replaceChildren(
      ...away.map((user) => {
        const li = this.doc.createElement("li");
        li.className = "presence__user presence__user--away";
        const name = this.doc.createElement(user.id === me ? "span" : "button");
        name.className = user.id === me ? "presence__name" : "presence__name presence__name--action";
        name.textContent = user.username;
        if (user.id !== me) {
          name.type = "button";
          name.setAttribute("aria-label", `Message ${user.username}`);
        }
        li.append(name);
        return li;
      }),
    );
  }
}
