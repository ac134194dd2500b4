// Unit tests of the chart point store (web/static/js/series.js), run with
// `node --test` by cmd/telehub/app/dashboard_test.go.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Series } from "../static/js/series.js";

test("raw points: history and live overlap are stored once, late points in order", () => {
  const s = new Series();
  s.load([1000, 2000, 3000], [1, 2, 3]);
  for (const [t, v] of [[3000, 3], [2000, 2], [4000, 4], [3500, 3.5], [4000, 4], [500, 0.5]]) s.add(t, v);
  assert.deepEqual(s.times, [500, 1000, 2000, 3000, 3500, 4000]);
  assert.deepEqual(s.values, [0.5, 1, 2, 3, 3.5, 4]);
});

test("non-numbers are skipped, booleans chart as 0/1", () => {
  const s = new Series();
  assert.equal(s.add(1, "heat"), false);
  assert.equal(s.add(2, true), true);
  assert.equal(s.add(3, false), true);
  assert.equal(s.bool, true);
  assert.deepEqual(s.values, [1, 0]);
});

test("history with duplicate or unordered times loads sorted and unique", () => {
  const s = new Series();
  s.load([1, 3, 2, 3, 4], [10, 30, 20, 31, null]);
  assert.deepEqual(s.times, [1, 2, 3]);
  assert.deepEqual(s.values, [10, 20, 31]);
});

test("windows: live readings merge into their window as a mean, each reading once", () => {
  const s = new Series(60000);
  s.load([0, 60000], [10, 20]);
  s.add(61000, 30); // window 60000: (20 + 30) / 2
  s.add(61000, 30); // the same reading again: ignored
  s.add(130000, 5); // a new window
  assert.deepEqual(s.times, [0, 60000, 120000]);
  assert.deepEqual(s.values, [10, 25, 5]);
});

test("trim drops points before the window", () => {
  const s = new Series();
  s.load([1, 2, 3, 4], [1, 2, 3, 4]);
  s.trim(3);
  assert.deepEqual(s.times, [3, 4]);
  assert.deepEqual(s.values, [3, 4]);
});
