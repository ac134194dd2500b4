// Browser check of the hub banner: opens the dashboard in Debian's headless
// Chromium (playwright-core) and waits until the banner shows what
// TELEHUB_EXPECT says: "failing" (a banner naming the durable log) or "ok"
// (no banner). cmd/telehub/app/fulldisk_test.go runs it while the hub's log
// cannot write and again once it can, with:
//
//   TELEHUB_URL, TELEHUB_TOKEN  the hub and an admin token
//   TELEHUB_EXPECT              failing | ok
//   TELEHUB_CHROMIUM            Chromium's path (default /usr/bin/chromium)

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const base = process.env.TELEHUB_URL;
const token = process.env.TELEHUB_TOKEN;
const expect = process.env.TELEHUB_EXPECT;
assert.ok(base && token && (expect === "failing" || expect === "ok"), "TELEHUB_URL, TELEHUB_TOKEN and TELEHUB_EXPECT=failing|ok are required");

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const userDir = fs.mkdtempSync(path.join(os.tmpdir(), "telehub-chromium-"));
const browser = await chromium.launchPersistentContext(userDir, {
  executablePath: process.env.TELEHUB_CHROMIUM || "/usr/bin/chromium", headless: true, args: ARGS,
});
try {
  const page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(`${base}/?token=${encodeURIComponent(token)}`);
  await page.waitForFunction(() => window.__telehub !== undefined);
  if (expect === "failing") {
    await page.waitForFunction(() => window.__telehub.hubBanner().includes("durable log failing"));
    const text = await page.locator("#hub-banner").innerText();
    assert.match(text, /no space left on device/);
    assert.ok(await page.locator("#hub-banner").isVisible());
    console.log(`ok   banner: ${text}`);
  } else {
    // The page checks /readyz when it loads: wait for that answer.
    await page.waitForFunction(() => window.__telehub.readyChecks() > 0);
    assert.equal(await page.evaluate(() => window.__telehub.hubBanner()), "");
    assert.ok(!(await page.locator("#hub-banner").isVisible()));
    console.log("ok   no banner");
  }
} finally {
  await browser.close();
  fs.rmSync(userDir, { recursive: true, force: true });
}
