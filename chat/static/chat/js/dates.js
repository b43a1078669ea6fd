// Date separators in the message list: "Today", "Yesterday", or the date
// (with the year when it is not this year), in the viewer's time zone. The
// pure functions run under Node (tests/js/test-dates.mjs); `DaySeparators`
// keeps the list's separators in step with whatever the view inserts, by
// watching the list rather than hooking every insertion.

/** The local calendar day of a date, as a comparable key. */
export function dayKey(date) {
  return `${date.getFullYear()}-${date.getMonth() + 1}-${date.getDate()}`;
}

/** "Today", "Yesterday", "Friday, November 20", or "Friday, November 20, 2025" (another year). */
export function dayLabel(date, now = new Date(), locale = undefined) {
  if (dayKey(date) === dayKey(now)) return "Today";
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (dayKey(date) === dayKey(yesterday)) return "Yesterday";
  const options = { weekday: "long", month: "long", day: "numeric" };
  if (date.getFullYear() !== now.getFullYear()) options.year = "numeric";
  return new Intl.DateTimeFormat(locale, options).format(date);
}

/**
 * Where separators go in a list of message timestamps (ISO strings, or null
 * for a message not sent yet, which counts as now): [{index, label}], one
 * before the first message of each day.
 */
export function separators(timestamps, now = new Date(), locale = undefined) {
  const out = [];
  let previous = null;
  timestamps.forEach((ts, index) => {
    const date = ts ? new Date(ts) : now;
    if (Number.isNaN(date.getTime())) return;
    const key = dayKey(date);
    if (key !== previous) out.push({ index, label: dayLabel(date, now, locale) });
    previous = key;
  });
  return out;
}

export class DaySeparators {
  /**
   * @param {HTMLOListElement} list   the message list
   * @param {Document} doc
   * @param {() => Date} [now]
   */
  constructor(list, doc, now = () => new Date()) {
    this.list = list;
    this.doc = doc;
    this.now = now;
    this.queued = false;
    this.observer = new MutationObserver(() => this.schedule());
  }

  start() {
    this.render();
    this.observer.observe(this.list, { childList: true });
    // "Today" becomes "Yesterday" at midnight even when nothing arrives.
    setInterval(() => this.render(), 60_000);
  }

  schedule() {
    if (this.queued) return;
    this.queued = true;
    queueMicrotask(() => {
      this.queued = false;
      this.render();
    });
  }

  render() {
    const messages = Array.from(this.list.querySelectorAll(":scope > li.msg"));
    const wanted = separators(messages.map((li) => li.dataset.ts || null), this.now());
    const want = new Map(wanted.map(({ index, label }) => [messages[index], label]));
    // Already right: touch nothing (the observer would see our own changes).
    const existing = Array.from(this.list.querySelectorAll(":scope > li.chat__day"));
    const current = new Map();
    for (const sep of existing) {
      let next = sep.nextElementSibling;
      while (next && !next.classList.contains("msg")) next = next.nextElementSibling;
      current.set(next, sep.dataset.label);
    }
    if (current.size === want.size && existing.length === want.size &&
        Array.from(want).every(([li, label]) => current.get(li) === label)) {
      return;
    }
    for (const sep of existing) sep.remove();
    for (const [li, label] of want) {
      const sep = this.doc.createElement("li");
      sep.className = "chat__day";
      sep.dataset.label = label;
      // A plain list item (a list may hold nothing else): read out as the day before its messages.
      const text = this.doc.createElement("span");
      text.textContent = label;
      sep.append(text);
      const before = li.previousElementSibling;
      // Above the "New messages" line when that line starts the day.
      this.list.insertBefore(sep, before && before.classList.contains("chat__divider") ? before : li);
      li.classList.remove("msg--continued");
    }
  }
}
