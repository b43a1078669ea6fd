// The full-size picture viewer: a click on a message's thumbnail opens the
// picture in a modal dialog sized before it loads (from the attachment's width
// and height). ArrowLeft/ArrowRight go between the pictures of the same
// message, Escape closes, Tab stays inside the dialog, and focus goes back to
// the thumbnail that opened it.

function make(doc, tag, cls, attrs = {}, text = null) {
  const node = doc.createElement(tag);
  if (cls) node.className = cls;
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

/** The size (CSS px) a width x height picture takes in a viewport, never enlarged. */
export function fitBox(width, height, viewWidth, viewHeight) {
  const scale = Math.min(1, viewWidth / width, viewHeight / height);
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

export class Viewer {
  constructor(doc = document) {
    this.doc = doc;
    this.links = [];
    this.index = 0;
    this.opener = null;
    const dialog = make(doc, "dialog", "viewer", { "aria-label": "Picture", "aria-modal": "true" });
    const bar = make(doc, "div", "viewer__bar");
    this.caption = make(doc, "p", "viewer__caption", { id: "kaiwa-viewer-caption", "aria-live": "polite" });
    this.prev = make(doc, "button", "btn btn--small viewer__prev", { type: "button", "aria-label": "Previous picture" }, "‹");
    this.next = make(doc, "button", "btn btn--small viewer__next", { type: "button", "aria-label": "Next picture" }, "›");
    this.download = make(doc, "a", "btn btn--small viewer__download", { download: "" }, "Download");
    this.close = make(doc, "button", "btn btn--small viewer__close", { type: "button", "aria-label": "Close the picture" }, "Close");
    bar.append(this.caption, this.prev, this.next, this.download, this.close);
    this.image = make(doc, "img", "viewer__image", { alt: "" });
    dialog.setAttribute("aria-describedby", "kaiwa-viewer-caption");
    dialog.append(bar, this.image);
    this.dialog = dialog;
    this.prev.addEventListener("click", () => this.step(-1));
    this.next.addEventListener("click", () => this.step(1));
    this.close.addEventListener("click", () => this.dialog.close());
    // A click on the backdrop (the dialog itself, outside its content) closes it.
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close();
    });
    dialog.addEventListener("keydown", (event) => this.onKey(event));
    dialog.addEventListener("close", () => {
      this.image.removeAttribute("src");
      if (this.opener && this.opener.isConnected) this.opener.focus();
      this.opener = null;
    });
    doc.body.append(dialog);
  }

  /** Open the picture of ``link`` (an a.att--image), among the pictures of its message. */
  open(link) {
    const block = link.closest(".msg__attachments");
    this.links = block ? Array.from(block.querySelectorAll("a.att--image")) : [link];
    this.index = Math.max(0, this.links.indexOf(link));
    this.opener = link;
    this.show();
    if (!this.dialog.open) this.dialog.showModal();
    this.close.focus();
  }

  show() {
    const link = this.links[this.index];
    const name = link.querySelector("img")?.getAttribute("alt") || "";
    const width = Number(link.dataset.width) || 1;
    const height = Number(link.dataset.height) || 1;
    const view = this.doc.defaultView;
    const box = fitBox(width, height, Math.floor(view.innerWidth * 0.92), Math.floor(view.innerHeight * 0.82));
    this.image.width = box.width;
    this.image.height = box.height;
    this.image.alt = name;
    this.image.src = link.getAttribute("href");
    this.download.href = link.getAttribute("href");
    this.download.setAttribute("download", name);
    const many = this.links.length > 1;
    this.caption.textContent = many ? `${name} (${this.index + 1} of ${this.links.length})` : name;
    this.dialog.setAttribute("aria-label", `Picture: ${name}`);
    this.prev.hidden = !many;
    this.next.hidden = !many;
  }

  step(delta) {
    if (this.links.length < 2) return;
    this.index = (this.index + delta + this.links.length) % this.links.length;
    this.show();
  }

  onKey(event) {
    if (event.key === "ArrowLeft") {
      event.preventDefault();
      this.step(-1);
    } else if (event.key === "ArrowRight") {
      event.preventDefault();
      this.step(1);
    } else if (event.key === "Tab") {
      // A modal dialog makes the page inert, but Tab could still leave for the browser's own UI.
      const focusable = Array.from(this.dialog.querySelectorAll("button, a[href]")).filter((n) => !n.hidden);
      const first = focusable[0];
      const last = focusable[focusable.length - 1];
      if (event.shiftKey && this.doc.activeElement === first) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && this.doc.activeElement === last) {
        event.preventDefault();
        first.focus();
      }
    }
  }
}

/** Open thumbnails of ``list`` (the message list) in one shared viewer, made on first use. */
export function bindViewer(list, doc = document) {
  let viewer = null;
  list.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("a.att--image");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    if (viewer === null) viewer = new Viewer(doc);
    viewer.open(link);
  });
}
