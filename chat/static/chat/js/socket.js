// One WebSocket for every room the page shows (wire contract: docs/protocol.md).
//
// The socket knows nothing about messages: it keeps the connection alive,
// reconnects with exponential backoff and jitter, and tells its owner when it
// is open so the owner can rejoin its rooms with `since` and re-send what was
// never acked. Close codes are mapped to behaviour here and nowhere else.
//
// No globals are touched at import or construction: the WebSocket class,
// timers, clock and randomness are injected (the page passes the browser's;
// tests/js/test-socket.mjs passes fakes), and the page's entry wires the
// browser's online/offline/visibility events to reconnectNow()/goOffline().

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30000;
// After this many failed attempts in a row the indicator says "offline":
// the user should know this is not a blip.
export const OFFLINE_AFTER_ATTEMPTS = 4;
// Application-level keep-alive: a connection that answers nothing for
// PING_INTERVAL_MS + PONG_TIMEOUT_MS is dead even if TCP has not noticed
// (laptop lid closed, Wi-Fi handover, a proxy that dropped the flow).
export const PING_INTERVAL_MS = 25000;
export const PONG_TIMEOUT_MS = 10000;

// 1012/1013 reconnect at once, but at most once in this long.
export const IMMEDIATE_MIN_GAP_MS = 10000;

export const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_SERVICE_RESTART = 1012;
const CLOSE_TRY_AGAIN_LATER = 1013;
const CLOSE_TOO_BIG = 1009;
// WebSocket.readyState values (the spec's numbers, so a fake needs no constants).
const CONNECTING = 0;
const OPEN = 1;

