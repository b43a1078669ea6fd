// The page's configuration: everything the client needs from the server
// (who the user is, where to connect, and every server limit it must obey)
// comes from the JSON the room template embeds with `json_script`
// (chat/views.py builds it from Django's settings). There are no copies of
// server settings in the JavaScript: an operator who changes
// KAIWA_DEDUP_SECONDS or KAIWA_MAX_BODY_CHARS changes what the page does.
//
// No DOM here, so tests/js/test-config.mjs runs it under Node.

export const CONFIG_ELEMENT_ID = "kaiwa-config";

class ConfigError extends Error {}

function need(object, path, type) {
  let value = object;
  for (const key of path.split(".")) value = value === null || value === undefined ? undefined : value[key];
  const ok = type === "integer" ? Number.isInteger(value) : typeof value === type;
  if (!ok || (type === "integer" && value < 0)) {
    throw new ConfigError(
      `The room page's ${CONFIG_ELEMENT_ID} JSON has no valid ${path} (a ${type}): ` +
        "render the page with chat.views.room_detail, which fills it from the settings.",
    );
  }
  return value;
}

/** A list of {id, username}: who `@` offers in the composer. */
function needUsers(object, path) {
  const value = object[path];
  if (!Array.isArray(value) || !value.every((u) => u && Number.isInteger(u.id) && typeof u.username === "string")) {
    throw new ConfigError(
      `The room page's ${CONFIG_ELEMENT_ID} JSON has no valid ${path} (a list of {id, username}): ` +
        "render the page with chat.views.room_detail.",
    );
  }
  return value.map((u) => ({ id: u.id, username: u.username }));
}

/** Validate the embedded JSON (a string) and return the client's configuration. */
export function parseConfig(text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`The room page's ${CONFIG_ELEMENT_ID} element is not JSON: ${err.message}`);
  }
  return Object.freeze({
    slug: need(data, "room.slug", "string"),
    roomName: need(data, "room.name", "string"),
    roomPrivate: need(data, "room.private", "boolean"),
    userId: need(data, "user.id", "integer"),
    username: need(data, "user.username", "string"),
    wsPath: need(data, "urls.ws", "string"),
    messagesUrl: need(data, "urls.messages", "string"),
    loginUrl: need(data, "urls.login", "string"),
    dmsUrl: need(data, "urls.dms", "string"),
    roomsUrl: need(data, "urls.rooms", "string"),
    messagesTemplate: need(data, "urls.messages_template", "string"),
    membersTemplate: need(data, "urls.members_template", "string"),
    membersPageTemplate: need(data, "urls.members_page_template", "string"),
    hasMore: need(data, "history.has_more", "boolean"),
    pageSize: need(data, "history.page_size", "integer"),
    maxBodyChars: need(data, "limits.max_body_chars", "integer"),
    maxFrameBytes: need(data, "limits.max_frame_bytes", "integer"),
    maxRooms: need(data, "limits.max_rooms_per_connection", "integer"),
    dedupSeconds: need(data, "limits.dedup_seconds", "integer"),
    typingIntervalMs: need(data, "limits.typing_interval_ms", "integer"),
    canModerate: need(data, "user.moderator", "boolean"),
    canManage: need(data, "user.can_manage", "boolean"),
    members: needUsers(data, "members"),
  });
}
