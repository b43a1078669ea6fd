// DOM building for what only the client knows (live and pending messages,
// presence); everything else is the server's markup (room_detail.html), and
// a server-rendered message is only enhanced in place (enhanceMessage).
// Everything a user typed goes in through textContent or a Text node, never
// innerHTML: a body of `<img src=x onerror=...>` is shown as those
// characters. Links become <a> only for http(s) URLs, opened in a new tab
// with rel="noopener noreferrer".

import { attachmentsElement } from "./attachmentsview.js";

const URL_PATTERN = /\bhttps?:\/\/[^\s<>"]+/gi;
// Punctuation that ends a sentence rather than a URL ("see https://x.org.").
const TRAILING_PUNCTUATION = /[.,:;!?'"\u2019\u201d]+$/;
// Messages by one author closer together than this are grouped under one header.
const GROUP_WINDOW_MS = 5 * 60 * 1000;
const AVATAR_COLOURS = 8;

/** createElement with classes, attributes and children in one call. */
export function el(tag, { cls = null, attrs = {}, text = null } = {}, ...children) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  if (text !== null) node.textContent = text;
  for (const child of children) if (child) node.append(child);
  return node;
}

/** A safe absolute http(s) URL, or null. */
export function safeHref(candidate) {
  let url;
  try {
    url = new URL(candidate);
  } catch (err) {
    return null;
  }
  return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
}

/** The body as text nodes and safe links, in a fragment. */
export function renderBody(body) {
  const fragment = document.createDocumentFragment();
  let last = 0;
  for (const match of body.matchAll(URL_PATTERN)) {
    let raw = match[0];
    // Keep a closing parenthesis only if the URL opened one (Wikipedia links).
    const trailing = raw.match(TRAILING_PUNCTUATION);
    if (trailing) raw = raw.slice(0, -trailing[0].length);
    while (raw.endsWith(")") && (raw.match(/\(/g) || []).length < (raw.match(/\)/g) || []).length) {
      raw = raw.slice(0, -1);
    }
    const href = safeHref(raw);
    if (href === null) continue;
    const start = match.index;
    if (start > last) fragment.append(document.createTextNode(body.slice(last, start)));
    fragment.append(
      el("a", { attrs: { href, target: "_blank", rel: "noopener noreferrer" }, text: raw }),
    );
    last = start + raw.length;
  }
  if (last < body.length) fragment.append(document.createTextNode(body.slice(last)));
  return fragment;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const dayTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "numeric",
  minute: "2-digit",
});
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

/** Short local time ("14:05", or "Nov 20, 14:05" if not today) and the full form for the tooltip. */
export function formatTimestamp(ts, now = new Date()) {
  const date = new Date(ts);
  if (Number.isNaN(date.getTime())) return { short: "", full: "" };
  const sameDay = date.toDateString() === now.toDateString();
  return { short: (sameDay ? timeFormat : dayTimeFormat).format(date), full: fullFormat.format(date) };
}

/** The avatar colour of a name (chat/views.py's avatar_colour() is the same hash). */
export function avatarColour(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash % AVATAR_COLOURS;
}

export function avatar(user, extra = "") {
  const name = user.username || "?";
  const initial = Array.from(name)[0].toUpperCase();
  return el("span", {
    cls: `avatar avatar--c${avatarColour(name)} ${extra}`.trim(),
    attrs: { "aria-hidden": "true" },
    text: initial,
  });
}

/**
 * One message as an <li>. `kind` is "sent", "pending" or "failed".
 * The element carries data-seq (sent) or data-client-id (pending, failed).
 */