/** Full-jitter exponential backoff: a random delay in [d/2, d], d doubling per attempt. */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** The ws:// or wss:// URL of `path` on the page's own host. */
export function socketUrl(path, loc) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}${path}`;
}

/** The login page, coming back to where the user is now. */
export function loginUrl(base, loc) {
  const next = loc.pathname + loc.search + loc.hash;
  const sep = base.includes("?") ? "&" : "?";
  return `${base}${sep}next=${encodeURIComponent(next)}`;
}

export class Socket {
  /**
   * @param {object} options
   * @param {string} options.url          ws:// or wss:// URL of /ws
   * @param {(frame: object) => void} options.onFrame   every parsed server frame
   * @param {() => void} options.onOpen   the socket is open: rejoin rooms now
   * @param {(status: string, detail: object) => void} options.onStatus
   *        "connecting" | "connected" | "reconnecting" | "offline" | "unauthenticated"
   * @param {(info: object) => void} [options.onClose]   a connection was lost
   * @param {() => void} options.onUnauthenticated      closed with 4401: go to the login page
   * @param {Function} [options.WebSocket]   the WebSocket class
   * @param {{setTimeout: Function, clearTimeout: Function}} [options.timers]
   * @param {() => number} [options.now]
   * @param {() => number} [options.random]  in [0, 1), for the jitter
   * @param {() => boolean} [options.isOnline]   false when the browser knows it is offline
   * @param {(...args: any[]) => void} [options.warn]
   */
  constructor(options) {
    this.url = options.url;
    this.onFrame = options.onFrame;
    this.onOpen = options.onOpen;
    this.onStatus = options.onStatus;
    this.onClose = options.onClose || (() => {});
    this.onUnauthenticated = options.onUnauthenticated;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    const timers = options.timers || globalThis;
    this.setTimer = (fn, ms) => timers.setTimeout(fn, ms);
    this.clearTimer = (id) => timers.clearTimeout(id);
    this.now = options.now || Date.now;
    this.random = options.random || Math.random;
    this.isOnline = options.isOnline || (() => true);
    this.warn = options.warn || ((...args) => console.warn(...args));
    this.ws = null;
    this.attempt = 0;
    this.status = "connecting";
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.stopped = false;
    this.nextRetryAt = 0;
    this.lastImmediateAt = -Infinity;
  }

  isOpen() {
    return this.ws !== null && this.ws.readyState === OPEN;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  /** Send one frame if the socket is open; returns whether it was handed to the socket. */
  send(frame) {
    if (!this.isOpen()) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  setStatus(status, detail = {}) {
    this.status = status;
    this.onStatus(status, detail);
  }

  connect() {
    this.clearTimer(this.retryTimer);
    this.retryTimer = null;
    if (this.stopped) return;
    let ws;
    try {
      ws = new this.WebSocket(this.url);
    } catch (err) {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.setStatus("connected");
      this.armPing();
      this.onOpen();
    });
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return;
      this.armPing();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        this.warn("kaiwa: ignoring a frame that is not JSON", err);
        return;
      }
      if (frame && typeof frame === "object" && typeof frame.type === "string") this.onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.handleClose(event.code, event.reason, event.wasClean);
    });
    // "error" is always followed by "close"; nothing to do here.
  }

  /** The browser says the network is gone: say so at once, and drop a socket that would look open until a ping times out. */
  goOffline() {
    this.abandon("browser offline");
    if (!this.stopped) this.setStatus("offline", { retryAt: this.nextRetryAt, attempt: this.attempt });
  }

  /** Drop the current socket without waiting for a closing handshake that may never come. */
  abandon(reason) {
    const ws = this.ws;
    if (ws === null) return;
    this.ws = null;
    try {
      ws.close(4000, reason);
    } catch (err) {
      // Already closing: nothing more to do.
    }
    this.handleClose(1006, reason, false);
  }

  handleClose(code, reason, wasClean) {
    const wasOpen = this.status === "connected";
    this.ws = null;
    this.disarmPing();
    this.onClose({ code, reason, wasClean, wasOpen });
    if (code === CLOSE_UNAUTHENTICATED) {
      // The session is gone (logged out here or in another tab, password
      // changed, account deactivated): retrying cannot help.
      this.stopped = true;
      this.setStatus("unauthenticated");
      this.onUnauthenticated();
      return;
    }
    const now = this.now();
    if ((code === CLOSE_SERVICE_RESTART || code === CLOSE_TRY_AGAIN_LATER) && now - this.lastImmediateAt > IMMEDIATE_MIN_GAP_MS) {
      // The server asked us to come back (restart, or we read too slowly):
      // reconnect at once and resume with `since`; backoff only if that fails
      // (or if it keeps happening: a tab that cannot keep up must not spin).
      this.lastImmediateAt = now;
      this.attempt = 0;
      this.setStatus("reconnecting", { code });
      this.connect();
      this.attempt = 1;
      return;
    }
    if (code === CLOSE_TOO_BIG) this.warn("kaiwa: the server refused a frame as too large");
    this.scheduleRetry();
  }

  scheduleRetry() {
    if (this.stopped) return;
    const delay = backoffDelay(this.attempt, this.random);
    this.attempt += 1;
    this.nextRetryAt = this.now() + delay;
    const offline = !this.isOnline() || this.attempt > OFFLINE_AFTER_ATTEMPTS;
    this.setStatus(offline ? "offline" : "reconnecting", { retryAt: this.nextRetryAt, attempt: this.attempt, delay });
    this.retryTimer = this.setTimer(() => this.connect(), delay);
  }

  /** Skip the rest of the backoff (network came back, tab became visible, user asked). */
  reconnectNow() {
    if (this.stopped || this.isOpen()) return;
    if (this.ws && this.ws.readyState === CONNECTING) return;
    this.attempt = 0;
    this.connect();
  }

  armPing() {
    this.clearTimer(this.pingTimer);
    this.clearTimer(this.pongTimer);
    this.pongTimer = null;
    this.pingTimer = this.setTimer(() => {
      if (!this.send({ type: "ping" })) return;
      this.pongTimer = this.setTimer(() => {
        // No answer at all: the connection is dead; closing it runs the
        // normal reconnect path.
        this.abandon("keep-alive timeout");
      }, PONG_TIMEOUT_MS);
    }, PING_INTERVAL_MS);
  }

  disarmPing() {
    this.clearTimer(this.pingTimer);
    this.clearTimer(this.pongTimer);
    this.pingTimer = null;
    this.pongTimer = null;
  }
}
