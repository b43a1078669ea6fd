// The quick switcher (Ctrl+K, or Cmd+K on a Mac): type to find a room, a
// direct conversation or a person, arrows to choose, Enter to open, Escape to
// close. A person opens the direct conversation with them; a name nobody
// listed can still be tried ("Message @name"). An ARIA combobox over a
// listbox, so a screen reader follows the choice.

const LIMIT = 8;

/** Rank one label against the query: 0 prefix, 1 a word starts with it, 2 contains it, -1 no match. */
export function rank(label, query) {
  const text = label.toLowerCase();
  const q = query.toLowerCase();
  if (text.startsWith(q)) return 0;
  if (text.split(/[\s\-_.]+/).some((word) => word.startsWith(q))) return 1;
  return text.includes(q) ? 2 : -1;
}

/**
 * The items matching `query`, best first (rooms before people at equal rank), at most LIMIT;
 * with a query that names nobody listed, a last "message this username" item.
 * @param {{kind: "room"|"dm"|"person", label: string, slug?: string, username?: string}[]} items
 */
export function filterItems(items, query) {
  const q = query.trim().replace(/^[@#]/, "");
  if (!q) return items.slice(0, LIMIT);
  const order = { room: 0, dm: 1, person: 2 };
  const found = items
    .map((item, index) => ({ item, index, score: rank(item.label, q) }))
    .filter((entry) => entry.score >= 0)
    .sort((a, b) => a.score - b.score || order[a.item.kind] - order[b.item.kind] || a.index - b.index)
    .map((entry) => entry.item)
    .slice(0, LIMIT);
  const known = items.some((i) => (i.kind === "person" || i.kind === "dm") && i.label.toLowerCase() === q.toLowerCase());
  if (!known && /^[\w.@+-]{1,150}$/.test(q)) found.push({ kind: "person", label: `Message @${q}`, username: q, guess: true });
  return found;
}

/** The same item once: a person who already has a conversation is listed as the conversation. */
export function mergeItems(rooms, people, me) {
  const items = [...rooms];
  const withDm = new Set(rooms.filter((r) => r.kind === "dm").map((r) => r.label.toLowerCase()));
  const seen = new Set();
  for (const name of people) {
    const key = name.toLowerCase();
    if (name === me || withDm.has(key) || seen.has(key)) continue;
    seen.add(key);
    items.push({ kind: "person", label: name, username: name });
  }
  return items;
}

export class QuickSwitcher {
  /**
   * @param {object} deps
   * @param {Document} deps.doc
   * @param {HTMLElement} deps.root
   * @param {() => object[]} deps.items       rooms, conversations and people, freshly
   * @param {(item: object) => void} deps.choose
   */
  constructor({ doc, root, items, choose }) {
    this.doc = doc;
    this.root = root;
    this.items = items;
    this.choose = choose;
    this.results = [];
    this.selected = 0;
    this.returnFocus = null;
    this.build();
  }

  build() {
    const d = this.doc;
    this.dialog = d.createElement("div");
    this.dialog.className = "qs";
    this.dialog.hidden = true;
    this.dialog.setAttribute("role", "dialog");
    this.dialog.setAttribute("aria-modal", "true");
    this.dialog.setAttribute("aria-label", "Jump to a room or person");
    this.input = d.createElement("input");
    this.input.className = "qs__input";
    this.input.type = "text";
    this.input.id = "kaiwa-qs-input";
    this.input.placeholder = "Jump to a room or person…";
    this.input.autocomplete = "off";
    this.input.spellcheck = false;
    this.input.setAttribute("role", "combobox");
    this.input.setAttribute("aria-expanded", "true");
    this.input.setAttribute("aria-controls", "kaiwa-qs-list");
    this.input.setAttribute("aria-autocomplete", "list");
    this.input.setAttribute("aria-label", "Jump to a room or person");
    this.list = d.createElement("ul");
    this.list.className = "qs__list";
    this.list.id = "kaiwa-qs-list";
    this.list.setAttribute("role", "listbox");
    this.list.setAttribute("aria-label", "Matches");
    const hint = d.createElement("p");
    hint.className = "qs__hint";
    hint.textContent = "↑↓ to choose · Enter to open · Esc to close";
    this.dialog.append(this.input, this.list, hint);
    this.backdrop = d.createElement("div");
    this.backdrop.className = "qs__backdrop";
    this.backdrop.hidden = true;
    this.root.append(this.backdrop, this.dialog);
  }

  bind() {
    this.doc.addEventListener("keydown", (event) => {
      if ((event.ctrlKey || event.metaKey) && !event.altKey && event.key.toLowerCase() === "k") {
        event.preventDefault();
        if (this.dialog.hidden) this.open();
        else this.close();
      }
    });
    this.input.addEventListener("input", () => this.render());
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        const step = event.key === "ArrowDown" ? 1 : -1;
        this.select((this.selected + step + this.results.length) % Math.max(1, this.results.length));
      } else if (event.key === "Enter") {
        event.preventDefault();
        this.pick(this.results[this.selected]);
      } else if (event.key === "Escape") {
        event.preventDefault();
        this.close();
      } else if (event.key === "Tab") {
        event.preventDefault(); // the dialog is modal: focus stays in it
      }
    });
    this.list.addEventListener("click", (event) => {
      const option = event.target.closest("[role=option]");
      if (option) this.pick(this.results[Number(option.dataset.index)]);
    });
    this.backdrop.addEventListener("click", () => this.close());
  }

  open() {
    this.returnFocus = this.doc.activeElement;
    this.dialog.hidden = false;
    this.backdrop.hidden = false;
    this.input.value = "";
    this.render();
    this.input.focus();
  }

  close() {
    this.dialog.hidden = true;
    this.backdrop.hidden = true;
    if (this.returnFocus && this.returnFocus.isConnected) this.returnFocus.focus();
  }

  render() {
    this.results = filterItems(this.items(), this.input.value);
    const d = this.doc;
    this.list.replaceChildren(
      ...this.results.map((item, index) => {
        const li = d.createElement("li");
        li.className = `qs__item qs__item--${item.kind}`;
        li.id = `kaiwa-qs-${index}`;
        li.dataset.index = String(index);
        li.setAttribute("role", "option");
        const kind = d.createElement("span");
        kind.className = "qs__kind";
        kind.textContent = item.kind === "room" ? "#" : "@";
        kind.setAttribute("aria-hidden", "true");
        const label = d.createElement("span");
        label.textContent = item.label;
        const what = d.createElement("span");
        what.className = "sr-only";
        what.textContent = item.kind === "room" ? " (room)" : item.kind === "dm" ? " (direct messages)" : " (person)";
        li.append(kind, label, what);
        return li;
      }),
    );
    this.select(0);
  }

  select(index) {
    this.selected = index;
    for (const option of this.list.children) option.setAttribute("aria-selected", String(option.id === `kaiwa-qs-${index}`));
    if (this.results.length) this.input.setAttribute("aria-activedescendant", `kaiwa-qs-${index}`);
    else this.input.removeAttribute("aria-activedescendant");
  }

  pick(item) {
    if (!item) return;
    this.close();
    this.choose(item);
  }
}
