// The device view: latest readings, a chart per field (history plus live
// points), and the panels that exist in this hub version: commands,
// desired/reported state, recent alerts.

import { h, fmtValue, unit, fieldOrder, ago, fmtTime, toMs, debounce } from "./util.js";
import { enc } from "./api.js";
import { Series, num } from "./series.js";
import { Chart, loadChartLibrary } from "./charts.js";
import { CommandPanel } from "./commands.js";
import { StatePanel } from "./state-panel.js";
import { alertRow } from "./alerts-view.js";

// Time ranges of the picker: raw points up to an hour, windows beyond.
export const RANGES = [
  { key: "15m", ms: 15 * 60e3, every: 0 },
  { key: "1h", ms: 60 * 60e3, every: 0 },
  { key: "6h", ms: 6 * 3600e3, every: 30e3 },
  { key: "24h", ms: 24 * 3600e3, every: 120e3 },
  { key: "7d", ms: 7 * 86400e3, every: 900e3 },
];
let rangeKey = "1h"; // kept across devices
const RECENT_MS = 30000;
const RECENT_MAX = 5000;

/** DeviceView shows one device; mount returns a function that unmounts it. */
export class DeviceView {
  constructor(ctx, id) {
    this.ctx = ctx;
    this.id = id;
    this.series = new Map(); // field -> Series
    this.charts = new Map(); // field -> Chart
    this.uPlot = undefined; // undefined: loading; null: not built in
    this.loadingHistory = false;
    // Live readings of the last RECENT_MS, merged again into every history
    // answer: the store may not hold the newest readings yet when it answers
    // (the writer flushes in batches), and readings that arrive while a
    // request is in flight must not be lost either.
    this.recent = [];
    this.histGen = 0;
    this.frame = 0;
    this.dirtyCharts = new Set();
    this.dirtyHead = true;
    this.offs = [];
    this.reloadSoon = debounce(() => this.loadHistory(), 800);
  }

  get range() { return RANGES.find(r => r.key === rangeKey) || RANGES[1]; }

  window() {
    const to = Date.now();
    return [to - this.range.ms, to];
  }

  mount(root) {
    const { ctx, id } = this;
    const d = ctx.fleet.devices.get(id);
    this.titleEl = h("h1", null, id);
    this.typeEl = h("span", { class: "type" });
    this.statusEl = h("span", { class: "status" }, h("i"), h("span"));
    this.labelsEl = h("span");
    this.metaEl = h("div", { class: "meta" });
    this.tilesEl = h("div", { class: "tiles" });
    this.chartsEl = h("div", { class: "charts" });
    this.chartNote = h("div", { class: "notice", hidden: true });
    const seg = h("div", { class: "seg", role: "group", "aria-label": "Time range" },
      ...RANGES.map(r => h("button", { type: "button", "aria-pressed": String(r.key === rangeKey), dataset: { range: r.key }, onclick: e => {
        rangeKey = r.key;
        for (const b of seg.children) b.setAttribute("aria-pressed", String(b === e.currentTarget));
        this.loadHistory();
      } }, r.key)));
    this.side = h("div", { class: "side" });
    this.alertsCard = h("section", { class: "card", hidden: true },
      h("header", null, h("h2", null, "Recent alerts")), this.alertsList = h("ul", { class: "list" }));
    this.detailsCard = h("section", { class: "card" }, h("header", null, h("h2", null, "Connection")), this.detailsEl = h("div", { class: "body kv" }));
    this.notFound = h("div", { class: "notice", hidden: true });

    root.replaceChildren(
      h("div", { class: "crumbs" }, h("a", { href: "#/" }, "← Fleet")),
      this.notFound,
      h("div", { class: "dev-head" }, this.titleEl, this.typeEl, this.statusEl, this.labelsEl, this.metaEl),
      this.tilesEl,
      h("div", { class: "dev-grid" },
        h("section", { class: "card", "aria-label": "History" },
          h("header", null, h("h2", null, "History"), h("span", { class: "spacer" }), seg),
          this.chartNote, this.chartsEl),
        this.side));

    // Panels that depend on API parts this hub may not have: each hides on 404.
    this.commands = new CommandPanel(ctx, id, () => ctx.fleet.devices.get(id));
    this.state = new StatePanel(ctx, id);
    this.side.append(this.commands.el, this.state.el, this.alertsCard, this.detailsCard);
    this.commands.load();
    this.state.load();
    this.offs.push(() => this.commands.destroy(), () => this.state.destroy());

    const live = ctx.live;
    this.offs.push(
      live.on("reading", m => { if (m.device_id === id) this.reading(m); }),
      live.on("gap", () => this.loadHistory()),
      live.on("resumed", () => { this.commands.load(); this.state.load(); }),
      ctx.fleet.onChange(cid => { if (cid === id || cid === null) { this.dirtyHead = true; this.schedule(); } }),
      ctx.alerts.onChange(() => this.renderAlerts()),
    );
    const mq = matchMedia("(prefers-color-scheme: dark)");
    const onTheme = () => { for (const c of this.charts.values()) c.build(); };
    mq.addEventListener("change", onTheme);
    this.offs.push(() => mq.removeEventListener("change", onTheme));
    const ro = new ResizeObserver(() => { for (const c of this.charts.values()) c.resize(); });
    ro.observe(this.chartsEl);
    this.offs.push(() => ro.disconnect());
    const tick = setInterval(() => {
      for (const s of this.series.values()) s.trim(this.window()[0]);
      for (const f of this.charts.keys()) this.dirtyCharts.add(f);
      this.dirtyHead = true;
      this.schedule();
    }, 1000);
    this.offs.push(() => clearInterval(tick));

    this.fetchDevice();
    this.renderAlerts();
    if (!d) this.dirtyHead = true;
    this.schedule();
    loadChartLibrary().then(u => {
      this.uPlot = u;
      if (!u) {
        this.chartNote.hidden = false;
        this.chartNote.replaceChildren("Charts need the chart library, which ", h("code", null, "make build"),
          " adds to the binary (this one was built with a bare ", h("code", null, "go build"), "). Readings, commands and alerts work without it.");
      }
      this.loadHistory();
    });
    return () => {
      for (const off of this.offs) off();
      cancelAnimationFrame(this.frame);
      for (const c of this.charts.values()) c.destroy();
      this.histGen++;
    };
  }

