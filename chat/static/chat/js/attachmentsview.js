// The attachments of a message as DOM, exactly as chat/templates/chat/_attachments.html
// draws them for a server-rendered message (a Chromium test compares the two):
// pictures as thumbnails whose box is known before they load (width/height
// attributes from the attachment object, so nothing jumps), other files as
// name, size and a download link. Names go in through attributes and text, never HTML.

import { formatSize, thumbnailBox } from "./uploads.js";

// The largest box a thumbnail takes in the message list (CSS pixels); the
// template tag chat_attachments.thumb_box uses the same numbers.
export const THUMB_MAX_WIDTH = 320;
export const THUMB_MAX_HEIGHT = 320;

function make(doc, tag, cls, attrs = {}, text = null) {
  const node = doc.createElement(tag);
  node.className = cls;
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

/** Is this attachment drawn as a picture (it has a thumbnail and its size)? */
export function isPicture(a) {
  return Boolean(a.thumbnail_url && a.thumbnail_width && a.thumbnail_height && a.width && a.height);
}

/** One attachment: a thumbnail link for a picture, a file row otherwise. */
export function attachmentElement(a, doc = document) {
  if (isPicture(a)) {
    const box = thumbnailBox(a, THUMB_MAX_WIDTH, THUMB_MAX_HEIGHT);
    const link = make(doc, "a", "att att--image", {
      href: a.url,
      "data-attachment-id": a.id,
      "data-width": a.width,
      "data-height": a.height,
      "aria-label": `${a.name}: open the full-size picture`,
    });
    link.append(
      make(doc, "img", "att__thumb", {
        src: a.thumbnail_url,
        width: box.width,
        height: box.height,
        alt: a.name,
        loading: "lazy",
        decoding: "async",
      }),
    );
    return link;
  }
  const row = make(doc, "div", "att att--file", { "data-attachment-id": a.id });
  row.append(
    make(doc, "span", "att__icon", { "aria-hidden": "true" }),
    make(doc, "a", "att__name", { href: a.url, download: a.name }, a.name),
    make(doc, "span", "att__size", {}, formatSize(a.size)),
  );
  return row;
}

/** A message's attachments in one block, or null when it has none. */
export function attachmentsElement(attachments, doc = document) {
  if (!Array.isArray(attachments) || attachments.length === 0) return null;
  const block = make(doc, "div", "msg__attachments");
  for (const a of attachments) block.append(attachmentElement(a, doc));
  return block;
}