export function messageElement(
  msg,
  { own, kind = "sent", error = null, onRetry = null, onDiscard = null, pendingText = "Sending…" },
) {
  const user = msg.user || { id: null, username: "?" };
  const classes = ["msg"];
  if (own) classes.push("msg--own");
  if (kind !== "sent") classes.push(`msg--${kind}`);
  const li = el("li", { cls: classes.join(" ") });
  if (kind === "sent") {
    li.dataset.seq = String(msg.seq);
    li.id = `m${msg.seq}`; // the admin links to a message as /rooms/<slug>/?before=<seq + 1>#m<seq>
  }
  if (msg.client_id) li.dataset.clientId = msg.client_id;
  if (msg.reply_to) li.dataset.replyTo = String(msg.reply_to);
  if (user.id !== null && user.id !== undefined) li.dataset.userId = String(user.id);
  li.dataset.ts = msg.ts || "";

  const when = formatTimestamp(msg.ts || new Date().toISOString());
  const header = el(
    "div",
    { cls: "msg__header" },
    el("span", { cls: "msg__author", text: user.username }),
    own ? el("span", { cls: "msg__you", text: "you" }) : null,
    msg.ts ? el("time", { cls: "msg__time", attrs: { datetime: msg.ts, title: when.full }, text: when.short }) : null,
  );
  const body = el("div", { cls: "msg__body" });
  body.append(renderBody(msg.body || ""));
  const content = el("div", { cls: "msg__content" }, header, body, attachmentsElement(msg.attachments));

  if (kind === "pending") {
    content.append(el("div", { cls: "msg__status", text: pendingText }));
  } else if (kind === "failed") {
    const status = el("div", { cls: "msg__status msg__status--failed", attrs: { role: "alert" } });
    status.append(el("span", { cls: "msg__error", text: error || "Not sent." }));
    if (onRetry) {
      const retry = el("button", { cls: "btn btn--small msg__retry", attrs: { type: "button" }, text: "Retry" });
      retry.addEventListener("click", onRetry);
      status.append(retry);
    }
    if (onDiscard) {
      const discard = el("button", {
        cls: "btn btn--small btn--quiet msg__discard",
        attrs: { type: "button" },
        text: "Discard",
      });
      discard.addEventListener("click", onDiscard);
      status.append(discard);
    }
    content.append(status);
  }
  li.append(avatar(user, "msg__avatar"), content);
  return li;
}

/** The message frame a server-rendered <li class="msg"> carries (templates/chat/_message.html). */
export function messageOfElement(li, room) {
  const userId = Number.parseInt(li.dataset.userId || "", 10);
  const author = li.querySelector(".msg__author");
  const body = li.querySelector(".msg__body");
  const replyTo = Number.parseInt(li.dataset.replyTo || "", 10);
  const mentions = (li.dataset.mentions || "").split(",").map((id) => Number.parseInt(id, 10)).filter(Number.isInteger);
  return {
    reply_to: Number.isInteger(replyTo) ? replyTo : null,
    mentions,
    edited_ts: li.dataset.editedTs || null,
    deleted: li.dataset.deleted === "true",
    type: "message",
    room,
    seq: Number.parseInt(li.dataset.seq || "", 10),
    ts: li.dataset.ts || null,
    user: { id: Number.isInteger(userId) ? userId : null, username: author ? author.textContent : "?" },
    body: body ? body.textContent : "",
    client_id: li.dataset.clientId || null,
  };
}

/** Give a server-rendered message what the client adds: links in the body and the local time. */
export function enhanceMessage(li) {
  const body = li.querySelector(".msg__body");
  if (body) body.replaceChildren(renderBody(body.textContent));
  const time = li.querySelector("time.msg__time");
  if (time) {
    const when = formatTimestamp(time.getAttribute("datetime"));
    if (when.short) {
      time.textContent = when.short;
      time.title = when.full;
    }
  }
}

/** Mark `li` as a continuation of `prev` (same author, within a few minutes) so its header hides. */
export function updateGrouping(li, prev) {
  if (!li || !li.classList.contains("msg")) return;
  let grouped = false;
  if (prev && prev.classList.contains("msg") && prev.dataset.userId && prev.dataset.userId === li.dataset.userId) {
    const a = Date.parse(prev.dataset.ts);
    const b = Date.parse(li.dataset.ts);
    grouped = Number.isNaN(a) || Number.isNaN(b) || Math.abs(b - a) < GROUP_WINDOW_MS;
  }
  li.classList.toggle("msg--continued", grouped);
}

/** Replace a list's children with one <li> per user, sorted by name. */
export function renderPresence(list, users, myId) {
  const sorted = Array.from(users).sort((a, b) => a.username.localeCompare(b.username));
  list.replaceChildren(
    ...sorted.map((user) =>
      el(
        "li",
        { cls: "presence__user", attrs: { "data-user-id": user.id } },
        avatar(user, "avatar--small"),
        // Another person's name is a button: it opens the conversation with them (roomnav.js).
        user.id === myId
          ? el("span", { cls: "presence__name", text: user.username })
          : el("button", {
              cls: "presence__name presence__name--action",
              attrs: { type: "button", "aria-label": `Message ${user.username}`, title: `Message ${user.username}` },
              text: user.username,
            }),
        user.id === myId ? el("span", { cls: "presence__you", text: "(you)" }) : null,
        el("span", { cls: "presence__dot", attrs: { "aria-hidden": "true" } }),
      ),
    ),
  );
}