  async fetchDevice() {
    try {
      const v = await this.ctx.api.get("/api/v1/devices/" + enc(this.id));
      this.ctx.fleet.merge(v);
    } catch (e) {
      if (e.status === 404) {
        this.notFound.hidden = false;
        this.notFound.textContent = `There is no device ${this.id}. It may have been deleted.`;
      }
    }
  }

  /** loadHistory reloads every chart from the history API for the chosen range. */
  async loadHistory() {
    const gen = ++this.histGen;
    const r = this.range;
    this.loadingHistory = true;
    const q = new URLSearchParams({ from: "-" + Math.round(r.ms / 1000) + "s", to: "now" });
    if (r.every) { q.set("every", Math.round(r.every / 1000) + "s"); q.set("agg", "mean"); }
    let res;
    try {
      res = await this.ctx.api.get(`/api/v1/devices/${enc(this.id)}/telemetry?${q}`);
    } catch (e) {
      if (gen !== this.histGen) return;
      this.loadingHistory = false;
      this.chartNote.hidden = false;
      this.chartNote.textContent = "Cannot load the history: " + e.message;
      this.applyRecent();
      return;
    }
    if (gen !== this.histGen) return;
    if (this.uPlot !== null) this.chartNote.hidden = true;
    this.series.clear();
    let truncated = false;
    for (const s of res.series || []) {
      if (!s.values.some(v => num(v) !== null)) continue;
      const ser = new Series(r.every);
      ser.load(s.times, s.values);
      this.series.set(s.field, ser);
      truncated ||= !!s.truncated;
    }
    this.loadingHistory = false;
    this.applyRecent();
    if (truncated) {
      this.chartNote.hidden = false;
      this.chartNote.textContent = "The history has more points than one answer holds; choose a longer range for a downsampled view.";
    }
    this.syncCharts();
  }

  /** applyRecent merges the recent live readings into freshly loaded series. */
  applyRecent() {
    const horizon = new Map(); // windowed series: only windows after the history's last
    for (const [f, s] of this.series) if (s.every && s.times.length) horizon.set(f, s.times[s.times.length - 1] + s.every);
    for (const m of this.recent) this.apply(m, horizon);
  }

  /** reading takes a live reading of this device. */
  reading(m) {
    const now = Date.now();
    this.recent.push(m);
    m.receivedAt = now;
    let k = 0;
    while (k < this.recent.length && (now - this.recent[k].receivedAt > RECENT_MS || this.recent.length - k > RECENT_MAX)) k++;
    if (k) this.recent.splice(0, k);
    if (m.conflated) this.reloadSoon(); // the hub merged readings this page never saw
    if (!this.loadingHistory) this.apply(m);
  }

