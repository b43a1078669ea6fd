// Notifications for what needs the user: a direct message or a mention of
// them, while the tab is hidden or another room is open. Permission is asked
// only when the user presses "Enable notifications" (a gesture; never on
// load). Each room can be muted (kept in localStorage for the user). The tab
// title and the favicon count these unread mentions and direct messages.

const MUTE_KEY = "kaiwa:mute";

/** Whether the message names the user: the server's `mentions` (protocol 7.4), or "@username" in the body. */
export function mentionsMe(frame, me) {
  if (Array.isArray(frame.mentions) && frame.mentions.includes(me.id)) return true;
  if (typeof frame.body !== "string" || !me.username) return false;
  const escaped = me.username.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[^\\w@])@${escaped}(?![\\w-])`, "i").test(frame.body);
}

/** Whether a message frame deserves a notification. */
export function shouldNotify({ frame, me, isDm, isOpen, hidden, muted }) {
  if (frame.type !== "message" || !frame.user || frame.user.id === me.id || muted) return false;
  if (!isDm && !mentionsMe(frame, me)) return false;
  return hidden || !isOpen;
}

/** The favicon with a count on it, as an SVG data URL (the page's CSP allows data: images). */
export function badgeIcon(count) {
  const text = count > 99 ? "99+" : String(count);
  const svg =
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">' +
    '<rect x="2" y="4" width="24" height="22" rx="6" fill="#4f46e5"/>' +
    '<circle cx="22" cy="10" r="10" fill="#d32f2f"/>' +
    `<text x="22" y="14" font-size="${text.length > 1 ? 9 : 13}" font-family="sans-serif" font-weight="700" ` +
    `text-anchor="middle" fill="#fff">${text}</text></svg>`;
  return `data:image/svg+xml,${encodeURIComponent(svg)}`;
}

export class Notifier {
  /**
   * @param {object} deps
   * @param {import("./controller.js").RoomController} deps.controller
   * @param {import("./view.js").RoomView} deps.view
   * @param {HTMLElement} deps.root
   * @param {Window} deps.win
   * @param {Storage} deps.storage    localStorage
   * @param {(slug: string) => boolean} deps.isDm
   * @param {(slug: string) => string} deps.title   what the page calls a room
   * @param {(slug: string) => void} deps.openRoom
   */
  constructor({ controller, view, root, win, storage, isDm, title, openRoom }) {
    this.controller = controller;
    this.view = view;
    this.root = root;
    this.win = win;
    this.storage = storage;
    this.isDm = isDm;
    this.title = title;
    this.openRoom = openRoom;
    this.me = controller.me;
    this.counts = new Map(); // slug -> unread mentions and direct messages
    this.enableButton = root.querySelector(".notify-enable");
    this.muteButton = root.querySelector(".chat__mute");
    this.icon = win.document.querySelector("link[rel='icon']");
    this.plainIcon = this.icon ? this.icon.getAttribute("href") : null;
  }

  get supported() {
    return typeof this.win.Notification === "function";
  }

  bind() {
    if (this.enableButton) {
      this.enableButton.addEventListener("click", () => this.enable());
      this.renderEnable();
    }
    if (this.muteButton) this.muteButton.addEventListener("click", () => this.toggleMute());
    this.win.document.addEventListener("visibilitychange", () => {
      if (this.win.document.visibilityState === "visible") this.clear(this.controller.active.slug);
    });
    this.renderMute();
    this.view.onTitle = (count) => this.renderIcon(count);
    this.view.renderTitle();
  }

  async enable() {
    if (!this.supported) return;
    try {
      await this.win.Notification.requestPermission();
    } finally {
      this.renderEnable();
    }
  }

  renderEnable() {
    const button = this.enableButton;
    const permission = this.supported ? this.win.Notification.permission : "unsupported";
    button.hidden = permission !== "default";
    const note = this.root.querySelector(".notify-state");
    if (note) {
      note.hidden = permission === "default";
      note.textContent =
        permission === "granted"
          ? "Notifications are on for direct messages and mentions."
          : permission === "denied"
            ? "Notifications are blocked in this browser's site settings."
            : "This browser cannot show notifications.";
    }
  }

  mutedRooms() {
    try {
      const value = JSON.parse(this.storage.getItem(`${MUTE_KEY}:${this.me.id}`) || "[]");
      return new Set(Array.isArray(value) ? value : []);
    } catch (err) {
      return new Set();
    }
  }

  isMuted(slug) {
    return this.mutedRooms().has(slug);
  }

  toggleMute() {
    const slug = this.controller.active.slug;
    const muted = this.mutedRooms();
    if (muted.has(slug)) muted.delete(slug);
    else muted.add(slug);
    this.storage.setItem(`${MUTE_KEY}:${this.me.id}`, JSON.stringify(Array.from(muted)));
    this.renderMute();
  }

  /** The open room's mute button; called on every room switch too. */
  renderMute() {
    if (!this.muteButton) return;
    const muted = this.isMuted(this.controller.active.slug);
    this.muteButton.setAttribute("aria-pressed", String(muted));
    this.muteButton.textContent = muted ? "Muted" : "Mute";
    this.muteButton.title = muted ? "Notifications for this room are off" : "Turn notifications for this room off";
  }

  /** A room is open (a switch, or the tab shown again): what it held is seen. */
  clear(slug) {
    if (this.counts.delete(slug)) this.render();
  }

  handleFrame(frame) {
    if (frame.type !== "message" || typeof frame.room !== "string") return;
    const hidden = this.win.document.visibilityState !== "visible";
    const isOpen = frame.room === this.controller.active.slug;
    const notify = shouldNotify({
      frame,
      me: this.me,
      isDm: this.isDm(frame.room),
      isOpen,
      hidden,
      muted: this.isMuted(frame.room),
    });
    if (!notify) return;
    // In the open room (tab hidden) the view's "not seen yet" count has it already.
    if (!isOpen) {
      this.counts.set(frame.room, (this.counts.get(frame.room) || 0) + 1);
      this.render();
    }
    if (!this.supported || this.win.Notification.permission !== "granted") return;
    const where = this.isDm(frame.room) ? frame.user.username : `${frame.user.username} in #${this.title(frame.room)}`;
    const body = frame.body.length > 180 ? `${frame.body.slice(0, 180)}…` : frame.body;
    const shown = new this.win.Notification(where, { body, tag: `kaiwa-${frame.room}` });
    shown.onclick = () => {
      this.win.focus();
      this.openRoom(frame.room);
      shown.close();
    };
  }

  total() {
    let sum = 0;
    for (const n of this.counts.values()) sum += n;
    return sum;
  }

  render() {
    const total = this.total();
    this.view.importantUnread = total;
    this.view.renderTitle();
  }

  /** The favicon shows the title's count (view.renderTitle calls this). */
  renderIcon(count) {
    if (!this.icon || this.plainIcon === null) return;
    const href = count > 0 ? badgeIcon(count) : this.plainIcon;
    if (this.icon.getAttribute("href") !== href) this.icon.setAttribute("href", href);
  }
}