// -- edits, deletions, replies, mentions (protocol.md 7.4) -------------------------

const QUOTE_CHARS = 120;

function actionButton(action, label) {
  return el("button", { cls: `btn btn--small btn--quiet msg__action msg__action--${action}`, attrs: { type: "button", "data-action": action }, text: label });
}

/** What a reply's quote says about the message it answers (`original` may not be loaded). */
export function quoteText(original) {
  if (!original) return "Reply to an earlier message";
  if (original.deleted) return "Reply to a deleted message";
  const name = original.user ? original.user.username : "?";
  const body = (original.body || "").replace(/\s+/g, " ").trim();
  return `${name}: ${body.length > QUOTE_CHARS ? `${body.slice(0, QUOTE_CHARS)}…` : body}`;
}

/**
 * The parts of a sent message that change after it was sent, the same for a live one and a
 * server-rendered one: state classes (deleted, mentions you), "(edited)" with the time on hover,
 * the quote of the message it answers (a button that jumps to it), and the action toolbar
 * (reply; edit your own; delete your own, or any as a moderator).
 */
export function decorateMessage(li, msg, { me, canModerate, original = null }) {
  const own = Boolean(msg.user && msg.user.id === me.id);
  const deleted = Boolean(msg.deleted);
  li.classList.toggle("msg--deleted", deleted);
  li.classList.toggle("msg--mention", !deleted && Array.isArray(msg.mentions) && msg.mentions.includes(me.id));
  const header = li.querySelector(".msg__header");
  let edited = li.querySelector(".msg__edited");
  if (msg.edited_ts && !deleted) {
    if (!edited) {
      edited = el("span", { cls: "msg__edited", text: "(edited)" });
      header.append(edited);
    }
    edited.title = `Edited ${formatTimestamp(msg.edited_ts).full}`;
  } else if (edited) edited.remove();
  const body = li.querySelector(".msg__body");
  if (deleted && body.textContent !== "") body.replaceChildren();
  if (deleted) li.querySelector(".msg__attachments")?.remove();
  let quote = li.querySelector(".msg__quote");
  if (msg.reply_to && !quote) {
    quote = el("button", { cls: "msg__quote", attrs: { type: "button", "data-target": msg.reply_to } });
    body.before(quote);
  }
  if (quote) {
    quote.textContent = quoteText(original);
    quote.title = "Show the message this one answers";
  }
  let actions = li.querySelector(".msg__actions");
  if (deleted) {
    if (actions) actions.remove();
    return;
  }
  if (!actions) {
    actions = el("div", { cls: "msg__actions", attrs: { role: "toolbar", "aria-label": "Message actions" } });
    li.querySelector(".msg__content").append(actions);
  }
  if (actions.querySelector(".msg__confirm")) return; // a deletion is being confirmed
  actions.replaceChildren(
    actionButton("reply", "Reply"),
    ...(own ? [actionButton("edit", "Edit")] : []),
    ...(own || canModerate ? [actionButton("delete", "Delete")] : []),
  );
}

/** Ask on the message itself (no blocking dialog) before deleting it. */
export function confirmDelete(li) {
  const actions = li.querySelector(".msg__actions");
  if (!actions) return;
  actions.replaceChildren(
    el(
      "span",
      { cls: "msg__confirm", attrs: { role: "group", "aria-label": "Confirm deletion" } },
      el("span", { cls: "msg__confirm-text", text: "Delete this message for everyone?" }),
      el("button", { cls: "btn btn--small btn--danger msg__action", attrs: { type: "button", "data-action": "confirm-delete" }, text: "Delete" }),
      el("button", { cls: "btn btn--small btn--quiet msg__action", attrs: { type: "button", "data-action": "cancel-delete" }, text: "Cancel" }),
    ),
  );
  actions.querySelector("[data-action='confirm-delete']").focus();
}

/** The `@name` being typed just before the caret, or null. */
export function mentionQuery(text, caret) {
  const match = text.slice(0, caret).match(/(?:^|[^\w@])@([\w.@+-]{0,150})$/);
  return match ? { query: match[1], start: caret - match[1].length - 1 } : null;
}
