// Charts of a device's fields, drawn with uPlot. uPlot is not part of the
// repository: `make build` (scripts/web-assets.sh) copies it from npm into
// static/vendor/, which the binary embeds. A binary built with a bare
// `go build` has no vendor folder; the page then says so where the charts
// would be, and everything else works.

import { h, fmtValue, unit } from "./util.js";

let loading = null;

/** loadChartLibrary loads uPlot once; it resolves to null when it is not there. */
export function loadChartLibrary() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  loading ??= new Promise(resolve => {
    document.head.append(h("link", { rel: "stylesheet", href: "vendor/uPlot.min.css" }));
    const s = h("script", { src: "vendor/uPlot.iife.min.js" });
    s.onload = () => resolve(window.uPlot || null);
    s.onerror = () => resolve(null);
    document.head.append(s);
  });
  return loading;
}

const PALETTE = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#65a30d"];
const PALETTE_DARK = ["#5b9bff", "#f472b6", "#34d399", "#fbbf24", "#a78bfa", "#22d3ee", "#f87171", "#a3e635"];

function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
function dark() { return matchMedia("(prefers-color-scheme: dark)").matches; }

/**
 * Chart is one field's plot. draw() pushes the series' current points to
 * uPlot; the view calls it at most once per animation frame.
 */
export class Chart {
  constructor(uPlot, field, series, index, windowFn) {
    this.uPlot = uPlot;
    this.field = field;
    this.series = series;
    this.index = index;
    this.windowFn = windowFn; // () => [from ms, to ms]
    this.valueEl = h("span");
    this.plotEl = h("div", { class: "plot" });
    this.el = h("div", { class: "chart", dataset: { field } },
      h("div", { class: "title" }, field.replace(/_/g, " ") + (unit(field) ? ` (${unit(field)})` : ""), this.valueEl),
      this.plotEl);
    this.plot = null;
  }

  /** build creates the uPlot instance (again, after a theme change). */
  build() {
    if (this.plot) this.plot.destroy();
    const color = (dark() ? PALETTE_DARK : PALETTE)[this.index % PALETTE.length];
    const axis = { stroke: css("--muted"), grid: { stroke: css("--border"), width: 1 }, ticks: { stroke: css("--border"), width: 1 }, font: "11px system-ui, sans-serif" };
    const width = Math.max(200, this.plotEl.clientWidth || 400);
    const bool = this.series.bool;
    this.plot = new this.uPlot({
      width, height: 180,
      padding: [8, 8, 0, 0],
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      legend: { show: false },
      scales: {
        x: { time: true, range: () => { const [a, b] = this.windowFn(); return [a / 1000, b / 1000]; } },
        y: { range: bool ? [-0.1, 1.1] : (u, min, max) => pad(min, max) },
      },
      axes: [{ ...axis, space: 70 },
        bool ? { ...axis, size: 48, splits: () => [0, 1], values: (u, vals) => vals.map(v => (v ? "on" : "off")) }
          : { ...axis, size: 48, values: (u, vals) => vals.map(v => fmtValue(v)) }],
      series: [{}, { label: this.field, stroke: color, width: 1.75, fill: color + "1f", fillTo: u => u.scales.y.min ?? 0, points: { show: false }, spanGaps: false,
        paths: bool ? this.uPlot.paths.stepped({ align: 1 }) : undefined }],
      hooks: { setCursor: [u => this.cursor(u)] },
    }, [[], []], this.plotEl);
    this.draw();
  }

  cursor(u) {
    const i = u.cursor.idx;
    if (i === null || i === undefined) { this.showLast(); return; }
    const t = u.data[0][i], v = u.data[1][i];
    this.valueEl.textContent = `${this.fmt(v)} at ${new Date(t * 1000).toLocaleTimeString()}`;
  }

  showLast() {
    const v = this.series.last();
    this.valueEl.textContent = v === undefined ? "no data" : this.fmt(v);
  }

  fmt(v) { return this.series.bool ? (v ? "on" : "off") : fmtValue(v); }

  draw() {
    if (!this.plot) return;
    // Where no data came for much longer than usual (the device or the hub
    // was down), break the line instead of drawing across the hole.
    const ts = this.series.times, vs = this.series.values;
    const gap = Math.max(10000, 5 * typicalStep(ts), this.series.every * 2);
    const xs = [], ys = [];
    for (let i = 0; i < ts.length; i++) {
      if (i > 0 && ts[i] - ts[i - 1] > gap) {
        xs.push((ts[i - 1] + 1) / 1000);
        ys.push(null);
      }
      xs.push(ts[i] / 1000);
      ys.push(vs[i]);
    }
    this.plot.setData([xs, ys]);
    if (this.plot.cursor.idx === null || this.plot.cursor.idx === undefined) this.showLast();
  }

  resize() {
    if (this.plot && this.plotEl.clientWidth) this.plot.setSize({ width: this.plotEl.clientWidth, height: 180 });
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

/** typicalStep is the median time between the last 100 points. */
function typicalStep(ts) {
  const d = [];
  for (let i = Math.max(1, ts.length - 100); i < ts.length; i++) d.push(ts[i] - ts[i - 1]);
  if (!d.length) return 0;
  d.sort((a, b) => a - b);
  return d[d.length >> 1];
}

/** pad gives a y range with a little room, and a sensible one for a flat line. */
function pad(min, max) {
  if (min === null || max === null) return [0, 1];
  if (min === max) {
    const d = Math.abs(min) * 0.05 || 1;
    return [min - d, max + d];
  }
  const d = (max - min) * 0.08;
  return [min - d, max + d];
}
