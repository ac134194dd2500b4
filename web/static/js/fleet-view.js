// The fleet view: every device in a virtualised table. Only the rows in view
// (plus a few above and below) exist in the DOM, and all DOM writes of a
// frame happen in one requestAnimationFrame callback, so thousands of
// devices updating every second cost only the handful of rows on screen.

import { h, fmtValue, shortLabel, fieldOrder, ago } from "./util.js";

const OVERSCAN = 6;
const KEY_FIELDS = {
  thermostat: ["temperature", "humidity", "setpoint", "heating"],
  wearable: ["heart_rate", "spo2", "battery", "steps"],
};

// Kept across visits of the view, so going to a device and back keeps the filter.
const state = { q: "", type: "", status: "all", labels: "", sort: "id", dir: 1, scroll: 0 };

/** keyFields picks up to four fields to show in the table for a device. */
function keyFields(d) {
  const preferred = (KEY_FIELDS[d.type] || []).filter(f => f in d.latest);
  if (preferred.length) return preferred;
  return Object.keys(d.latest).filter(f => f !== "rssi").sort(fieldOrder).slice(0, 4);
}

/** parseLabels reads "room=kitchen, floor" into [[key, value|null], ...]. */
function parseLabels(s) {
  return s.split(",").map(p => p.trim()).filter(Boolean).map(p => {
    const i = p.indexOf("=");
    return i < 0 ? [p, null] : [p.slice(0, i).trim(), p.slice(i + 1).trim()];
  });
}

function matches(d, q, labelSel) {
  if (state.type && d.type !== state.type) return false;
  if (state.status === "online" && !d.online) return false;
  if (state.status === "offline" && d.online) return false;
  for (const [k, v] of labelSel) {
    if (!(k in d.labels) || (v !== null && d.labels[k] !== v)) return false;
  }
  if (q) {
    if (d.id.toLowerCase().includes(q) || d.name.toLowerCase().includes(q) || d.type.toLowerCase().includes(q)) return true;
    return Object.entries(d.labels).some(([k, v]) => (k + "=" + v).toLowerCase().includes(q));
  }
  return true;
}

