// Browser test of the dashboard: Debian's headless Chromium driven by
// playwright-core against a running hub. cmd/telehub/app/dashboard_test.go
// starts the hub and a simulated fleet and runs this script with:
//
//   TELEHUB_URL         the hub's base URL, e.g. http://127.0.0.1:40123
//   TELEHUB_TOKEN       an admin token
//   TELEHUB_LAB_DEVICE  a thermostat with 15 minutes of history that keeps publishing
//   TELEHUB_CMD_DEVICE  a simulated thermostat that executes commands
//   TELEHUB_BULK        how many extra (silent) devices were registered
//   TELEHUB_SCREENSHOTS a directory for dashboard.png and dashboard-device.png (optional)
//
// Parts whose API this hub does not have yet (commands, alerts) are
// reported as skipped. The script exits non-zero on the first failure.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const base = process.env.TELEHUB_URL;
const token = process.env.TELEHUB_TOKEN;
const lab = process.env.TELEHUB_LAB_DEVICE;
const cmdDevice = process.env.TELEHUB_CMD_DEVICE;
const bulk = Number(process.env.TELEHUB_BULK || 0);
const shots = process.env.TELEHUB_SCREENSHOTS || "";
assert.ok(base && token && lab && cmdDevice, "TELEHUB_URL, TELEHUB_TOKEN, TELEHUB_LAB_DEVICE and TELEHUB_CMD_DEVICE are required");

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

