// uploads.js: one upload with progress and cancel, refusals in words, drops and pastes, thumbnail boxes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { describeRefusal, filesOf, formatSize, thumbnailBox, uploadFile } from "../../chat/static/chat/js/uploads.js";

/** An XMLHttpRequest double: records the request; the test plays the server. */
class FakeXhr {
  constructor() {
    this.upload = {};
    this.headers = {};
    this.aborted = false;
  }
  open(method, url) {
    this.method = method;
    this.url = url;
  }
  setRequestHeader(name, value) {
    this.headers[name] = value;
  }
  send(body) {
    this.body = body;
  }
  abort() {
    this.aborted = true;
    this.onabort();
  }
  answer(status, response) {
    this.status = status;
    this.response = response;
    this.onload();
  }
}

class FakeForm {
  constructor() {
    this.fields = [];
  }
  append(name, value, filename) {
    this.fields.push([name, value, filename]);
  }
}

function start(extra = {}) {
  const xhr = new FakeXhr();
  const progress = [];
  const file = { name: "IMG_0001.HEIC", size: 3000 };
  const upload = uploadFile({
    file, slug: "team chat", csrfToken: "tok", makeXhr: () => xhr, FormDataClass: FakeForm,
    onProgress: (sent, total) => progress.push([sent, total]), ...extra,
  });
  return { xhr, progress, upload, file };
}

test("an upload posts one 'file' field with the CSRF header and resolves to A", async () => {
  const { xhr, progress, upload, file } = start();
  assert.equal(xhr.method, "POST");
  assert.equal(xhr.url, "/api/rooms/team%20chat/attachments");
  assert.equal(xhr.headers["X-CSRFToken"], "tok");
  assert.deepEqual(xhr.body.fields, [["file", file, "IMG_0001.HEIC"]]);
  xhr.upload.onprogress({ lengthComputable: true, loaded: 1500, total: 3000 });
  xhr.upload.onprogress({ lengthComputable: false, loaded: 1, total: 0 });
  const a = { id: "abc", name: "IMG_0001.jpg", content_type: "image/jpeg", size: 2000, url: "/api/attachments/abc" };
  xhr.answer(201, { attachment: a });
  assert.deepEqual(await upload.promise, a);
  assert.deepEqual(progress, [[1500, 3000]]);
});

test("cancel aborts the request and rejects as cancelled", async () => {
  const { xhr, upload } = start();
  upload.cancel();
  upload.cancel();
  assert.equal(xhr.aborted, true);
  await assert.rejects(upload.promise, { code: "cancelled", retry: true });
});

test("refusals say why, and whether retrying helps", async () => {
  const { xhr, upload } = start();
  xhr.answer(413, { error: { code: "too_large", message: "The limit is 25 MiB." } });
  await assert.rejects(upload.promise, (err) => {
    assert.equal(err.code, "too_large");
    assert.equal(err.retry, false);
    assert.match(err.text, /too large.*25 MiB/);
    return true;
  });
  assert.equal(describeRefusal(415, { error: { code: "unsupported_type", message: "" } }).retry, false);
  assert.equal(describeRefusal(429, { error: { code: "rate_limited", message: "wait 3 s" } }).retry, true);
  assert.equal(describeRefusal(503, { error: { code: "unavailable", message: "" } }).retry, true);
  assert.equal(describeRefusal(0, null).code, "network");
  assert.match(describeRefusal(502, null).text, /HTTP 502/);
});

test("a network failure rejects with a retryable error", async () => {
  const { xhr, upload } = start();
  xhr.onerror();
  await assert.rejects(upload.promise, { code: "network", retry: true });
});

test("drops and pastes give their files only", () => {
  const a = { name: "a.png" };
  const b = { name: "b.pdf" };
  assert.deepEqual(filesOf({ files: [a, b], items: [] }), [a, b]);
  const items = [
    { kind: "string", getAsFile: () => null },
    { kind: "file", getAsFile: () => a },
  ];
  assert.deepEqual(filesOf({ files: [], items }), [a]);
  assert.deepEqual(filesOf(null), []);
});

test("a thumbnail's box is known before it loads and never enlarged", () => {
  const photo = { thumbnail_width: 480, thumbnail_height: 640 };
  assert.deepEqual(thumbnailBox(photo, 320, 320), { width: 240, height: 320 });
  assert.deepEqual(thumbnailBox({ thumbnail_width: 100, thumbnail_height: 50 }, 320, 320), { width: 100, height: 50 });
  assert.equal(thumbnailBox({ name: "report.pdf" }, 320, 320), null);
});

test("sizes read like people write them", () => {
  assert.equal(formatSize(912), "912 B");
  assert.equal(formatSize(48 * 1024), "48 KB");
  assert.equal(formatSize(3.4 * 1024 * 1024), "3.4 MB");
});