const SORTS = {
  id: (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  type: (a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : SORTS.id(a, b)),
  status: (a, b) => (a.online === b.online ? SORTS.id(a, b) : a.online ? -1 : 1),
};

/** FleetView renders the fleet; mount returns a function that unmounts it. */
export class FleetView {
  constructor(ctx) {
    this.ctx = ctx;
    this.fleet = ctx.fleet;
    this.list = []; // filtered and sorted device records
    this.rows = new Map(); // list index -> row element
    this.free = [];
    this.dirty = new Set();
    this.structural = true;
    this.all = false; // redraw every row in view
    this.frame = 0;
    this.rowH = 52;
  }

  mount(root) {
    const ctx = this.ctx;
    this.stat = {};
    const stat = (key, label, cls = "") => h("div", { class: "card stat " + cls }, h("div", { class: "label" }, label), this.stat[key] = h("div", { class: "value", dataset: { stat: key } }, "–"));
    this.typeSel = h("select", { class: "input", "aria-label": "Device type", onchange: e => { state.type = e.target.value; this.restructure(); } }, h("option", { value: "" }, "All types"));
    const seg = h("div", { class: "seg", role: "group", "aria-label": "Status" },
      ...[["all", "All"], ["online", "Online"], ["offline", "Offline"]].map(([v, t]) =>
        h("button", { type: "button", "aria-pressed": String(state.status === v), dataset: { status: v }, onclick: e => {
          state.status = v;
          for (const b of seg.children) b.setAttribute("aria-pressed", String(b === e.currentTarget));
          this.restructure();
        } }, t)));
    this.countEl = h("span", { class: "count" });
    this.spacer = h("div", { class: "spacerbox" });
    this.emptyEl = h("div", { class: "empty", hidden: true });
    this.viewport = h("div", { class: "viewport", role: "rowgroup", onscroll: () => { state.scroll = this.viewport.scrollTop; this.schedule(); } }, this.spacer, this.emptyEl);
    this.viewport.addEventListener("click", e => {
      const row = e.target.closest(".row");
      if (row && !e.target.closest("a")) location.hash = "#/devices/" + encodeURIComponent(row.dataset.device);
    });
    const sortBtn = (key, label) => h("button", { type: "button", dataset: { sort: key }, onclick: () => {
      state.dir = state.sort === key ? -state.dir : 1;
      state.sort = key;
      this.header.querySelectorAll("button[data-sort]").forEach(b => this.sortMark(b));
      this.restructure();
    } }, label);
    this.header = h("div", { class: "grid-row thead", role: "row" },
      h("div", { class: "c-status" }, sortBtn("status", "Status")),
      h("div", { class: "c-id" }, sortBtn("id", "Device")),
      h("div", { class: "c-type" }, sortBtn("type", "Type")),
      h("div", { class: "c-labels" }, "Labels"),
      h("div", { class: "c-readings" }, "Latest readings"),
      h("div", { class: "c-seen", style: "text-align:right" }, "Last seen"));
    this.header.querySelectorAll("button[data-sort]").forEach(b => this.sortMark(b));

    const search = h("input", { class: "input search grow", type: "search", placeholder: "Search devices, names, labels", value: state.q, "aria-label": "Search",
      oninput: e => { state.q = e.target.value; this.restructure(); } });
    const labels = h("input", { class: "input", type: "text", placeholder: "Labels: room=kitchen", value: state.labels, "aria-label": "Label filter", style: "width:12rem",
      oninput: e => { state.labels = e.target.value; this.restructure(); } });
    this.errorEl = h("div", { class: "notice", hidden: true });
    root.replaceChildren(
      h("div", { class: "stats" },
        stat("devices", "Devices"), stat("online", "Online", "ok"), stat("offline", "Offline"),
        stat("alerts", "Firing alerts", "crit"), stat("rate", "Messages / s")),
      h("section", { class: "card fleet", "aria-label": "Devices" },
        h("div", { class: "toolbar" }, search, this.typeSel, seg, labels, this.countEl),
        this.errorEl, this.header, this.viewport));
    this.typeSel.value = state.type;

    this.measure();
    const offFleet = this.fleet.onChange((id, structural) => {
      if (structural) this.structural = true;
      if (id) this.dirty.add(id);
      this.schedule();
    });
    const offAlerts = ctx.alerts.onChange(() => this.schedule());
    const onResize = () => { this.measure(); this.all = true; this.schedule(); };
    window.addEventListener("resize", onResize);
    const tick = setInterval(() => { this.all = true; this.schedule(); }, 1000); // "last seen" ages
    this.schedule();
    requestAnimationFrame(() => { this.viewport.scrollTop = state.scroll; });
    return () => {
      offFleet(); offAlerts();
      window.removeEventListener("resize", onResize);
      clearInterval(tick);
      cancelAnimationFrame(this.frame);
    };
  }

  sortMark(b) {
    if (b.dataset.sort === state.sort) b.dataset.dir = state.dir > 0 ? "asc" : "desc";
    else delete b.dataset.dir;
  }

  measure() {
    const v = parseFloat(getComputedStyle(document.documentElement).getPropertyValue("--row-h"));
    if (v > 0 && v !== this.rowH) {
      this.rowH = v;
      this.structural = true;
    }
  }

  restructure() {
    this.structural = true;
    this.viewport.scrollTop = 0;
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
  }

  /** render applies everything that changed since the last frame. */
  render() {
    const fleet = this.fleet;
    if (this.structural) {
      this.structural = false;
      this.all = true;
      const q = state.q.trim().toLowerCase();
      const sel = parseLabels(state.labels);
      const list = [];
      const types = new Set();
      let online = 0;
      for (const d of fleet.devices.values()) {
        if (d.type) types.add(d.type);
        if (d.online) online++;
        if (matches(d, q, sel)) list.push(d);
      }
      const cmp = SORTS[state.sort] || SORTS.id;
      list.sort((a, b) => state.dir * cmp(a, b));
      this.list = list;
      this.spacer.style.height = list.length * this.rowH + "px";
      this.stat.devices.textContent = fleet.devices.size.toLocaleString();
      this.stat.online.textContent = online.toLocaleString();
      this.stat.offline.textContent = (fleet.devices.size - online).toLocaleString();
      this.countEl.textContent = list.length === fleet.devices.size ? `${list.length.toLocaleString()} devices` : `${list.length.toLocaleString()} of ${fleet.devices.size.toLocaleString()}`;
      const known = [...this.typeSel.options].map(o => o.value);
      for (const t of [...types].sort()) if (!known.includes(t)) this.typeSel.append(h("option", { value: t }, t));
      this.emptyEl.hidden = list.length > 0 || !fleet.loaded;
      this.emptyEl.replaceChildren(fleet.devices.size === 0
        ? h("span", null, "No devices yet. ", h("code", null, "make run"), " starts a simulated fleet; devices are registered with ", h("code", null, "POST /api/v1/devices"), ".")
        : "No device matches the filter.");
      this.errorEl.hidden = !fleet.error;
      this.errorEl.textContent = fleet.error ? "Cannot load the device list: " + fleet.error.message : "";
    }
    const alerts = this.ctx.alerts;
    const firing = alerts.firingCount();
    this.stat.alerts.textContent = alerts.available === false ? "–" : firing.toLocaleString();
    this.stat.alerts.classList.toggle("zero", firing === 0);
    this.stat.rate.textContent = this.ctx.rate().toLocaleString();

    // The window of rows to show.
    const top = this.viewport.scrollTop;
    const height = this.viewport.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / this.rowH) - OVERSCAN);
    const last = Math.min(this.list.length - 1, Math.ceil((top + height) / this.rowH) + OVERSCAN);
    for (const [i, el] of this.rows) {
      if (i < first || i > last) {
        this.rows.delete(i);
        el.hidden = true;
        this.free.push(el);
      }
    }
    const now = Date.now();
    for (let i = first; i <= last; i++) {
      const d = this.list[i];
      let el = this.rows.get(i);
      if (!el) {
        el = this.free.pop() || this.newRow();
        el.hidden = false;
        el.style.transform = `translateY(${i * this.rowH}px)`;
        this.rows.set(i, el);
        this.fill(el, d, now, false);
      } else if (this.all || this.dirty.has(d.id) || el.dataset.device !== d.id) {
        el.style.transform = `translateY(${i * this.rowH}px)`;
        this.fill(el, d, now, this.dirty.has(d.id) && el.dataset.device === d.id);
      }
    }
    this.dirty.clear();
    this.all = false;
  }

  newRow() {
    const el = h("div", { class: "row grid-row", role: "row" },
      h("div", { class: "c-status" }, h("span", { class: "status" }, h("i"), h("span"))),
      h("div", { class: "c-id" }, h("a", { class: "dev-id" }), h("span", { class: "dev-name" })),
      h("div", { class: "c-type" }, h("span", { class: "type" })),
      h("div", { class: "c-labels" }),
      h("div", { class: "c-readings" }, h("div", { class: "readings" })),
      h("div", { class: "c-seen seen" }));
    this.viewport.append(el);
    return el;
  }

  /** fill writes a device into a row element; flash marks fresh readings. */
  fill(el, d, now, flash) {
    const [cStatus, cId, cType, cLabels, cReadings, cSeen] = el.children;
    if (el.dataset.device !== d.id) {
      el.dataset.device = d.id;
      const a = cId.firstChild;
      a.textContent = d.id;
      a.href = "#/devices/" + encodeURIComponent(d.id);
      cId.lastChild.textContent = d.name;
      el.dataset.sig = "";
    }
    cType.firstChild.textContent = d.type || "–";
    const st = cStatus.firstChild;
    st.className = "status " + (d.online ? "on" : "off");
    st.lastChild.textContent = d.online ? "Online" : "Offline";
    const labelSig = JSON.stringify(d.labels);
    if (cLabels.dataset.sig !== labelSig) {
      cLabels.dataset.sig = labelSig;
      cLabels.replaceChildren(...Object.entries(d.labels).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)));
    }
    const fields = keyFields(d);
    const box = cReadings.firstChild;
    while (box.children.length > fields.length) box.lastChild.remove();
    fields.forEach((f, i) => {
      let r = box.children[i];
      if (!r) {
        r = h("span", { class: "reading" }, h("b"), h("span"));
        box.append(r);
      }
      r.dataset.field = f;
      r.title = f;
      const v = fmtValue(d.latest[f]);
      if (r.firstChild.textContent !== v) r.firstChild.textContent = v;
      const label = shortLabel(f);
      if (r.lastChild.textContent !== label) r.lastChild.textContent = label;
    });
    cSeen.textContent = d.online && now - d.lastSeen < 5000 ? "just now" : ago(d.lastSeen, now);
    if (flash) { // alternate two identical animations to restart it without a reflow
      const a = el.classList.contains("fa");
      el.classList.toggle("fa", !a);
      el.classList.toggle("fb", a);
    }
  }
}
