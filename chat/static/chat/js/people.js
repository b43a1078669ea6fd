// The people panel's second half: for a private room or a direct
// conversation, its members who are not here now (the "Online" list above
// shows who has the room open). Members come from the API
// (/api/rooms/<slug>/members), once per room; a public room has no member
// list (anyone may join it).

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
   * @param {(url: string) => Promise<object>} deps.fetchJson
   * @param {(slug: string) => string} deps.membersUrl
   * @param {(slug: string) => boolean} deps.isPrivate
   */
  constructor({ controller, root, fetchJson, membersUrl, isPrivate }) {
    this.controller = controller;
    this.fetchJson = fetchJson;
    this.membersUrl = membersUrl;
    this.isPrivate = isPrivate;
    this.members = new Map(); // slug -> [{id, username}]
    this.loading = new Set();
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
    const members = this.members.get(room.slug);
    if (members === undefined) {
      this.load(room.slug);
      return;
    }
    const away = awayMembers(members, new Set(room.presence.keys()));
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

  async load(slug) {
    if (this.loading.has(slug)) return;
    this.loading.add(slug);
    try {
      const data = await this.fetchJson(this.membersUrl(slug));
      this.members.set(slug, Array.isArray(data.members) ? data.members : []);
    } catch (err) {
      this.members.set(slug, []); // the panel still shows who is online
    } finally {
      this.loading.delete(slug);
    }
    if (this.controller.active.slug === slug) this.render();
  }
}
