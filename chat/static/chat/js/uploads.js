// Attachments in the browser, without the DOM: uploading one file with progress
// and cancel, what a refusal means for the user, the files of a drop or a paste,
// and the box a thumbnail takes before it loads (protocol.md 7.3).
//
// Not wired into the room page yet: the page's composer calls these.

/** Files of a drop or a paste (a DataTransfer), in order; other items (text, links) are left out. */
export function filesOf(dataTransfer) {
  if (!dataTransfer) return [];
  if (dataTransfer.files && dataTransfer.files.length) return Array.from(dataTransfer.files);
  const files = [];
  for (const item of Array.from(dataTransfer.items || [])) {
    if (item.kind === "file") {
      const file = item.getAsFile();
      if (file) files.push(file);
    }
  }
  return files;
}

const REFUSALS = {
  too_large: "The file is too large for this server.",
  unsupported_type: "This kind of file cannot be shared here.",
  bad_image: "The picture could not be read, or is too big.",
  rate_limited: "You are uploading too fast.",
  unavailable: "The server cannot store files right now.",
  forbidden: "Your session has ended: log in again.",
  not_found: "This room is not available any more.",
};

/**
 * What to tell the user about a failed upload: ``{code, text, retry}``.
 * ``body`` is the parsed JSON answer (or null); ``retry`` says whether trying
 * again can help (never for a file that is too large or of a refused type).
 */
export function describeRefusal(status, body) {
  const code = body && body.error && typeof body.error.code === "string" ? body.error.code : status === 0 ? "network" : "error";
  const detail = body && body.error && typeof body.error.message === "string" ? body.error.message : "";
  if (code === "network") return { code, text: "The upload was interrupted: check your connection.", retry: true };
  const text = REFUSALS[code] || `The upload failed (HTTP ${status}).`;
  const retry = !["too_large", "unsupported_type", "bad_image", "forbidden", "not_found"].includes(code);
  return { code, text: detail ? `${text} ${detail}` : text, retry };
}

/**
 * Upload ``file`` to ``/api/rooms/<slug>/attachments``. Returns
 * ``{promise, cancel}``: the promise resolves to the attachment object ``A``
 * or rejects with ``{code, text, retry}`` (``code`` "cancelled" after
 * ``cancel()``). ``onProgress(sent, total)`` follows the request body.
 * ``makeXhr`` is injected (``() => new XMLHttpRequest()`` in the page).
 */
export function uploadFile({ file, slug, csrfToken, makeXhr, onProgress = () => {}, FormDataClass = FormData }) {
  const xhr = makeXhr();
  let cancelled = false;
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", `/api/rooms/${encodeURIComponent(slug)}/attachments`);
    xhr.setRequestHeader("X-CSRFToken", csrfToken);
    xhr.responseType = "json";
    if (xhr.upload) {
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) onProgress(event.loaded, event.total);
      };
    }
    xhr.onload = () => {
      const body = xhr.response;
      if (xhr.status === 201 && body && body.attachment) resolve(body.attachment);
      else reject(describeRefusal(xhr.status, body));
    };
    xhr.onerror = () => reject(describeRefusal(0, null));
    xhr.onabort = () => reject({ code: "cancelled", text: "Upload cancelled.", retry: true });
    const form = new FormDataClass();
    form.append("file", file, file.name);
    xhr.send(form);
  });
  return {
    promise,
    cancel() {
      if (!cancelled) {
        cancelled = true;
        xhr.abort();
      }
    },
  };
}

/**
 * The box (CSS pixels) a picture's thumbnail takes in the message list, known
 * before the image loads, so nothing jumps when it arrives: the thumbnail's
 * size scaled to fit ``maxWidth`` x ``maxHeight``, never enlarged.
 */
export function thumbnailBox(attachment, maxWidth, maxHeight) {
  const w = attachment.thumbnail_width;
  const h = attachment.thumbnail_height;
  if (!w || !h) return null;
  const scale = Math.min(1, maxWidth / w, maxHeight / h);
  return { width: Math.max(1, Math.round(w * scale)), height: Math.max(1, Math.round(h * scale)) };
}

/** A file size for people: "912 B", "48 KB", "3.4 MB". */
export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}
