// What the page knows about each room beyond its messages: its members, who
// "@" offers, and what the user may do there (delete anyone's message, manage
// its members). The page embeds these for the room it was loaded for
// (config.js); a room opened in place reads its own from
// /api/rooms/<slug>/members, once, so the rules stay the server's
// (chat.selectors.room_rights), never a copy in the browser.
//
// No DOM here, so tests/js/test-roominfo.mjs runs it under Node.

/** Nothing is known (the API could not be reached): the least the user may do. */
export const UNKNOWN = Object.freeze({ members: [], mentionable: [], moderator: false, canManage: false, known: false });

/** The API's answer as the page uses it; anything missing or malformed counts as "no". */
export function infoOf(data) {
  const users = (value) =>
    Array.isArray(value)
      ? value.filter((u) => u && Number.isInteger(u.id) && typeof u.username === "string").map((u) => ({ id: u.id, username: u.username }))
      : [];
  return Object.freeze({
    members: users(data && data.members),
    mentionable: users(data && data.mentionable),
    moderator: Boolean(data && data.moderator === true),
    canManage: Boolean(data && data.can_manage === true),
    known: true,
  });
}

export class RoomInfo {
  /**
   * @param {object} deps
   * @param {(url: string) => Promise<object>} deps.fetchJson
   * @param {(slug: string) => string} deps.url   the room's /api/rooms/<slug>/members
   * @param {string} deps.slug   the room the page was loaded for
   * @param {object} deps.seed   its facts, from the page: {members, mentionable, moderator, can_manage}
   */
  constructor({ fetchJson, url, slug, seed }) {
    this.fetchJson = fetchJson;
    this.url = url;
    this.known = new Map(); // slug -> info
    this.loading = new Map(); // slug -> Promise<info>
    // The page embeds who "@" offers and the rights, not the member list: that one is still fetched.
    this.seed = { slug, info: infoOf({ ...seed, members: [] }) };
  }

  /** What is known about `slug` now (the page's own room: its embedded facts), or null. */
  get(slug) {
    if (this.known.has(slug)) return this.known.get(slug);
    return slug === this.seed.slug ? this.seed.info : null;
  }

  /** Whether the member list of `slug` has been read from the API. */
  has(slug) {
    return this.known.has(slug);
  }

  /** Read `slug`'s facts once; a failure is remembered as UNKNOWN so the page still works. */
  load(slug) {
    if (this.known.has(slug)) return Promise.resolve(this.known.get(slug));
    if (!this.loading.has(slug)) {
      const pending = this.fetchJson(this.url(slug))
        .then((data) => infoOf(data))
        .catch(() => this.get(slug) || UNKNOWN)
        .then((info) => {
          this.known.set(slug, info);
          this.loading.delete(slug);
          return info;
        });
      this.loading.set(slug, pending);
    }
    return this.loading.get(slug);
  }

  /** A room's membership changed (room_updated): read it again next time. */
  forget(slug) {
    this.known.delete(slug);
  }
}
