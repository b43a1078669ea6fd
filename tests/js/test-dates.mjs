// dates.js: the date separators' labels and places, in the viewer's time zone.
import { test } from "node:test";
import assert from "node:assert/strict";

import { dayLabel, separators } from "../../chat/static/chat/js/dates.js";

const now = new Date(2026, 10, 30, 9, 30); // Monday 30 November 2026, 09:30 local time

test("today, yesterday, a date this year, and the year for another year", () => {
  assert.equal(dayLabel(new Date(2026, 10, 30, 0, 1), now, "en-US"), "Today");
  assert.equal(dayLabel(new Date(2026, 10, 29, 23, 59), now, "en-US"), "Yesterday");
  assert.equal(dayLabel(new Date(2026, 10, 20, 12, 0), now, "en-US"), "Friday, November 20");
  assert.equal(dayLabel(new Date(2025, 10, 20, 12, 0), now, "en-US"), "Thursday, November 20, 2025");
  // Yesterday across a month and a year boundary.
  assert.equal(dayLabel(new Date(2025, 11, 31, 22, 0), new Date(2026, 0, 1, 8, 0), "en-US"), "Yesterday");
});

test("one separator before the first message of each local day; unsent messages count as today", () => {
  const at = (d, h) => new Date(2026, 10, d, h).toISOString();
  const got = separators([at(20, 10), at(20, 23), at(29, 1), at(30, 8), null], now, "en-US");
  assert.deepEqual(got, [
    { index: 0, label: "Friday, November 20" },
    { index: 2, label: "Yesterday" },
    { index: 3, label: "Today" },
  ]);
  assert.deepEqual(separators([], now), []);
  assert.deepEqual(separators(["not a date", at(30, 1)], now, "en-US"), [{ index: 1, label: "Today" }]);
});

test("the day is the viewer's: a UTC timestamp late in the evening is today or tomorrow depending on the zone", () => {
  const utcLate = "2026-11-29T23:30:00.000Z";
  const local = new Date(utcLate);
  const expected = local.getDate() === 30 ? "Today" : "Yesterday";
  assert.equal(dayLabel(local, now, "en-US"), expected);
});
