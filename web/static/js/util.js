// Small DOM and formatting helpers shared by the views.

/**
 * h builds an element: h("div", {class: "x", onclick: f}, child, "text").
 * Strings become text nodes, so nothing is ever parsed as HTML.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    // Through the CSSOM: the hub's Content-Security-Policy refuses style
    // attributes (style-src 'self'), not style properties set by script.
    else if (k === "style") el.style.cssText = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// Units and display order of the fields the simulated devices publish;
// unknown fields follow alphabetically.
const UNITS = {
  temperature: "°C", setpoint: "°C", humidity: "%", rssi: "dBm", heart_rate: "bpm",
  spo2: "%", battery: "%", steps: "", activity: "",
};
const ORDER = ["temperature", "setpoint", "humidity", "heating", "mode", "heart_rate", "spo2", "battery", "steps", "activity", "rssi"];

const SHORT = { humidity: "% RH", setpoint: "°C set", heating: "heating", mode: "mode", heart_rate: "bpm", spo2: "% SpO₂", battery: "% batt", steps: "steps", activity: "activity" };

/** shortLabel is what follows a value in a compact list: its unit, or its name. */
export function shortLabel(field) { return SHORT[field] ?? (UNITS[field] || field.replace(/_/g, " ")); }

/** unit returns the display unit of a field ("" when unknown). */
export function unit(field) { return UNITS[field] ?? ""; }

/** fieldOrder sorts field names: known fields first, then alphabetically. */
export function fieldOrder(a, b) {
  const ia = ORDER.indexOf(a), ib = ORDER.indexOf(b);
  if (ia >= 0 && ib >= 0) return ia - ib;
  if (ia >= 0) return -1;
  if (ib >= 0) return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** fmtValue formats a reading value for display. */
export function fmtValue(v) {
  if (typeof v === "number") {
    if (Number.isInteger(v)) return v.toLocaleString();
    const a = Math.abs(v);
    return v.toLocaleString(undefined, { maximumFractionDigits: a >= 100 ? 0 : a >= 10 ? 1 : 2 });
  }
  if (typeof v === "boolean") return v ? "on" : "off";
  if (v === null || v === undefined) return "–";
  return String(v);
}

/** ago formats the time since ms as "4s", "3m", "2h", "5d" ("never" without a time). */
export function ago(ms, now = Date.now()) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h ago";
  return Math.floor(s / 86400) + "d ago";
}

/** fmtTime formats ms as a local date and time. */
export function fmtTime(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

/** toMs parses an RFC 3339 string or Unix milliseconds into milliseconds (0 when absent). */
export function toMs(t) {
  if (t === null || t === undefined || t === "") return 0;
  if (typeof t === "number") return t;
  const v = Date.parse(t);
  return Number.isNaN(v) ? 0 : v;
}

/** toast shows a short message in the corner for a few seconds. */
export function toast(msg, kind = "") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: "toast " + kind, role: kind === "error" ? "alert" : "status" }, msg);
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 7000 : 3500);
}

/** debounce returns f delayed until calls pause for ms. */
export function debounce(f, ms) {
  let t = 0;
  return (...args) => { clearTimeout(t); t = setTimeout(() => f(...args), ms); };
}
