// One WebSocket for every room the page shows (wire contract: docs/protocol.md).
//
// The socket knows nothing about messages: it keeps the connection alive,
// reconnects with exponential backoff and jitter, and tells its owner when it
// is open so the owner can rejoin its rooms with `since` and re-send what was
// never acked. Close codes are mapped to behaviour here and nowhere else.

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30000;
// After this many failed attempts in a row the indicator says "offline":
// the user should know this is not a blip.
const OFFLINE_AFTER_ATTEMPTS = 4;
// Application-level keep-alive: a connection that answers nothing for
// PING_INTERVAL_MS + PONG_TIMEOUT_MS is dead even if TCP has not noticed
// (laptop lid closed, Wi-Fi handover, a proxy that dropped the flow).
const PING_INTERVAL_MS = 25000;
const PONG_TIMEOUT_MS = 10000;

// 1012/1013 reconnect at once, but at most once in this long.
const IMMEDIATE_MIN_GAP_MS = 10000;

export const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_SERVICE_RESTART = 1012;
const CLOSE_TRY_AGAIN_LATER = 1013;
const CLOSE_TOO_BIG = 1009;

/** Full-jitter exponential backoff: a random delay in [d/2, d], d doubling per attempt. */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export function socketUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws`;
}

export function loginUrl(base, loc = window.location) {
  const next = loc.pathname + loc.search + loc.hash;
  const sep = base.includes("?") ? "&" : "?";
  return `${base}${sep}next=${encodeURIComponent(next)}`;
}

export class Socket {
  /**
   * @param {object} options
   * @param {string} options.url          ws:// or wss:// URL of /ws
   * @param {string} options.loginUrl     where to send the browser on 4401
   * @param {(frame: object) => void} options.onFrame   every parsed server frame
   * @param {() => void} options.onOpen   the socket is open: rejoin rooms now
   * @param {(status: string, detail: object) => void} options.onStatus
   *        "connecting" | "connected" | "reconnecting" | "offline" | "unauthenticated"
   * @param {(info: object) => void} [options.onClose]   a live connection was lost
   */
  constructor(options) {
    this.url = options.url;
    this.loginUrl = options.loginUrl;
    this.onFrame = options.onFrame;
    this.onOpen = options.onOpen;
    this.onStatus = options.onStatus;
    this.onClose = options.onClose || (() => {});
    this.ws = null;
    this.attempt = 0;
    this.status = "connecting";
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.stopped = false;
    this.nextRetryAt = 0;
    this.lastImmediateAt = 0;

    window.addEventListener("online", () => this.reconnectNow());
    window.addEventListener("offline", () => {
      // The browser knows the network is gone: say so at once, and drop a
      // socket that would otherwise look open until a ping times out.
      this.abandon("browser offline");
      this.setStatus("offline");
    });
    // A tab coming back from the background gets a fresh chance at once
    // rather than waiting out a long backoff.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && !this.isOpen()) this.reconnectNow();
    });
  }

  isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
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
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.stopped) return;
    let ws;
    try {
      ws = new WebSocket(this.url);
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
        console.warn("kaiwa: ignoring a frame that is not JSON", err);
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
      window.location.assign(loginUrl(this.loginUrl));
      return;
    }
    const now = Date.now();
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
    if (code === CLOSE_TOO_BIG) {
      console.warn("kaiwa: the server refused a frame as too large");
    }
    this.scheduleRetry();
  }

  scheduleRetry() {
    if (this.stopped) return;
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.nextRetryAt = Date.now() + delay;
    const offline = navigator.onLine === false || this.attempt > OFFLINE_AFTER_ATTEMPTS;
    this.setStatus(offline ? "offline" : "reconnecting", { retryAt: this.nextRetryAt, attempt: this.attempt });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Skip the rest of the backoff (network came back, tab became visible, user asked). */
  reconnectNow() {
    if (this.stopped || this.isOpen()) return;
    if (this.ws && this.ws.readyState === WebSocket.CONNECTING) return;
    this.attempt = 0;
    this.connect();
  }

  armPing() {
    clearTimeout(this.pingTimer);
    clearTimeout(this.pongTimer);
    this.pongTimer = null;
    this.pingTimer = setTimeout(() => {
      if (!this.send({ type: "ping" })) return;
      this.pongTimer = setTimeout(() => {
        // No answer at all: the connection is dead; closing it runs the
        // normal reconnect path.
        this.abandon("keep-alive timeout");
      }, PONG_TIMEOUT_MS);
    }, PING_INTERVAL_MS);
  }

  disarmPing() {
    clearTimeout(this.pingTimer);
    clearTimeout(this.pongTimer);
    this.pingTimer = null;
    this.pongTimer = null;
  }
}
