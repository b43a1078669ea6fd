// attachmentsview.js and viewer.js: a message's attachments as DOM, and the viewer's box.
import assert from "node:assert/strict";
import { test } from "node:test";

import { attachmentsElement, isPicture } from "../../chat/static/chat/js/attachmentsview.js";
import { fitBox } from "../../chat/static/chat/js/viewer.js";

/** Just enough of a Document for building elements: tags, classes, attributes, text, children. */
const fakeDoc = {
  createElement(tag) {
    return {
      tagName: tag.toUpperCase(),
      className: "",
      attributes: {},
      textContent: "",
      children: [],
      setAttribute(name, value) {
        this.attributes[name] = value;
      },
      append(...nodes) {
        this.children.push(...nodes);
      },
    };
  },
};

const PHOTO = {
  id: "a1",
  name: "IMG_0001.jpg",
  content_type: "image/jpeg",
  size: 2871233,
  url: "/api/attachments/a1",
  width: 3024,
  height: 4032,
  thumbnail_url: "/api/attachments/a1/thumbnail",
  thumbnail_width: 480,
  thumbnail_height: 640,
};
const PDF = { id: "b2", name: "minutes <1>.pdf", content_type: "application/pdf", size: 48000, url: "/api/attachments/b2" };

test("no attachments draw nothing", () => {
  assert.equal(attachmentsElement([], fakeDoc), null);
  assert.equal(attachmentsElement(undefined, fakeDoc), null);
});

test("a picture is a thumbnail link whose box is known before it loads: the thumbnail scaled into 320x320", () => {
  const block = attachmentsElement([PHOTO], fakeDoc);
  assert.equal(block.className, "msg__attachments");
  const [link] = block.children;
  assert.equal(link.className, "att att--image");
  assert.equal(link.attributes.href, "/api/attachments/a1");
  assert.equal(link.attributes["data-width"], "3024");
  const [img] = link.children;
  assert.equal(img.attributes.src, "/api/attachments/a1/thumbnail");
  assert.deepEqual([img.attributes.width, img.attributes.height], ["240", "320"]);
  assert.equal(img.attributes.alt, "IMG_0001.jpg");
});

test("a file is a row with its name as a download link (text, not markup) and its size", () => {
  const [row] = attachmentsElement([PDF], fakeDoc).children;
  assert.equal(row.className, "att att--file");
  const [icon, name, size] = row.children;
  assert.equal(icon.attributes["aria-hidden"], "true");
  assert.equal(name.textContent, "minutes <1>.pdf");
  assert.equal(name.attributes.download, "minutes <1>.pdf");
  assert.equal(name.attributes.href, "/api/attachments/b2");
  assert.equal(size.textContent, "47 KB");
});

test("an image without a thumbnail (or its size) is shown as a file", () => {
  assert.equal(isPicture({ ...PHOTO, thumbnail_url: undefined }), false);
  assert.equal(isPicture(PHOTO), true);
});

test("the viewer fits a picture into the window without enlarging it", () => {
  assert.deepEqual(fitBox(3024, 4032, 1000, 700), { width: 525, height: 700 });
  assert.deepEqual(fitBox(400, 300, 1000, 700), { width: 400, height: 300 });
});
