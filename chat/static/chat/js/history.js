// History over HTTP for the active room: older pages as the user scrolls up,
// and the latest page again after a `joined.reset`. The first page is never
// fetched: it is in the server-rendered page (controller.start()).

/** The database has not caught up with the live stream yet (the worker lags): try again shortly. */
export class CatchingUp extends Error {}

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class History {
  /**
   * @param {object} deps
   * @param {import("./store.js").RoomState} deps.room   the active room
   * @param {import("./view.js").RoomView} deps.view
   * @param {(url: string) => Promise<object>} deps.fetchJson
   * @param {string} deps.messagesUrl     /api/rooms/<slug>/messages, from the page
   * @param {number} deps.pageSize        KAIWA_HISTORY_PAGE_SIZE, from the page
   * @param {(messages: object[]) => void} deps.settle   settles pending sends found in a page
   * @param {(ms: number) => Promise<void>} [deps.sleep]
   */
  constructor({ room, view, fetchJson, messagesUrl, pageSize, settle, sleep }) {
    this.room = room;
    this.view = view;
    this.fetchJson = fetchJson;
    this.messagesUrl = messagesUrl;
    this.pageSize = pageSize;
    this.settle = settle;
    this.sleep = sleep || ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.loadingOlder = false;
  }

  /**
   * Load the latest page of history after a `joined.reset`, retrying with
   * backoff: the page must reach `boundary` (the `joined.last_seq`), since the
   * live stream starts right after it; until the worker has persisted it
   * there would be a hole.
   */
  async reloadLatest(boundary) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        await this.loadLatest(boundary);
        this.view.hideHistoryError();
        return;
      } catch (err) {
        if (err instanceof HttpError && err.status === 404) {
          this.view.showHistoryError("This room does not exist, or you are not a member of it.");
          return;
        }
        if (err instanceof CatchingUp) this.view.showHistoryError("Catching up with the history…");
        else this.view.showHistoryError(`Could not load the history: ${err.message} Retrying…`);
        await this.sleep(Math.min(30000, 250 * 2 ** attempt));
      }
    }
  }

  async loadLatest(boundary) {
    const before = boundary > 0 ? `&before=${boundary + 1}` : "";
    const data = await this.fetchJson(`${this.messagesUrl}?limit=${this.pageSize}${before}`);
    const messages = Array.isArray(data.messages) ? data.messages : [];
    const added = this.room.addHistoryPage(messages, Boolean(data.has_more), { latest: true });
    this.settle(messages);
    for (const msg of added) this.view.insertMessage(msg);
    this.renderEdge();
    this.view.scrollToBottom();
    if (before && !this.room.messages.has(boundary)) throw new CatchingUp(`seq ${boundary} is not stored yet`);
  }

  async loadOlder() {
    const { room } = this;
    if (this.loadingOlder || !room.hasMore || room.oldestSeq === null) return;
    this.loadingOlder = true;
    this.view.setLoadingOlder(true);
    try {
      const data = await this.fetchJson(`${this.messagesUrl}?before=${room.oldestSeq}&limit=${this.pageSize}`);
      const messages = Array.isArray(data.messages) ? data.messages : [];
      this.view.keepPosition(() => {
        for (const msg of room.addHistoryPage(messages, Boolean(data.has_more), { latest: false })) {
          this.view.insertMessage(msg);
        }
      });
      this.view.hideHistoryError();
    } catch (err) {
      this.view.showHistoryError(`Could not load older messages: ${err.message}`);
    } finally {
      this.loadingOlder = false;
      this.view.setLoadingOlder(false);
      this.renderEdge();
    }
  }

  renderEdge() {
    const { room } = this;
    this.view.renderHistoryEdge({ hasMore: room.hasMore, historyLoaded: room.historyLoaded, oldestSeq: room.oldestSeq });
  }
}