  /** apply appends a reading to the charts. */
  apply(m, horizon) {
    const t = toMs(m.ts);
    const [from] = this.window();
    if (t < from) return;
    let added = false;
    for (const [f, v] of Object.entries(m.fields || {})) {
      if (num(v) === null || (horizon && t < (horizon.get(f) ?? 0))) continue;
      let s = this.series.get(f);
      if (!s) {
        s = new Series(this.range.every);
        this.series.set(f, s);
        added = true;
      }
      if (s.add(t, v)) this.dirtyCharts.add(f);
    }
    if (added) this.syncCharts();
    this.dirtyHead = true;
    this.schedule();
  }

  /** syncCharts makes one chart per series, in field order. */
  syncCharts() {
    if (!this.uPlot) {
      this.schedule();
      return;
    }
    const fields = [...this.series.keys()].sort(fieldOrder);
    for (const [f, c] of this.charts) {
      if (!this.series.has(f)) { c.destroy(); c.el.remove(); this.charts.delete(f); }
    }
    fields.forEach((f, i) => {
      let c = this.charts.get(f);
      if (!c) {
        c = new Chart(this.uPlot, f, this.series.get(f), i, () => this.window());
        this.charts.set(f, c);
      }
      c.series = this.series.get(f);
      this.chartsEl.append(c.el); // keeps the order
      if (!c.plot) c.build();
      this.dirtyCharts.add(f);
    });
    if (!fields.length) this.chartsEl.replaceChildren(h("div", { class: "empty" }, "No readings in this time range."));
    else this.chartsEl.querySelector(".empty")?.remove();
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
  }

  render() {
    for (const f of this.dirtyCharts) this.charts.get(f)?.draw();
    this.dirtyCharts.clear();
    if (this.dirtyHead) {
      this.dirtyHead = false;
      this.renderHead();
    }
  }

  renderHead() {
    const d = this.ctx.fleet.devices.get(this.id);
    if (!d) return;
    this.titleEl.replaceChildren(d.id, d.name ? h("span", { class: "dev-name" }, d.name) : "");
    this.typeEl.textContent = d.type || "–";
    this.statusEl.className = "status " + (d.online ? "on" : "off");
    this.statusEl.lastChild.textContent = d.online ? "Online" : "Offline";
    this.labelsEl.replaceChildren(...Object.entries(d.labels).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)));
    this.metaEl.replaceChildren(
      h("span", null, "Last seen ", h("b", { class: "num" }, d.online && Date.now() - d.lastSeen < 5000 ? "just now" : ago(d.lastSeen))),
      d.latestTs ? h("span", null, "Latest reading ", h("b", { class: "num" }, fmtTime(d.latestTs))) : "");
    const fields = Object.keys(d.latest).sort(fieldOrder);
    while (this.tilesEl.children.length > fields.length) this.tilesEl.lastChild.remove();
    fields.forEach((f, i) => {
      let t = this.tilesEl.children[i];
      if (!t) {
        t = h("div", { class: "card tile" }, h("div", { class: "label" }), h("div", { class: "value" }));
        this.tilesEl.append(t);
      }
      t.dataset.field = f;
      t.firstChild.textContent = f.replace(/_/g, " ");
      t.lastChild.replaceChildren(fmtValue(d.latest[f]), unit(f) ? h("small", null, unit(f)) : "");
    });
    const c = d.connection;
    this.detailsEl.replaceChildren(
      ...kv("Status", d.online ? "online" : "offline"),
      ...(c ? [...kv("Client ID", c.client_id), ...kv("Protocol", "MQTT " + c.protocol), ...kv("Remote", c.remote), ...kv("Connected", fmtTime(toMs(c.connected_at)))] : []),
      ...kv("Last seen", d.lastSeen ? fmtTime(d.lastSeen) : "never"));
    this.commands.deviceChanged();
  }

  renderAlerts() {
    const a = this.ctx.alerts;
    this.alertsCard.hidden = a.available === false;
    if (a.available === false) return;
    const mine = a.sorted().filter(x => x.device_id === this.id).slice(0, 8);
    this.alertsList.replaceChildren(...(mine.length
      ? mine.map(x => alertRow(this.ctx, x, { compact: true }))
      : [h("li", { class: "muted" }, "No alerts for this device.")]));
  }
}

function kv(k, v) {
  return [h("span", { class: "k" }, k), h("span", { class: "v" }, v ?? "–"), h("span")];
}

/** seriesOf returns the points of a chart of the open device view (for the browser tests). */
export function seriesOf(view, field) {
  const s = view?.series.get(field);
  return s ? { times: [...s.times], values: [...s.values] } : null;
}
