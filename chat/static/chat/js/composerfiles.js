// The composer's attachments (protocol 7.3): files chosen with the Attach
// button, dropped on the conversation or pasted into the message box are
// uploaded over HTTP one after another, each with a progress bar and Cancel; a refusal
// says why and offers Retry when trying again can help. What finished
// uploading goes with the next send (controller.js asks ready()), in the order
// the uploads finished: the server lists a message's attachments in the order
// they were stored, and one upload at a time keeps the two the same.
//
// The button, the file input and the tray are made here: without JavaScript
// there is nothing to upload with, so the server's markup does not carry them.

import { csrfToken } from "./roomnav.js";
import { filesOf, formatSize, uploadFile } from "./uploads.js";

function make(doc, tag, cls, attrs = {}, text = null) {
  const node = doc.createElement(tag);
  if (cls) node.className = cls;
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

let counter = 0;
let finished = 0;

export class ComposerFiles {
  /**
   * @param {object} options
   * @param {HTMLElement} options.root       section[data-room] (its data-room is the open room)
   * @param {HTMLFormElement} options.form   the composer
   * @param {HTMLTextAreaElement} options.textarea
   * @param {HTMLElement} options.dropZone   where files may be dropped (the conversation)
   * @param {Document} [options.doc]
   * @param {() => XMLHttpRequest} [options.makeXhr]
   */
  constructor({ root, form, textarea, dropZone, doc = document, makeXhr = () => new XMLHttpRequest() }) {
    this.root = root;
    this.form = form;
    this.textarea = textarea;
    this.dropZone = dropZone;
    this.doc = doc;
    this.makeXhr = makeXhr;
    /** @type {Map<string, object>} */
    this.items = new Map();
  }

  bind() {
    const doc = this.doc;
    const row = this.form.querySelector(".chat-composer__row");
    this.input = make(doc, "input", "chat-composer__file", { type: "file", multiple: "", hidden: "", tabindex: "-1" });
    this.button = make(doc, "button", "btn btn--icon chat-composer__attach", { type: "button", "aria-label": "Attach files", title: "Attach files (or drop or paste them)" });
    this.button.append(make(doc, "span", "chat-composer__clip", { "aria-hidden": "true" }, "+"));
    this.tray = make(doc, "ul", "uploads", { "aria-label": "Files to send", hidden: "" });
    row.prepend(this.button);
    this.form.prepend(this.tray);
    this.form.append(this.input);
    // Switching rooms in place (roomswitch.js) changes data-room.
    if (typeof MutationObserver === "function") {
      new MutationObserver(() => this.renderTray()).observe(this.root, { attributes: true, attributeFilter: ["data-room"] });
    }
    this.button.addEventListener("click", () => this.input.click());
    this.input.addEventListener("change", () => {
      this.addFiles(Array.from(this.input.files || []));
      this.input.value = "";
    });
    this.textarea.addEventListener("paste", (event) => {
      const files = filesOf(event.clipboardData);
      if (files.length === 0) return; // plain text is pasted as usual
      event.preventDefault();
      this.addFiles(files);
    });
    const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
    this.dropZone.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      this.dropZone.classList.add("chat--dropping");
    });
    this.dropZone.addEventListener("dragleave", (event) => {
      if (!this.dropZone.contains(event.relatedTarget)) this.dropZone.classList.remove("chat--dropping");
    });
    this.dropZone.addEventListener("drop", (event) => {
      this.dropZone.classList.remove("chat--dropping");
      const files = filesOf(event.dataTransfer);
      if (files.length === 0) return;
      event.preventDefault();
      this.addFiles(files);
      this.textarea.focus();
    });
  }

  /** Start uploading ``files`` to the open room. */
  addFiles(files) {
    for (const file of files) {
      counter += 1;
      const item = { key: `u${counter}`, file, room: this.root.dataset.room, state: "uploading", attachment: null, handle: null, error: null };
      item.el = make(this.doc, "li", "upload", { "data-upload": item.key });
      this.items.set(item.key, item);
      this.tray.append(item.el);
      this.queue(item);
    }
    this.renderTray();
  }

  queue(item) {
    item.state = "queued";
    item.error = null;
    this.render(item);
    this.pump();
  }

  /** Start the next queued upload unless one is running. */
  pump() {
    const all = Array.from(this.items.values());
    if (all.some((i) => i.state === "uploading")) return;
    const next = all.find((i) => i.state === "queued");
    if (next) this.start(next);
  }

  start(item) {
    item.state = "uploading";
    this.render(item, 0);
    item.handle = uploadFile({
      file: item.file,
      slug: item.room,
      csrfToken: csrfToken(this.doc.cookie),
      makeXhr: this.makeXhr,
      onProgress: (sent, total) => this.progress(item, total ? sent / total : 0),
    });
    item.handle.promise.then(
      (attachment) => {
        item.state = "done";
        item.attachment = attachment;
        finished += 1;
        item.finished = finished;
        this.render(item);
        this.pump();
      },
      (refusal) => {
        if (refusal.code === "cancelled") this.remove(item.key);
        else {
          item.state = "failed";
          item.error = refusal;
          this.render(item);
        }
        this.pump();
      },
    );
  }

  progress(item, fraction) {
    const bar = item.el.querySelector("progress");
    if (bar) bar.value = Math.round(fraction * 100);
  }

  remove(key) {
    const item = this.items.get(key);
    if (!item) return;
    this.items.delete(key);
    item.el.remove();
    this.renderTray();
    this.textarea.focus();
  }

  /** Show the open room's uploads only (they can be sent only there). */
  renderTray() {
    const room = this.root.dataset.room;
    let shown = 0;
    for (const item of this.items.values()) {
      item.el.hidden = item.room !== room;
      if (!item.el.hidden) shown += 1;
    }
    this.tray.hidden = shown === 0;
  }

  render(item, percent = null) {
    const doc = this.doc;
    const name = item.file.name || "pasted file";
    item.el.className = `upload upload--${item.state}`;
    const label = make(doc, "span", "upload__name", { title: name }, name);
    const size = make(doc, "span", "upload__size", {}, formatSize(item.file.size));
    const parts = [label, size];
    if (item.state === "uploading" || item.state === "queued") {
      const bar = make(doc, "progress", "upload__progress", { max: 100, "aria-label": `Uploading ${name}` });
      if (percent !== null) bar.value = percent;
      const cancel = make(doc, "button", "btn btn--small btn--quiet upload__cancel", { type: "button", "aria-label": `Cancel the upload of ${name}` }, "Cancel");
      cancel.addEventListener("click", () => {
        if (item.state === "uploading") item.handle.cancel();
        else this.remove(item.key);
      });
      parts.push(bar, cancel);
    } else if (item.state === "done") {
      parts.push(make(doc, "span", "upload__ready", {}, "Ready to send"));
      const remove = make(doc, "button", "btn btn--small btn--quiet upload__remove", { type: "button", "aria-label": `Remove ${name}` }, "Remove");
      remove.addEventListener("click", () => this.remove(item.key));
      parts.push(remove);
    } else {
      parts.push(make(doc, "span", "upload__error", { role: "alert" }, item.error.text));
      if (item.error.retry) {
        const retry = make(doc, "button", "btn btn--small upload__retry", { type: "button", "aria-label": `Retry the upload of ${name}` }, "Retry");
        retry.addEventListener("click", () => this.queue(item));
        parts.push(retry);
      }
      const remove = make(doc, "button", "btn btn--small btn--quiet upload__remove", { type: "button", "aria-label": `Remove ${name}` }, "Remove");
      remove.addEventListener("click", () => this.remove(item.key));
      parts.push(remove);
    }
    item.el.replaceChildren(...parts);
  }

  /** Uploads still running for ``room``. */
  busy(room) {
    return Array.from(this.items.values()).some((i) => i.room === room && (i.state === "uploading" || i.state === "queued"));
  }

  /** The attachment objects uploaded to ``room`` and ready to go with a send. */
  ready(room) {
    return Array.from(this.items.values())
      .filter((i) => i.room === room && i.state === "done")
      .sort((x, y) => x.finished - y.finished)
      .map((i) => i.attachment);
  }

  /** Take the uploads a send carries out of the tray. */
  sent(attachments) {
    const ids = new Set(attachments.map((a) => a.id));
    for (const item of Array.from(this.items.values())) {
      if (item.state === "done" && ids.has(item.attachment.id)) {
        this.items.delete(item.key);
        item.el.remove();
      }
    }
    this.renderTray();
  }
}
