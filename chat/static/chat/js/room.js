// The room page's entry: loaded as <script type="module"> by room_detail.html.
// It reads the page's configuration (config.js), binds the view to the
// server-rendered markup (view.js), and connects the controller (controller.js)
// to the socket (socket.js) and the browser's storage and events. Nothing
// else happens here.

import { CONFIG_ELEMENT_ID, parseConfig } from "./config.js";
import { RoomController } from "./controller.js";
import { DaySeparators } from "./dates.js";
import { HttpError } from "./history.js";
import { Notifier } from "./notify.js";
import { People } from "./people.js";
import { QuickSwitcher, mergeItems } from "./switcher.js";
import { Socket, loginUrl, socketUrl } from "./socket.js";
import { PendingSends, ReadMarks, resendWindowMs } from "./store.js";
import { RoomNav } from "./roomnav.js";
import { RoomSwitch } from "./roomswitch.js";
import { RoomView } from "./view.js";

async function fetchJson(url, config) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (response.status === 401 || response.status === 403) {
    window.location.assign(loginUrl(config.loginUrl, window.location));
    throw new HttpError(response.status, "Your session has ended. Log in again.");
  }
  if (!response.ok) {
    let detail = "";
    try {
      const body = await response.json();
      detail = (body.error && (body.error.message || body.error)) || body.detail || body.message || "";
    } catch (err) {
      detail = "";
    }
    throw new HttpError(response.status, typeof detail === "string" && detail ? detail : `The server answered ${response.status}.`);
  }
  return response.json();
}

function main() {
  // data-live="false" is the archive of older pages: plain HTML, no socket.
  const root = document.querySelector("section[data-room][data-live='true']");
  const script = document.getElementById(CONFIG_ELEMENT_ID);
  if (!root || !script) return;
  const config = parseConfig(script.textContent);
  const me = { id: config.userId, username: config.username };
  const visible = () => document.visibilityState === "visible";

  const view = new RoomView(root, { me, roomName: config.roomName, canModerate: config.canModerate });
  const controller = new RoomController({
    config,
    view,
    pending: new PendingSends(config.userId, {
      storage: window.sessionStorage,
      resendWindowMs: resendWindowMs(config.dedupSeconds),
    }),
    marks: new ReadMarks(config.userId, window.localStorage),
    fetchJson: (url) => fetchJson(url, config),
    visible,
  });
  const nav = new RoomNav({
    controller,
    sidebar: view.sidebar,
    root,
    config,
    fetch: (url, init) => window.fetch(url, init),
    go: (url) => window.location.assign(url),
    cookie: () => document.cookie,
    openRoom: (slug) => switcher.open(slug, { push: true }),
  });
  const switcher = new RoomSwitch({
    controller,
    view,
    config,
    root,
    win: window,
    describe: (slug) => nav.describe(slug),
  });
  const notifier = new Notifier({
    controller,
    view,
    root,
    win: window,
    storage: window.localStorage,
    isDm: (slug) => nav.describe(slug).kind === "dm",
    title: (slug) => nav.describe(slug).title,
    openRoom: (slug) => switcher.open(slug, { push: true }),
  });
  const people = new People({
    controller,
    root,
    info: controller.info,
    isPrivate: (slug) => nav.describe(slug).private,
  });
  nav.onRenamed = () => switcher.renamed();
  switcher.onOpen.push((slug) => {
    people.render();
    notifier.clear(slug);
    notifier.renderMute();
  });
  const quick = new QuickSwitcher({
    doc: document,
    root,
    items: () => mergeItems(nav.switcherRooms(), nav.knownPeople(), config.username),
    choose: (item) => {
      if (item.slug) switcher.open(item.slug, { push: true });
      else nav.openDm(item.username);
    },
  });
  let opened = false;
  const socket = new Socket({
    url: socketUrl(config.wsPath, window.location),
    onFrame: (frame) => {
      controller.handleFrame(frame);
      nav.handleFrame(frame);
      notifier.handleFrame(frame);
      if ((frame.type === "joined" || frame.type === "presence") && frame.room === controller.active.slug) people.render();
    },
    onOpen: () => {
      controller.joinAll();
      // Room events sent while the socket was down are lost: read the room list again.
      if (opened) nav.resync((url) => fetchJson(url, config));
      opened = true;
    },
    onStatus: (status, detail) => controller.renderStatus(status, detail),
    onClose: () => controller.onSocketClosed(),
    onUnauthenticated: () => window.location.assign(loginUrl(config.loginUrl, window.location)),
    isOnline: () => navigator.onLine !== false,
  });
  controller.attach(socket);

  view.bind({
    submit: () => controller.submit(),
    input: () => controller.onInput(),
    retry: (clientId) => controller.retry(clientId),
    discard: (clientId) => controller.discard(clientId),
    loadOlder: () => controller.loadOlder(),
    nearTop: () => controller.loadOlder(),
    retryNow: () => socket.reconnectNow(),
    typingExpired: () => controller.renderTyping(),
    readToBottom: () => controller.markActiveRead(),
    editLast: () => controller.editLast(),
    edit: (seq) => controller.edit(seq),
    reply: (seq) => controller.reply(seq),
    deleteMessage: (seq) => controller.deleteMessage(seq),
    cancelContext: () => controller.cancelContext(),
    messageOf: (seq) => controller.messageOf(seq),
    mentionCandidates: () => controller.mentionCandidates(),
  });
  window.addEventListener("online", () => socket.reconnectNow());
  window.addEventListener("offline", () => socket.goOffline());
  // A tab coming back from the background gets a fresh chance at once
  // rather than waiting out a long backoff.
  document.addEventListener("visibilitychange", () => {
    if (visible() && !socket.isOpen()) socket.reconnectNow();
  });
  window.addEventListener("storage", (event) => controller.onStorage(event.key));

  new DaySeparators(view.list, document).start();
  nav.bind();
  switcher.bind();
  notifier.bind();
  quick.bind();
  controller.start();
  socket.start();
  window.kaiwa = controller; // handy from the devtools console
}

main();