let passed = 0, skipped = 0;
const step = async (name, f) => {
  const t0 = Date.now();
  try {
    await f();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.stack || e}`);
    throw e;
  }
};
const skip = (name, why) => { skipped++; console.log(`skip ${name}: ${why}`); };

async function api(method, p, body) {
  const res = await fetch(base + p, { method, headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" }, body: body && JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const userDir = fs.mkdtempSync(path.join(os.tmpdir(), "telehub-chromium-"));
const browser = await chromium.launchPersistentContext(userDir, {
  executablePath: process.env.TELEHUB_CHROMIUM || "/usr/bin/chromium",
  headless: true, args: ARGS, viewport: { width: 1400, height: 900 }, colorScheme: "light",
});
const errors = [];
// Script errors, and anything the Content-Security-Policy refused (the hub
// sends a strict one: no inline script or style).
const watch = p => {
  p.on("pageerror", e => errors.push(e.message));
  p.on("console", m => { if (m.type() === "error" && /Content Security Policy/i.test(m.text())) errors.push(m.text()); });
};
const page = browser.pages()[0] || await browser.newPage();
watch(page);
page.setDefaultTimeout(15000);

try {
  await step("the page loads with a token and removes it from the address bar", async () => {
    await page.goto(`${base}/?token=${encodeURIComponent(token)}`);
    await page.waitForFunction(() => window.__telehub?.connection() === "live");
    assert.ok(!page.url().includes("token="), "the token left the URL: " + page.url());
    await page.fill('input[type="search"]', lab);
    await page.waitForSelector(`.row[data-device="${lab}"] .reading[data-field="temperature"]`);
    await page.fill('input[type="search"]', "");
  });

  await step(`the fleet shows every device and renders only the rows in view (${bulk} extra devices)`, async () => {
    const total = (await api("GET", "/api/v1/devices?limit=10000")).body.devices.length;
    await page.waitForFunction(n => document.querySelector('[data-stat="devices"]').textContent.replace(/\D/g, "") === String(n), total);
    const rows = await page.evaluate(() => window.__telehub.renderedRows());
    assert.ok(rows > 5 && rows < 80, `rendered ${rows} rows for ${total} devices`);
    await page.fill('input[type="search"]', lab);
    await page.waitForFunction(() => window.__telehub.renderedRows() === 1);
    await page.fill('input[type="search"]', "");
    await page.waitForFunction(n => window.__telehub.renderedRows() > 5, total);
  });

  await step("live values change in the fleet view", async () => {
    const sel = `.row[data-device="${cmdDevice}"] .reading[data-field="temperature"] b`;
    await page.fill('input[type="search"]', "sim-");
    const first = await page.textContent(sel);
    const seq = await page.evaluate(() => window.__telehub.lastSeq());
    await page.waitForFunction(([s, v]) => document.querySelector(s)?.textContent !== v, [sel, first]);
    assert.ok(await page.evaluate(() => window.__telehub.lastSeq()) > seq);
    await page.fill('input[type="search"]', "");
  });

  if (shots) { // live devices first, as an operator would sort them
    await page.fill('input[type="search"]', "");
    await page.click('button[data-sort="status"]');
    await page.evaluate(() => { document.activeElement.blur(); document.querySelector(".viewport").scrollTo(0, 0); });
    await page.waitForTimeout(1200); // let the "fresh reading" highlight settle for the picture
    await page.screenshot({ path: path.join(shots, "dashboard.png") });
  }

  await step("the device view charts history with live points appended", async () => {
    await page.goto(`${base}/#/devices/${encodeURIComponent(lab)}`);
    await page.click('[data-range="15m"]');
    await page.waitForFunction(() => window.__telehub.chartsReady() && (window.__telehub.series("temperature")?.times.length || 0) > 100);
    const uplot = await page.evaluate(() => !!window.uPlot);
    assert.ok(uplot, "uPlot was not loaded: is web/static/vendor/ built (make build)?");
    assert.ok(await page.locator('.chart[data-field="temperature"] canvas').count() > 0, "no chart canvas");
    const n = (await page.evaluate(() => window.__telehub.series("temperature"))).times.length;
    await page.waitForFunction(k => window.__telehub.series("temperature").times.length > k + 2, n);
  });

  await step("after a dropped connection the chart resumes with no gap and no duplicate", async () => {
    const before = await page.evaluate(() => ({ connects: window.__telehub.connects(), t: Date.now() }));
    await page.evaluate(() => window.__telehub.dropConnection(1500));
    await page.waitForFunction(() => window.__telehub.connection() === "reconnecting");
    await page.waitForSelector('#conn[data-state="reconnecting"]');
    await page.waitForFunction(c => window.__telehub.connection() === "live" && window.__telehub.connects() > c, before.connects);
    const after = Date.now();
    // Wait for points newer than the reconnect, so the drop lies inside the compared window.
    await page.waitForFunction(t => { const s = window.__telehub.series("temperature"); return s.times[s.times.length - 1] > t + 1000; }, after);
    const got = await page.evaluate(() => window.__telehub.series("temperature"));
    for (let i = 1; i < got.times.length; i++) assert.ok(got.times[i] > got.times[i - 1], `times not strictly increasing at ${i}: duplicate or disorder`);
    const during = got.times.filter(t => t > before.t + 200 && t < after - 200).length;
    assert.ok(during > 0, "no point from while the connection was down");
    const hist = (await api("GET", `/api/v1/devices/${encodeURIComponent(lab)}/telemetry?fields=temperature&from=-15m&to=now`)).body.series[0];
    const lo = Math.max(got.times[0], hist.times[0]);
    const hi = Math.min(got.times[got.times.length - 1], hist.times[hist.times.length - 1]);
    const inWin = ts => ts.filter(t => t >= lo && t <= hi);
    const pageSet = new Set(inWin(got.times)), histSet = new Set(inWin(hist.times));
    const missing = [...histSet].filter(t => !pageSet.has(t)), extra = [...pageSet].filter(t => !histSet.has(t));
    assert.ok(missing.length === 0 && extra.length === 0,
      `the chart differs from the stored history in [${lo}, ${hi}] (drop at ${before.t}, back at ${after}): missing ${JSON.stringify(missing.slice(0, 10))} (${missing.length}), extra ${JSON.stringify(extra.slice(0, 10))} (${extra.length}); page has ${got.times.length} points from ${got.times[0]}, history ${hist.times.length} from ${hist.times[0]}`);
    console.log(`     ${inWin(got.times).length} points compared, ${during} from the outage, ${await page.evaluate(() => window.__telehub.duplicates())} replayed duplicates dropped`);
  });

  // Commands, where the hub has them.
  const cmds = await api("GET", `/api/v1/devices/${encodeURIComponent(cmdDevice)}/commands`);
  if (cmds.status === 404) {
    skip("a command is sent from the page and reaches succeeded", "this hub has no commands API");
  } else {
    await step("a command is sent from the page and reaches succeeded", async () => {
      await page.goto(`${base}/#/devices/${encodeURIComponent(cmdDevice)}`);
      await page.waitForSelector('[data-command="set_setpoint"]');
      await page.click('[aria-label="Raise setpoint"]');
      await page.click('[data-command="set_setpoint"]');
      await page.waitForSelector('.list li[data-status] .pill');
      await page.waitForSelector('.list li[data-status="succeeded"]', { timeout: 20000 });
      const name = await page.textContent('.list li[data-status="succeeded"] b');
      assert.equal(name, "set_setpoint");
    });
  }

  // Alerts, where the hub has them: a rule that fires at once on the lab thermostat.
  const rules = await api("GET", "/api/v1/rules");
  if (rules.status === 404) {
    skip("an alert fires, shows in the badge and is acknowledged", "this hub has no alerts API");
  } else {
    await step("an alert fires, shows in the badge and is acknowledged", async () => {
      const r = await api("POST", "/api/v1/rules", { name: "lab too warm", scope: { device: lab }, condition: { kind: "threshold", field: "temperature", op: ">", value: -50 }, severity: "critical" });
      assert.ok(r.status === 201 || r.status === 200, "create rule: " + JSON.stringify(r));
      let firing = [];
      for (let i = 0; i < 100 && !firing.length; i++) {
        const list = (await api("GET", "/api/v1/alerts?state=firing")).body;
        firing = list.alerts || [];
        if (!firing.length) await new Promise(res => setTimeout(res, 100));
      }
      assert.ok(firing.length > 0, "the hub fired no alert for rule " + JSON.stringify(r.body));
      await page.goto(`${base}/#/alerts`);
      await page.waitForSelector("#alert-badge:not([hidden])");
      const btn = page.locator(`.row-a[data-state="firing"] button[data-ack]`).first();
      await btn.click();
      await page.waitForFunction(() => !document.querySelector(".row-a[data-state='firing'] button[data-ack]"));
      await page.waitForSelector("#alert-badge[hidden]", { state: "attached" });
      const list = (await api("GET", "/api/v1/alerts?state=firing")).body;
      const alerts = Array.isArray(list) ? list : list.alerts;
      assert.ok(alerts.length > 0 && alerts.every(a => a.acked_at), "the hub did not record the acknowledgement");
    });
  }

  if (shots) {
    await step("screenshots of the device view, dark", async () => {
      const dark = await browser.newPage();
      await dark.emulateMedia({ colorScheme: "dark" });
      await dark.setViewportSize({ width: 1400, height: 1000 });
      await dark.goto(`${base}/#/devices/${encodeURIComponent(lab)}`);
      await dark.click('[data-range="15m"]');
      await dark.waitForFunction(() => window.__telehub.chartsReady() && (window.__telehub.series("temperature")?.times.length || 0) > 100);
      await dark.waitForTimeout(500);
      await dark.screenshot({ path: path.join(shots, "dashboard-device.png") });
      await dark.close();
    });
  }

  // Last: the browser context keeps the viewer's token from here on.
  await step("a viewer's token gets a read-only page: no command controls, no state editing", async () => {
    const created = await api("POST", "/api/v1/tokens", { name: "wall screen", role: "viewer" });
    assert.equal(created.status, 201, JSON.stringify(created));
    const viewer = await browser.newPage();
    watch(viewer);
    await viewer.goto(`${base}/?token=${encodeURIComponent(created.body.secret)}#/devices/${encodeURIComponent(cmdDevice)}`);
    await viewer.waitForSelector('body[data-role="viewer"]', { state: "attached" });
    await viewer.waitForSelector(".viewer-only", { state: "visible" });
    await viewer.waitForSelector('[data-command="set_setpoint"]', { state: "attached" });
    assert.equal(await viewer.isVisible('[data-command="set_setpoint"]'), false, "a viewer is offered the setpoint command");
    assert.equal(await viewer.isVisible('button:has-text("Edit desired")'), false, "a viewer is offered to edit the desired state");
    assert.equal(await viewer.textContent("#role"), "read-only");
    await viewer.close();
  });

  await step("no script error on the page, nothing refused by the Content-Security-Policy", async () => {
    assert.deepEqual(errors, []);
  });
} finally {
  await browser.close();
  fs.rmSync(userDir, { recursive: true, force: true });
}
console.log(`dashboard: ${passed} steps ok, ${skipped} skipped`);
